"""Straightforward transcriptions of METHODS.md, written independently of hired/, used as test oracles
(and by profiler.bench_select to time the vectorised merge against the per-token loop)."""

import numpy as np
import torch


def merge_loop(x, keys, attention, kept, pool, neighbours=32):
    """PruMerge's merge, one kept token at a time, for ONE partition.

    x (n, C) features; keys (n, Ck) L2-normalised; attention (n,); kept: list of token indices;
    pool (n,) bool: tokens that may be neighbours or summarised. Returns (merged (k, C), summary (C,)).
    """
    merged = []
    for i in kept:  # one token at a time, as the released code does it
        others = torch.tensor([j for j in range(len(x)) if pool[j] and j != i], dtype=torch.long)
        similarity = keys[others] @ keys[i]
        nearest = others[similarity.topk(min(neighbours, len(others))).indices]
        merged.append(x[i] + (attention[nearest, None] * x[nearest]).sum(dim=0))
    dropped = [j for j in range(len(x)) if pool[j] and j not in set(kept)]
    summary = sum((attention[j] * x[j] for j in dropped), torch.zeros_like(x[0]))
    return (torch.stack(merged) if merged else x[:0]), summary


def outlier_count_numpy(values, valid=None):
    """Values strictly above Q3 + 1.5 IQR, quartiles by numpy's default (linear) percentile."""
    a = np.asarray(values, dtype=np.float32)
    if valid is not None:
        a = a[np.asarray(valid)]
    q1, q3 = np.percentile(a, 25), np.percentile(a, 75)
    return int((a > q3 + 1.5 * (q3 - q1)).sum())


def prumerge_plus_reference_order(attention_row):
    """The released PruMerge+ kept order for one partition of 576 tokens: outliers by descending
    attention, then arange(0, 575, int(int(1/r)/3)) tokens not already chosen, ascending."""
    k = outlier_count_numpy(attention_row)
    top = torch.topk(torch.as_tensor(attention_row), k).indices.tolist()
    step = int(1 / (k / 576))
    extra = [j for j in range(0, 575, int(step / 3)) if j not in top]
    return top + extra


def hired_reference_budgets(partitions, grid, init_scores, budget, alpha):
    """Per-partition token counts of the released HiRED code (METHODS.md, reference steps)."""
    n = 576
    n_total = int(partitions * n * budget)
    n0 = min(int(n_total * alpha), n)
    n_sub = min(n_total - n0, (partitions - 1) * n)
    top = set(np.argsort(-np.asarray(init_scores), kind="stable")[: int(n * (1 - alpha))].tolist())
    chunk = n // (grid[0] * grid[1])  # flat raster chunks, not 2-D regions
    counts = [sum(1 for j in range(c * chunk, (c + 1) * chunk) if j in top) for c in range(grid[0] * grid[1])]
    return [n0] + [min(int(np.float32(c) / np.float32(sum(counts)) * np.float32(n_sub)), n) for c in counts]
