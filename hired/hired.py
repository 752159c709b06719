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
    capped at caps[i], then what floors and caps left goes by largest remainder (ties: lower
    index), never above a cap. What the sub-images cannot hold goes back to the base partition.
    """
    if n_budget > base_cap + sum(caps):
        raise ValueError(f"budget of {n_budget} tokens exceeds the {base_cap + sum(caps)} candidates")
    n0 = min(math.floor(alpha * n_budget), base_cap)
    n_sub = n_budget - n0
    s = [float(v) for v in scores]
    total = sum(s)
    if total <= 0:  # no attention signal at all: share by size
        s, total = [float(c) for c in caps], float(sum(caps))
    exact = [n_sub * v / total for v in s]
    counts = [min(math.floor(e), cap) for e, cap in zip(exact, caps, strict=True)]
    left = n_sub - sum(counts)
    order = sorted(range(len(caps)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    while left > 0 and any(counts[i] < caps[i] for i in order):
        for i in order:
            if left and counts[i] < caps[i]:
                counts[i] += 1
                left -= 1
    return [n0 + left, *counts]


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
