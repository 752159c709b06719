"""HiRED (Arif et al., AAAI 2025), paper mode: exact budgets per docs/methods.md.

Budget split: alpha of the budget to the full-image partition, the rest to the sub-images in
proportion to the layer-l_init CLS attention the base image pays to each sub-image's region;
then per partition the top tokens by layer-l_final CLS attention.
"""

from __future__ import annotations

import math

import torch

from hired.capture import VisionBatch
from hired.layout import ImageLayout, released_candidates, top_per_row
from hired.spec import Derived, Method, Param, Selection, budget_tokens, vision_layer


def region_scores(base_attention: torch.Tensor, grid: tuple[int, int], side: int) -> torch.Tensor:
    """(nph * npw,) attention mass of the base grid inside each sub-image's region.

    base_attention: (side * side,) per-token score of the base partition (heads already summed).
    Rows split into nph bands and columns into npw bands with edges floor(k * side / n).
    """
    nph, npw = grid
    a = base_attention.reshape(side, side)
    row_edges = [k * side // nph for k in range(nph + 1)]
    col_edges = [k * side // npw for k in range(npw + 1)]
    return torch.stack(
        [
            a[row_edges[r] : row_edges[r + 1], col_edges[c] : col_edges[c + 1]].sum()
            for r in range(nph)
            for c in range(npw)
        ]
    )


def split_budget(
    n_budget: int, scores: torch.Tensor, caps: list[int], alpha: float, base_cap: int
) -> list[int]:
    """Tokens per partition [N_0, N_1, ...] summing to exactly n_budget.

    N_0 = min(floor(alpha * n_budget), base_cap); the sub-images share the rest in proportion to
    their scores, capped (see `proportional`); what the sub-images cannot hold goes back to the base.
    """
    if n_budget > base_cap + sum(caps):
        raise ValueError(f"budget of {n_budget} tokens exceeds the {base_cap + sum(caps)} candidates")
    n0 = min(math.floor(alpha * n_budget), base_cap)
    n_sub = min(n_budget - n0, sum(caps))
    return [n_budget - n_sub, *proportional(n_sub, [float(v) for v in scores], caps)]


def proportional(total: int, weights: list[float], caps: list[int]) -> list[int]:
    """Whole counts summing to `total` (at most sum(caps)): floor(total * w_i / sum w), capped.

    A capped cell's excess is re-split over the other cells in proportion to their weights
    (water-filling), so no cell exceeds its cap and shares stay proportional; what the floors leave
    goes by largest remainder (ties: lower index). No weight left: shares by size (the caps).
    """
    exact = [0.0] * len(caps)
    open_cells = [i for i, cap in enumerate(caps) if cap > 0]
    remaining = float(total)
    while open_cells:
        shares = [weights[i] for i in open_cells]
        if sum(shares) <= 0:  # no signal left: share by size
            shares = [float(caps[i]) for i in open_cells]
        whole = sum(shares)
        share = {i: remaining * w / whole for i, w in zip(open_cells, shares, strict=True)}
        over = [i for i in open_cells if share[i] > caps[i]]
        if not over:
            for i, v in share.items():
                exact[i] = v
            break
        for i in over:
            exact[i] = float(caps[i])
            remaining -= caps[i]
        open_cells = [i for i in open_cells if i not in over]
    counts = [math.floor(e + 1e-9) for e in exact]
    left = total - sum(counts)
    order = sorted(range(len(caps)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def select_hired(
    layout: ImageLayout, init_scores: torch.Tensor, final_scores: torch.Tensor, n_budget: int, alpha: float
) -> torch.Tensor:
    """Positions into layout.candidates of exactly n_budget kept tokens, in stock order.

    init_scores: (side**2,) base-partition CLS attention at l_init, summed over heads.
    final_scores: (P, side**2) CLS attention at l_final per partition, summed over heads.
    """
    n = layout.side**2
    p = layout.partitions
    device = final_scores.device
    candidates = layout.candidates.to(device)
    is_candidate = torch.zeros(p * n, dtype=torch.bool, device=device)
    is_candidate[candidates] = True
    valid = is_candidate.view(p, n)
    if p == 1:
        budgets = [n_budget]
    else:
        caps = valid[1:].sum(dim=1).tolist()
        budgets = split_budget(n_budget, region_scores(init_scores, layout.grid, layout.side), caps, alpha, n)
    kept = top_per_row(final_scores, valid, torch.tensor(budgets, device=device)).flatten()
    return kept[candidates].nonzero().squeeze(1)


def select_hired_reference(
    layout: ImageLayout, init_scores: torch.Tensor, final_scores: torch.Tensor, budget: float, alpha: float
) -> torch.Tensor:
    """Flat token indices kept by the released HiRED code, in its output order (stock order, no newlines).

    Its arithmetic, reproduced: N_total = int(P * 576 * b) over all partitions, padding included;
    N_0 = min(int(N_total * alpha), 576); N_sub = min(N_total - N_0, (P - 1) * 576). The sub-image
    shares come from a top-int(576 * (1 - alpha)) mask of the base's l_init attention counted over
    flat raster chunks (reshape(nph, npw, -1)), int-truncated and capped at 576 (remainders lost).
    Top-k runs over all 576 tokens of a partition, on the scores as given (the release's dtype) and
    with torch.topk's own tie order; un-padding, with the release's int() arithmetic, then drops what
    fell in padding.
    """
    n = layout.side**2
    p = layout.partitions
    device = final_scores.device
    candidates = released_candidates(layout).to(device)
    if budget >= 1.0:  # the released code only selects when the rate is below 1
        return candidates
    if p == 1:  # the released LLaVA-1.5 code: top int(576 * b) by layer-22 attention, raster order
        top = torch.topk(final_scores[0], min(n, int(n * budget))).indices
        return top.sort().values
    n_total = int(p * n * budget)
    n0 = min(int(n_total * alpha), n)
    n_sub = min(n_total - n0, (p - 1) * n)
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[torch.topk(init_scores, int(n * (1 - alpha))).indices] = True
    counts = mask.reshape(layout.grid[0], layout.grid[1], -1).sum(-1).reshape(-1).float()
    if counts.sum() == 0:
        raise ValueError(
            "reference HiRED is undefined here: its mask is empty (alpha = 1), it divides 0 by 0"
        )
    budgets = [n0, *(counts / counts.sum() * n_sub).int().clamp(max=n).tolist()]
    kept = torch.zeros(p * n, dtype=torch.bool, device=device)
    for part, k in enumerate(budgets):
        if k:
            kept[part * n + torch.topk(final_scores[part], k).indices] = True
    return candidates[kept[candidates]]


def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    """Per image: the kept projector inputs, in stock order (paper) or the released code's order.

    Paper: float32 scores, ties to the lower index. Reference: the release's scores, in the model's
    dtype from the whole attention matrix, summed over heads in that dtype."""
    scores = batch.released_cls_attention if fidelity == "reference" else batch.cls_attention
    summed = {layer: batch.split(scores(layer).sum(1)) for layer in {params["l_init"], params["l_final"]}}
    out = []
    for i, (layout, features) in enumerate(zip(batch.layouts, batch.split(batch.features), strict=True)):
        init, final = summed[params["l_init"]][i][0], summed[params["l_final"]][i]
        if fidelity == "reference":
            kept = select_hired_reference(layout, init, final, budget, params["alpha"])
        else:
            kept = layout.candidates.to(final.device)[
                select_hired(layout, init, final, budget_tokens(budget, layout.n_full), params["alpha"])
            ]
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def token_count(layout: ImageLayout, budget: float | None, fidelity: str, params: dict) -> int | None:
    """Paper: exactly round(b * N_full). Reference: at most int(P * 576 * b) (un-padding drops some)."""
    if fidelity == "reference":
        return int(layout.partitions * layout.side**2 * budget)
    return budget_tokens(budget, layout.n_full)


METHOD = Method(
    name="hired",
    summary="budget split by the base image's layer-l_init CLS attention, tokens by layer-l_final's",
    stage="vision",
    reference="Arif et al., HiRED, AAAI 2025 (arXiv 2408.10945); code: github.com/hasanar1f/HiRED",
    select=select,
    budgets={"paper": ("exact",), "reference": ("released",)},
    params=(
        Param("alpha", float, 0.5, "share of the budget for the full image (partition 0)", low=0, high=1),
        vision_layer("l_init", 0, "vision layer whose CLS attention splits the rest over the sub-images"),
        vision_layer(
            "l_final",
            Derived(
                "the projector's input layer (22 on CLIP ViT-L)", lambda shape, seed: shape.feature_layer
            ),
            "vision layer whose CLS attention picks the tokens in each partition",
        ),
    ),
    layers=lambda params: {params["l_init"], params["l_final"]},
    tokens=token_count,
)
