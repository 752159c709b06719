"""GlobalCom2 (Liu et al., 2025), paper fidelity with exact budgets: the thumbnail guides the crops.

Scores are the CLS logits (before the softmax) of the last vision layer, averaged over heads. The
thumbnail (base partition) keeps round(b * 576) tokens by its own scores; each crop's share of the
rest follows the thumbnail: its region's summed score, softened (softmax with a temperature), gives
the crop a ratio R (1 + sigma_c - 1/n); and inside a crop, tokens are ranked by their own score and
the thumbnail's score map upsampled onto the crop, each L2-normalised over the crop's candidates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hired.assemble import stock_order
from hired.capture import VisionBatch
from hired.layout import ImageLayout, released_candidates, top_per_row, valid_masks
from hired.methods.hired import proportional, region_scores
from hired.spec import Derived, Method, Param, Selection, budget_tokens, exact_count, vision_layer


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
    if fidelity == "reference":
        return select_reference(batch, budget, params)
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


def select_reference(batch: VisionBatch, budget: float, params: dict) -> list[Selection]:
    """Per image, what the release (xuyang-liu16/GlobalCom2 96b2d00, llava/model/llava_arch.py) gives
    the LLM for that image alone: the thumbnail's int(576 b) tokens in descending score order, each
    crop's int(N_c x scale_c) tokens scattered into the slots their compacted index names (so padded
    crops land in the wrong places), a newline after every row of the padded canvas; projected
    features (the release compresses after the projector), scores in the model's dtype."""
    if params["alpha"] != 0.5:
        raise ValueError("globalcom2 reference fidelity: the release adds the two scores with equal weight")
    logits = batch.released_cls_logits(params["layer"])
    projected = batch.project(batch.features)  # every token, as the release projects them
    return [
        reference_image(layout, scores, features, batch.newline, budget, params["temperature"])
        for layout, scores, features in zip(
            batch.layouts, batch.split(logits), batch.split(projected), strict=True
        )
    ]


def released_scales(thumbnail: torch.Tensor, grid: tuple[int, int], budget: float, temperature: float):
    """The release's per-crop ratios: the thumbnail's scores summed per crop one token at a time in
    float64 (its `generate_scale_for_crop_features`), a softmax, budget x (1 + sigma - mean), at most 1."""
    nph, npw = grid
    side = int(thumbnail.shape[0] ** 0.5)
    band_h, band_w = max(side // nph, 1), max(side // npw, 1)
    summed = np.zeros(nph * npw)
    for index, score in enumerate(thumbnail.tolist()):
        row, col = divmod(index, side)
        summed[min(row // band_h, nph - 1) * npw + min(col // band_w, npw - 1)] += score
    exp = np.exp((summed - np.max(summed)) / temperature)
    sigma = exp / (np.sum(exp) + 1e-8)
    return np.clip(budget * (1 + sigma - np.mean(sigma)), None, 1.0).tolist()


def reference_image(layout: ImageLayout, scores, features, newline, budget: float, temperature: float):
    """One image's Selection in reference fidelity (see select_reference); tokens are LLM inputs."""
    side, (nph, npw) = layout.side, layout.grid
    n = side * side
    device = features.device
    thumbnail = scores[0]
    top = torch.argsort(thumbnail, descending=True)[: int(n * budget)]
    scales = released_scales(thumbnail, layout.grid, budget, temperature)
    rows, cols = nph * side, npw * side

    def canvas(x: torch.Tensor) -> torch.Tensor:  # (crops, n, ...) in crop raster -> (rows, cols, ...)
        return x.view(nph, npw, side, side, *x.shape[2:]).transpose(1, 2).reshape(rows, cols, *x.shape[2:])

    candidate = torch.zeros(layout.partitions * n, dtype=torch.bool, device=device)
    candidate[released_candidates(layout).to(device)] = True  # the release's int() un-padding
    crops = candidate[n:].view(nph * npw, n)
    unpadded = canvas(crops)
    band = (int(unpadded.any(dim=1).sum()), int(unpadded.any(dim=0).sum()))  # one contiguous band
    guide = F.interpolate(thumbnail.view(1, 1, side, side), size=band, mode="bilinear", align_corners=False)
    guide = guide[0, 0]
    slots = torch.zeros(nph * npw, n, features.shape[-1], dtype=torch.float32, device=device)
    chosen = torch.zeros(nph * npw, n, dtype=torch.bool, device=device)
    origin = torch.full((nph * npw, n), -1, dtype=torch.long, device=device)
    top_row = 0
    for i in range(nph):
        left = 0
        for j in range(npw):
            c = i * npw + j
            where = crops[c].view(side, side).nonzero()
            h, w = (where.max(dim=0).values - where.min(dim=0).values + 1).tolist() if len(where) else (0, 0)
            if j == 0:  # the release steps down by the height of a row's first crop
                row_height = h
            global_scores = guide[top_row : top_row + h, left : left + w].flatten()
            left += w
            positions = crops[c].nonzero()[:, 0]
            own = scores[1 + c][positions]
            combined = F.normalize(own[None], dim=-1)[0] + F.normalize(global_scores[None], dim=-1)[0]
            picked = torch.topk(combined, int(len(positions) * scales[c])).indices
            # the release writes a kept token into the slot of its index among the crop's valid tokens
            slots[c, picked] = features[1 + c][positions[picked]].float()
            chosen[c, picked] = True
            origin[c, picked] = (1 + c) * n + positions[picked]
        top_row += row_height
    chosen = canvas(chosen)
    with_newlines = torch.cat([canvas(slots), newline.float().expand(rows, 1, -1)], dim=1)
    keep = torch.cat([chosen, torch.ones(rows, 1, dtype=torch.bool, device=device)], dim=1)
    tokens = torch.cat([features[0][top], with_newlines[keep].to(features.dtype)])
    kept = torch.cat([top, canvas(origin)[chosen]])
    return Selection(tokens, kept, projected=tokens)  # newlines have no projector input: LLM inputs


def token_count(layout: ImageLayout, budget: float | None, fidelity: str, params: dict) -> int | None:
    """Paper: exactly round(b * N_full); reference: the scores decide each crop's share."""
    return None if fidelity == "reference" else exact_count(layout, budget, fidelity, params)


METHOD = Method(
    name="globalcom2",
    summary="the thumbnail sets each crop's share (softmax of its region's score) and guides its ranking",
    stage="vision",
    reference="Liu et al., GlobalCom2 (arXiv 2501.05179); code: github.com/xuyang-liu16/GlobalCom2",
    select=select,
    budgets={"paper": ("exact",), "reference": ("released",)},
    tokens=token_count,
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
