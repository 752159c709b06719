"""PruMerge and PruMerge+ (Shang et al.), per partition, batched over every partition of a batch.

Scores: the CLS row of the last vision layer's attention at full width (one head). Kept tokens
absorb their 32 most key-similar tokens weighted by CLS attention, and one summary token sums the
dropped ones. Paper fidelity: exact budgets over valid (un-padded) tokens, raster order. Reference
fidelity (adaptive only): the released code's behaviour, one partition at a time in the model's
dtype, padding included, its own order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hired.assemble import stock_order
from hired.capture import VisionBatch
from hired.layout import descending_rank, valid_masks
from hired.spec import Derived, Method, Param, Selection, apportion, vision_layer

NEIGHBOURS = 32
REFERENCE_LAST_INDEX = 575  # the released PruMerge+ samples arange(0, 575, stride): token 575 never


def outlier_counts(attention: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(S,) number of valid values strictly above Q3 + 1.5 * IQR in each row (numpy's linear quartiles)."""
    values = attention.float().masked_fill(~valid, float("nan"))
    quartiles = torch.nanquantile(values, torch.tensor([0.25, 0.75], device=values.device), dim=1)
    bound = quartiles[1] + 1.5 * (quartiles[1] - quartiles[0])
    return ((values > bound[:, None]) & valid).sum(dim=1)


def plus_stride(outliers: int, total: int) -> int:
    """The released PruMerge+ stride int(int(1 / r) / 3), r = outliers / total; refuses where it fails."""
    if outliers == 0:
        raise ValueError(
            "PruMerge+ adaptive: no outlier tokens (r = 0); the released code divides by zero here"
        )
    ratio = outliers / total
    stride = int(int(1 / ratio) / 3)  # 1 / r, not total / outliers: the same float steps as the released code
    if stride == 0:
        raise ValueError(f"PruMerge+ adaptive: r = {ratio:.3f} gives stride 0; the released code fails here")
    return stride


