"""VisionZip (Yang et al., CVPR 2025), paper fidelity with exact budgets, batched over every partition.

Per partition: dominant tokens are the top tokens by the CLS attention of the projector's input
layer (summed over heads); the remaining candidates are merged into contextual tokens: evenly
spaced targets among them, every other remaining token joins the target whose key (averaged over
heads) is most similar, and each contextual token is the mean of its group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hired.assemble import stock_order
from hired.capture import VisionBatch
from hired.layout import top_per_row, valid_masks
from hired.spec import Derived, Method, Param, Selection, apportion, vision_layer

# the released code's LLaVA-Next setting: 54 dominant and 10 contextual tokens of every 64
CONTEXTUAL_SHARE = 10 / 64


def contextual_counts(budgets: torch.Tensor, share: float) -> torch.Tensor:
    """Contextual tokens per partition: round(share * budget), halves up; the rest are dominant."""
    return torch.floor(budgets * share + 0.5).long()


def contextual_targets(rest: torch.Tensor, contextual: torch.Tensor) -> torch.Tensor:
    """(S, n) long: for each remaining token that is a target, its target number (0..C-1), else -1.

    Targets are every step-th remaining token, step = max(1, remaining // C), the first C of them.
    """
    position = rest.long().cumsum(dim=1) - 1
    step = (rest.sum(dim=1) // contextual.clamp(min=1)).clamp(min=1)[:, None]
    number = position // step
    is_target = rest & (position % step == 0) & (number < contextual[:, None])
    return torch.where(is_target, number, torch.full_like(number, -1))


def merge_contextual(
    features: torch.Tensor, keys: torch.Tensor, rest: torch.Tensor, target: torch.Tensor, width: int
) -> torch.Tensor:
    """(S, width, C) contextual tokens: each target's group mean (the target and the remaining tokens
    whose normalised key is most similar to its key; ties: the lower target number)."""
    s = features.shape[0]
    device = features.device
    keys = F.normalize(keys.float(), dim=-1)
    slot = torch.arange(width, device=device)
    # (S, width) token index of each target (0 where the slot is unused)
    where = torch.zeros(s, width, dtype=torch.long, device=device)
    live = target >= 0
    where[live.nonzero()[:, 0], target[live]] = live.nonzero()[:, 1]
    used = slot[None, :] < (target.max(dim=1).values + 1)[:, None]
    similarity = keys @ keys.gather(1, where[..., None].expand(-1, -1, keys.shape[-1])).transpose(1, 2)
    similarity = similarity.masked_fill(~used[:, None, :], float("-inf"))  # (S, n, width)
    choice = similarity.argmax(dim=2)
    group = torch.where(live, target, torch.where(rest, choice, torch.full_like(choice, -1)))
    weights = (group[:, None, :] == slot[None, :, None]).float()  # (S, width, n)
    weights = weights / weights.sum(dim=2, keepdim=True).clamp(min=1)
    return (weights @ features.float()).to(features.dtype)


def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    """Per image: dominant tokens in stock order, then each partition's contextual tokens."""
    layer = params["layer"]
    scores = batch.cls_attention(layer).sum(dim=1)  # (S, n), heads summed
    n = scores.shape[1]
    valid = valid_masks(batch.layouts, n, scores.device)
    budgets = torch.tensor(
        [c for v in batch.split(valid) for c in apportion(budget, v.sum(1).tolist())], device=scores.device
    )
    contextual = contextual_counts(budgets, params["contextual_share"])
    dominant = top_per_row(scores, valid, budgets - contextual)
    rest = valid & ~dominant
    target = contextual_targets(rest, contextual)
    width = max(int(contextual.max()), 1)
    merged = merge_contextual(batch.features, batch.head_mean_keys(layer), rest, target, width)
    out, start = [], 0
    for layout in batch.layouts:
        rows = range(start, start + layout.partitions)
        start += layout.partitions
        kept = [dominant[r].nonzero()[:, 0] for r in rows]
        tokens = [batch.features[r, k] for r, k in zip(rows, kept, strict=True)]
        extras = [merged[r, : int(contextual[r])] for r in rows]
        anchors = torch.cat([(target[r] >= 0).nonzero()[:, 0] + p * n for p, r in enumerate(rows)])
        flat = [k + p * n for p, k in enumerate(kept)]
        out.append(stock_order(layout, flat, tokens, extras, anchors))
    return out


METHOD = Method(
    name="visionzip",
    summary="dominant tokens by CLS attention, the rest merged into evenly spaced contextual tokens by key",
    stage="vision",
    reference="Yang et al., VisionZip, CVPR 2025 (arXiv 2412.04467); "
    "code: github.com/dvlab-research/VisionZip",
    select=select,
    params=(
        Param(
            "contextual_share",
            float,
            CONTEXTUAL_SHARE,
            "share of each partition's budget given to contextual (merged) tokens; 10/64 as the released "
            "LLaVA-Next setting (54 dominant + 10 contextual)",
            low=0,
            high=1,
        ),
        vision_layer(
            "layer",
            Derived("the projector's input layer (22 on CLIP ViT-L)", lambda shape, _: shape.feature_layer),
            "vision layer whose CLS attention picks the dominant tokens and whose keys group the rest",
        ),
    ),
    layers=lambda params: {params["layer"]},
)
