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
        others = torch.tensor([j for j in range(len(x)) if pool[j] and j != i], device=keys.device)
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


def visionzip_partition(features, scores, keys, valid, budget, share):
    """VisionZip on ONE partition, token by token: (dominant indices ascending, contextual tokens).

    features (n, C); scores (n,) CLS attention; keys (n, d) head-mean keys; valid (n,) bool.
    """
    n = len(scores)
    contextual = int(np.floor(budget * share + 0.5))
    candidates = [j for j in range(n) if valid[j]]
    ranked = sorted(candidates, key=lambda j: (-float(scores[j]), j))
    dominant = sorted(ranked[: budget - contextual])
    rest = [j for j in candidates if j not in set(dominant)]
    if contextual == 0:
        return dominant, features[:0]
    step = max(1, len(rest) // contextual)
    targets = rest[::step][:contextual]
    unit = keys / keys.norm(dim=-1, keepdim=True)
    groups = {t: [t] for t in targets}
    for j in rest:
        if j in groups:
            continue
        similarities = [float(unit[j] @ unit[t]) for t in targets]
        groups[targets[similarities.index(max(similarities))]].append(j)
    merged = torch.stack([features[groups[t]].mean(dim=0) for t in targets])
    return dominant, merged


def divprune_greedy(x, k):
    """DivPrune's max-min selection on ONE image's tokens x (N, D), one token at a time; sorted indices."""
    unit = x.double() / x.double().norm(dim=-1, keepdim=True)
    distance = 1 - unit @ unit.T
    n = len(x)
    nearest_other = (distance + torch.diag(torch.full((n,), float("inf"), dtype=distance.dtype))).min(dim=1)
    values = nearest_other.values.tolist()
    first = max(range(n), key=lambda i: (values[i], -i))  # ties: the lower index
    chosen, taken = [first], {first}
    closest = distance[first].clone()
    while len(chosen) < k:
        row = closest.tolist()
        best = max((j for j in range(n) if j not in taken), key=lambda j: (row[j], -j))
        chosen.append(best)
        taken.add(best)
        closest = torch.minimum(closest, distance[best])
    return sorted(chosen)


def globalcom2_image(layout, logits, budget, alpha, temperature):
    """GlobalCom2 on ONE image, token by token: the kept flat indices in stock order.

    logits (P, 576): each partition's head-mean CLS logits. Assumes no crop's share reaches its cap.
    """
    side, n = 24, 576
    n_budget = int(np.floor(budget * layout.n_full + 0.5))
    n0 = min(int(np.floor(budget * n + 0.5)), n_budget)
    nph, npw = layout.grid
    valid = [
        [int(p * n + j) in set(layout.candidates.tolist()) for j in range(n)]
        for p in range(layout.partitions)
    ]
    caps = [sum(v) for v in valid[1:]]

    def band(i, parts):
        return max(k for k in range(parts) if k * side // parts <= i)

    sums = [0.0] * (nph * npw)
    for j in range(n):
        sums[band(j // side, nph) * npw + band(j % side, npw)] += float(logits[0][j])
    top = max(sums)
    soft = [np.exp((s - top) / temperature) for s in sums]
    sigma = [s / sum(soft) for s in soft]
    weights = [c * (1 + s - 1 / len(caps)) for c, s in zip(caps, sigma, strict=True)]
    n_sub = n_budget - n0
    exact = [n_sub * w / sum(weights) for w in weights]
    counts = [int(np.floor(e)) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))[: n_sub - sum(counts)]:
        counts[i] += 1
    assert all(c <= cap for c, cap in zip(counts, caps, strict=True)), "a cap binds: not this oracle's case"
    rows, cols = layout.canvas
    upsampled = torch.nn.functional.interpolate(
        torch.as_tensor(logits[0]).float().view(1, 1, side, side), size=(rows, cols), mode="bilinear"
    ).flatten()
    guide = dict(zip(layout.candidates[n:].tolist(), upsampled.tolist(), strict=True))
    kept = sorted(range(n), key=lambda j: (-float(logits[0][j]), j))[:n0]
    for p in range(1, layout.partitions):
        tokens = [j for j in range(n) if valid[p][j]]
        local = [float(logits[p][j]) for j in tokens]
        glob = [guide[p * n + j] for j in tokens]
        ln, gn = np.sqrt(sum(v * v for v in local)), np.sqrt(sum(v * v for v in glob))
        score = {
            j: alpha * g / gn + (1 - alpha) * lv / ln for j, g, lv in zip(tokens, glob, local, strict=True)
        }
        kept += [p * n + j for j in sorted(tokens, key=lambda j: (-score[j], j))[: counts[p - 1]]]
    order = {c: i for i, c in enumerate(layout.candidates.tolist())}
    return sorted(kept, key=lambda c: order[c])
