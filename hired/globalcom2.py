"""GlobalCom2 (Liu et al., 2025), paper fidelity with exact budgets: the thumbnail guides the crops.

Scores are the CLS logits (before the softmax) of the last vision layer, averaged over heads. The
thumbnail (base partition) keeps round(b * 576) tokens by its own scores; each crop's share of the
rest follows the thumbnail: its region's summed score, softened (softmax with a temperature), gives
the crop a ratio R (1 + sigma_c - 1/n); and inside a crop, tokens are ranked by their own score and
the thumbnail's score map upsampled onto the crop, each L2-normalised over the crop's candidates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hired.assemble import stock_order
from hired.capture import VisionBatch
from hired.hired import proportional, region_scores
from hired.layout import ImageLayout, top_per_row, valid_masks
from hired.spec import Derived, Method, Param, Selection, budget_tokens, vision_layer


def crop_weights(
    thumbnail: torch.Tensor, layout: ImageLayout, caps: list[int], temperature: float
) -> list[float]:
    """Each crop's share of the sub-image budget: valid tokens x (1 + sigma_c - 1/n), where sigma is the
    softmax over crops of the thumbnail's summed score in the crop's region, divided by the temperature."""
    summed = region_scores(thumbnail, layout.grid, layout.side).float()
    sigma = ((summed - summed.max()) / temperature).softmax(dim=0)
    ratio = 1 + sigma - 1 / len(caps)
    return [float(c * r) for c, r in zip(caps, ratio.tolist(), strict=True)]


def guided_scores(
    own: torch.Tensor, thumbnail: torch.Tensor, layout: ImageLayout, alpha: float
) -> torch.Tensor:
    """(P - 1, n) crop token scores: alpha x the thumbnail's map upsampled onto the un-padded canvas +
    (1 - alpha) x the crop's own scores, each L2-normalised over the crop's candidates; -inf off them."""
    n, side = layout.side**2, layout.side
    rows, cols = layout.canvas
    upsampled = F.interpolate(thumbnail.float().view(1, 1, side, side), size=(rows, cols), mode="bilinear")
    guide = torch.full((layout.partitions * n,), float("nan"), device=own.device)
    guide[layout.candidates[n:].to(own.device)] = upsampled.flatten()  # canvas raster = stock order
    guide = guide[n:].view(-1, n)
    valid = ~guide.isnan()
    local = own.float().masked_fill(~valid, 0)
    guide = guide.nan_to_num(0.0)
    combined = alpha * F.normalize(guide, dim=1) + (1 - alpha) * F.normalize(local, dim=1)
    return combined.masked_fill(~valid, float("-inf"))


def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    scores = batch.cls_attention(params["layer"], softmax=False).mean(dim=1)  # (S, n) head-mean logits
    n = scores.shape[1]
    valid = valid_masks(batch.layouts, n, scores.device)
    out = []
    for layout, own, ok, features in zip(
        batch.layouts, batch.split(scores), batch.split(valid), batch.split(batch.features), strict=True
    ):
        n_budget = budget_tokens(budget, layout.n_full)
        thumbnail = own[0]
        if layout.partitions == 1:
            counts, ranked = [n_budget], thumbnail[None]
        else:
            caps = ok[1:].sum(dim=1).tolist()
            n0 = min(budget_tokens(budget, n), n_budget)
            n_sub = min(n_budget - n0, sum(caps))  # what the crops cannot hold goes to the thumbnail
            weights = crop_weights(thumbnail, layout, caps, params["temperature"])
            counts = [n_budget - n_sub, *proportional(n_sub, weights, caps)]
            ranked = torch.cat([thumbnail[None], guided_scores(own[1:], thumbnail, layout, params["alpha"])])
        chosen = top_per_row(ranked, ok & ranked.isfinite(), torch.tensor(counts, device=ranked.device))
        kept = [row.nonzero().squeeze(1) + p * n for p, row in enumerate(chosen)]
        flat = features.flatten(0, 1)
        tokens = [flat[k] for k in kept]
        extras = [flat[:0]] * layout.partitions
        out.append(stock_order(layout, kept, tokens, extras))
    return out


METHOD = Method(
    name="globalcom2",
    summary="the thumbnail sets each crop's share (softmax of its region's score) and guides its ranking",
    stage="vision",
    reference="Liu et al., GlobalCom2 (arXiv 2501.05179); code: github.com/xuyang-liu16/GlobalCom2",
    select=select,
    needs_anyres=True,
    params=(
        Param(
            "alpha", float, 0.5, "weight of the thumbnail's guidance in a crop's token scores", low=0, high=1
        ),
        Param("temperature", float, 10.0, "softmax temperature of the crops' budget shares", low=0.001),
        vision_layer(
            "layer",
            Derived("the last vision layer (23 on CLIP ViT-L)", lambda shape, _: shape.depth - 1),
            "vision layer whose CLS logits score the tokens",
        ),
    ),
    layers=lambda params: {params["layer"]},
)