def evenly_spaced(available: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(S, n) mask of count[s] tokens spread evenly over each row's available tokens (Bresenham-style)."""
    rank = available.long().cumsum(dim=1) - 1
    total = available.sum(dim=1, keepdim=True).clamp(min=1)
    m = count[:, None]
    return available & ((rank + 1) * m // total > rank * m // total)


def merge(
    features: torch.Tensor,
    keys: torch.Tensor,
    attention: torch.Tensor,
    kept_idx: torch.Tensor,
    kept_count: torch.Tensor,
    pool: torch.Tensor,
    neighbours: int = NEIGHBOURS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PruMerge's merge for all partitions at once: one similarity matmul, one top-k, one weighted sum.

    features (S, n, C) projector input; keys (S, n, Ck) L2-normalised patch keys; attention (S, n)
    CLS attention; kept_idx (S, K) token indices (rows past kept_count[s] are padding); pool (S, n)
    the tokens that may be neighbours or summarised. Returns merged (S, K, C) with
    x_i + sum over i's `neighbours` most similar other pool tokens of a_j x_j, and the summary
    (S, C) = sum of a_j x_j over pool tokens not kept.
    """
    s, k = kept_idx.shape
    n = keys.shape[1]
    row_live = torch.arange(k, device=kept_idx.device)[None, :] < kept_count[:, None]  # (S, K)
    query = keys.gather(1, kept_idx[..., None].expand(-1, -1, keys.shape[-1]))  # (S, K, Ck)
    sim = (query @ keys.transpose(1, 2)).masked_fill(~pool[:, None, :], float("-inf"))  # (S, K, n)
    sim.scatter_(2, kept_idx[..., None], float("-inf"))  # never the token itself
    top = sim.topk(min(neighbours, n), dim=2)
    weights = torch.zeros(s, k + 1, n, device=features.device, dtype=torch.float32)
    neighbour_weight = attention.float().gather(1, top.indices.flatten(1)).view_as(top.values)
    weights[:, :k].scatter_(2, top.indices, neighbour_weight * torch.isfinite(top.values))
    weights[:, :k].scatter_add_(2, kept_idx[..., None], torch.ones(s, k, 1, device=features.device))
    weights[:, :k] *= row_live[..., None]
    kept_mask = torch.zeros(s, n, dtype=torch.bool, device=features.device)
    kept_mask.scatter_(1, kept_idx, row_live)
    weights[:, k] = attention.float() * (pool & ~kept_mask)
    out = weights @ features.float()  # (S, K + 1, C)
    return out[:, :k].to(features.dtype), out[:, k].to(features.dtype)


def plan(
    attention: torch.Tensor, valid: torch.Tensor, budgets: list[int] | None, plus: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which tokens each partition keeps (paper fidelity), in raster order.

    Returns kept_idx (S, n) sorted into LLM order (the first kept_count[s] entries are kept),
    kept_count (S,), and emit (S,) whether the partition sends its summary token.
    budgets: tokens per partition (summary included) or None for the adaptive count.
    """
    s, n = attention.shape
    device = attention.device
    rank = descending_rank(attention, valid)
    outliers = outlier_counts(attention, valid)
    if budgets is None:
        slots = None
        top_count = outliers
        emit = torch.ones(s, dtype=torch.bool, device=device)
    else:
        budget = torch.tensor(budgets, device=device)
        slots = (budget - 1).clamp(min=0)  # one slot goes to the summary token
        top_count = outliers.clamp(max=slots) if plus else slots
        emit = budget > 0
    top = rank < top_count[:, None]
    extra = torch.zeros_like(top)
    if plus and slots is None:  # adaptive PruMerge+: the released code's regular grid, over valid tokens
        total = valid.sum(dim=1)
        pairs = zip(outliers.tolist(), total.tolist(), strict=True)
        stride = torch.tensor([plus_stride(o, t) for o, t in pairs], device=device)[:, None]
        position = valid.long().cumsum(dim=1) - 1  # among the valid tokens, all but the last
        extra = valid & (position % stride == 0) & (position < (total - 1)[:, None]) & ~top
    elif plus:  # budgeted PruMerge+: fill the remaining slots with evenly spaced valid tokens
        extra = evenly_spaced(valid & ~top, slots - top_count)
    kept = top | extra
    token = torch.arange(n, device=device).expand(s, n)
    kept_idx = torch.sort(torch.where(kept, token, n + token), dim=1, stable=True).indices  # raster order
    return kept_idx, kept.sum(dim=1), emit


def select_prumerge(
    batch: VisionBatch, budget: float | None, fidelity: str, params: dict, plus: bool
) -> list[Selection]:
    """Per image: merged kept tokens and summary tokens, as Selections (see the module docstring)."""
    layer = params["layer"]
    if fidelity == "reference":
        if budget is not None:
            raise ValueError("prumerge reference fidelity is adaptive only (the released code has no budget)")
        return select_reference(batch, layer, plus, params["neighbours"])
    attention = batch.cls_attention(layer, heads=1)[:, 0]  # (S, n): full width, no head split
    keys = F.normalize(batch.keys[layer][:, 1:].float(), dim=-1)
    n = attention.shape[1]
    valid = valid_masks(batch.layouts, n, attention.device)
    budgets = None
    if budget is not None:
        budgets = [c for v in batch.split(valid) for c in apportion(budget, v.sum(1).tolist())]
    kept_idx, kept_count, emit = plan(attention, valid, budgets, plus)
    width = max(int(kept_count.max()), 1)
    merged, summary = merge(
        batch.features, keys, attention, kept_idx[:, :width], kept_count, valid, params["neighbours"]
    )
    out, start = [], 0
    for layout in batch.layouts:
        rows = slice(start, start + layout.partitions)
        start += layout.partitions
        out.append(
            _assemble(layout, kept_idx[rows], kept_count[rows], emit[rows], merged[rows], summary[rows])
        )
    return out


def _assemble(layout, kept_idx, kept_count, emit, merged, summary) -> Selection:
    """One image's tokens: base tokens and their summary, then sub-image tokens in the un-padded
    canvas's raster order, then their summaries."""
    n = layout.side**2
    partitions = range(layout.partitions)
    counts = kept_count.tolist()
    flat = [kept_idx[p, : counts[p]] + p * n for p in partitions]
    tokens = [merged[p, : counts[p]] for p in partitions]
    summaries = [summary[p : p + 1] if emit[p] else summary[p:p] for p in partitions]
    if layout.partitions == 1:
        return Selection(torch.cat([tokens[0], summaries[0]]), flat[0])
    return stock_order(layout, flat, tokens, summaries)


def select_reference(batch: VisionBatch, layer: int, plus: bool, neighbours: int) -> list[Selection]:
    """Per image, partition by partition as the released code runs it (one partition per call, in
    the model's dtype): its kept tokens in its order, each partition followed by its summary token."""
    attention = batch.released_cls_attention(layer, heads=1)[:, 0]  # (S, n)
    keys = batch.keys[layer][:, 1:]
    parts = [
        reference_partition(x, k, a, plus, neighbours)
        for x, k, a in zip(batch.features, keys, attention, strict=True)
    ]
    out, start = [], 0
    for layout in batch.layouts:
        mine = parts[start : start + layout.partitions]
        kept = [idx + p * layout.side**2 for p, (idx, _, _) in enumerate(mine)]
        tokens = [t for _, merged, summary in mine for t in (merged, summary)]
        out.append(Selection(torch.cat(tokens), torch.cat(kept)))
        start += layout.partitions
    return out


def reference_partition(
    features: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor, plus: bool, neighbours: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One partition as released (42Shawn/LLaVA-PruMerge 097c041, clip_encoder.py): (kept ids in its
    order, merged (k, C), summary (1, C)). The outliers come from torch.topk (its tie order), the
    PruMerge+ grid after them ascending; each kept token takes its `neighbours` most key-similar
    tokens among the others listed as the release lists them (kept before it, kept after it, then
    the rest ascending, so ties fall the same way) and adds their attention-weighted sum, all in the
    inputs' dtype with the release's operations, one token at a time."""
    n = attention.shape[0]
    outliers = int(
        outlier_counts(attention[None], torch.ones(1, n, dtype=torch.bool, device=attention.device))
    )
    ratio = outliers / n
    kept = torch.topk(attention[None], int(n * ratio), dim=1).indices[0]
    if plus:
        taken = set(kept.tolist())
        grid = range(0, REFERENCE_LAST_INDEX, plus_stride(outliers, n))
        extra = torch.tensor([j for j in grid if j not in taken], dtype=torch.long, device=kept.device)
        kept = torch.cat([kept, extra])
    is_kept = torch.zeros(n, dtype=torch.bool, device=kept.device)
    is_kept[kept] = True
    rest = (~is_kept).nonzero().squeeze(1)  # ascending
    kept_keys, rest_keys = F.normalize(keys[kept], dim=-1), F.normalize(keys[rest], dim=-1)
    kept_x, rest_x, kept_a, rest_a = features[kept], features[rest], attention[kept], attention[rest]
    merged = torch.zeros_like(kept_x)
    for i in range(len(kept)):
        others = torch.cat([kept_keys[:i], kept_keys[i + 1 :], rest_keys])
        x = torch.cat([kept_x[:i], kept_x[i + 1 :], rest_x])
        a = torch.cat([kept_a[:i], kept_a[i + 1 :], rest_a])
        similarity = torch.bmm(kept_keys[i][None, None], others.T[None])
        chosen = torch.topk(similarity, k=neighbours, dim=2).indices.squeeze()
        weighted = torch.sum(x[None][:, chosen] * a[None][:, chosen][..., None], dim=1)
        merged[i] = kept_x[i] + weighted if plus else weighted + kept_x[i]  # the release's operand order
    summary = torch.sum(rest_x[None] * rest_a[None][..., None], dim=1)
    return kept, merged, summary


def _method(name: str, plus: bool, summary: str) -> Method:
    def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
        return select_prumerge(batch, budget, fidelity, params, plus)

    return Method(
        name=name,
        summary=summary,
        stage="vision",
        reference="Shang et al., LLaVA-PruMerge (arXiv 2403.15388); code: github.com/42Shawn/LLaVA-PruMerge",
        select=select,
        budgets={"paper": ("exact", "adaptive"), "reference": ("adaptive",)},
        params=(
            vision_layer(
                "layer",
                Derived("the last vision layer (23 on CLIP ViT-L)", lambda shape, seed: shape.depth - 1),
                "vision layer whose full-width CLS attention ranks the tokens",
            ),
            Param("neighbours", int, NEIGHBOURS, "key-similar tokens merged into each kept token", low=1),
        ),
        layers=lambda params: {params["layer"]},
    )


PRUMERGE = _method(
    "prumerge",
    plus=False,
    summary="outlier (or top) tokens by last-layer CLS attention, merged with their 32 nearest keys, "
    "plus a summary token",
)
PRUMERGE_PLUS = _method(
    "prumerge+", plus=True, summary="PruMerge plus spatially uniform tokens before the merge"
)
