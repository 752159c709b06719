"""HiRED (Arif et al., AAAI 2025), paper mode: exact budgets per METHODS.md.

Budget split: alpha of the budget to the full-image partition, the rest to the sub-images in
proportion to the layer-l_init CLS attention the base image pays to each sub-image's region;
then per partition the top tokens by layer-l_final CLS attention.
"""

from __future__ import annotations

import math

import torch

from hired.layout import ImageLayout


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

    N_0 = min(floor(alpha * n_budget), base_cap); sub-image i gets floor(N_sub * s_i / sum s)
    capped at caps[i]; what the floors left goes by largest remainder (ties: lower index).
    A capped cell's excess is re-split over the other cells in proportion to their scores
    (water-filling), so no cell exceeds its cap and shares stay proportional; what the
    sub-images cannot hold at all goes back to the base partition.
    """
    if n_budget > base_cap + sum(caps):
        raise ValueError(f"budget of {n_budget} tokens exceeds the {base_cap + sum(caps)} candidates")
    n0 = min(math.floor(alpha * n_budget), base_cap)
    n_sub = min(n_budget - n0, sum(caps))
    s = [float(v) for v in scores]
    exact = [0.0] * len(caps)
    open_cells = [i for i, cap in enumerate(caps) if cap > 0]
    remaining = float(n_sub)
    while open_cells:
        weights = [s[i] for i in open_cells]
        if sum(weights) <= 0:  # no attention signal left: share by size
            weights = [float(caps[i]) for i in open_cells]
        total = sum(weights)
        share = {i: remaining * w / total for i, w in zip(open_cells, weights, strict=True)}
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
    left = n_sub - sum(counts)
    order = sorted(range(len(caps)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return [n_budget - n_sub, *counts]


def top_tokens(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores among valid tokens (ties: lower index first), ascending."""
    masked = torch.where(valid, scores.float(), torch.tensor(float("-inf"), device=scores.device))
    order = torch.sort(masked, descending=True, stable=True).indices[:k]
    return order.sort().values


def select_hired(
    layout: ImageLayout,
    cls_attention: dict[int, torch.Tensor],
    n_budget: int,
    alpha: float,
    l_init: int,
    l_final: int,
) -> torch.Tensor:
    """Boolean keep-mask over layout.candidates with exactly n_budget True entries."""
    n = layout.side**2
    p = layout.partitions
    final = cls_attention[l_final].sum(dim=1)  # (P, n): f_p[j] = sum_h a_p[l_final, h, j]
    is_candidate = torch.zeros(p * n, dtype=torch.bool, device=final.device)
    is_candidate[layout.candidates.to(final.device)] = True
    valid = is_candidate.view(p, n)
    if p == 1:
        budgets = [n_budget]
    else:
        base = cls_attention[l_init][0].sum(dim=0)  # (n,) base partition, heads summed
        caps = valid[1:].sum(dim=1).tolist()
        budgets = split_budget(n_budget, region_scores(base, layout.grid, layout.side), caps, alpha, n)
    kept = torch.zeros(p * n, dtype=torch.bool, device=final.device)
    for part, k in enumerate(budgets):
        if k:
            kept[part * n + top_tokens(final[part], valid[part], k)] = True
    return kept[layout.candidates.to(final.device)]
