"""Straightforward transcriptions of docs/methods.md, written independently of hired/, used as test oracles
(and by profiler.bench.select to time the vectorised merge against the per-token loop)."""

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
    """Per-partition token counts of the released HiRED code (docs/methods.md, reference steps)."""
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


# The released HiRED code, hasanar1f/HiRED at 502d6dd, its patched
# transformers/src/transformers/models/llava_next/modeling_llava_next.py, restated step by step:
# ViT_Attn_Hook.get_attn (lines 77-96), HiRED_sub_img_budgets (497-516), HiRED_token_selection
# (518-560), unpad_image (167-210) and the mask handling of pack_HiRED_image_features (782-860).
# Everything stays in the inputs' dtype, as there; the grid is the correct (rows, cols) one (the
# release's transformers 4.42 transposes non-square grids, a departure docs/methods.md states).
def hired_release_kept(queries, keys, heads, grid, image_size, budget, alpha, l_init, l_final):
    """Flat token indices (partition * 576 + j) the release keeps for one image, in its output order."""

    def cls_row(layer):  # the whole matrix per head, scaled after the product, softmax; then row 0
        q, k = queries[layer], keys[layer]
        p, t, c = q.shape
        d = c // heads
        q = q.view(p, t, heads, d).transpose(1, 2)
        k = k.view(p, t, heads, d).transpose(1, 2)
        attention = torch.softmax((q @ k.transpose(-2, -1)) * d**-0.5, dim=-1)
        return attention[:, :, 0, -576:].sum(dim=1)  # summed over heads, same dtype

    top, bottom = cls_row(l_init), cls_row(l_final)
    parts, n = bottom.shape
    mask = torch.zeros(parts, n, dtype=torch.bool)
    total = int(parts * n * budget)
    base_budget = min(int(total * alpha), n)
    sub_budget = min(total - base_budget, (parts - 1) * n)
    mask[0, bottom[0].topk(base_budget).indices] = True
    if sub_budget > 0:
        spread = torch.zeros(n, dtype=torch.bool)
        spread[top[0].topk(int(n * (1 - alpha))).indices] = True
        per_chunk = spread.reshape(grid[0], grid[1], -1).sum(dim=-1).reshape(-1)
        shares = torch.clamp((per_chunk / per_chunk.sum() * sub_budget).int(), max=n)
        for i, k in enumerate(shares.tolist()):
            mask[i + 1, bottom[i + 1].topk(k).indices] = True
    side = 24
    flat = torch.arange(parts * n).view(parts, n)
    canvas = flat[1:].view(grid[0], grid[1], side, side).permute(0, 2, 1, 3).reshape(grid[0] * side, -1)
    canvas_mask = mask[1:].view(grid[0], grid[1], side, side).permute(0, 2, 1, 3).reshape(grid[0] * side, -1)
    height, width = image_size
    rows, cols = canvas.shape
    if width / height > cols / rows:
        pad = (rows - int(height * (cols / width))) // 2
        canvas, canvas_mask = canvas[pad : rows - pad], canvas_mask[pad : rows - pad]
    else:
        pad = (cols - int(width * (rows / height))) // 2
        canvas, canvas_mask = canvas[:, pad : cols - pad], canvas_mask[:, pad : cols - pad]
    return flat[0][mask[0]].tolist() + canvas.flatten()[canvas_mask.flatten()].tolist()


# The released PruMerge and PruMerge+, 42Shawn/LLaVA-PruMerge at 097c041,
# llava/model/multimodal_encoder/clip_encoder.py: complement_idx (12-25), outlier_dectection (34-47),
# token_prune_merge_advanced (85-172) and token_prune_merge_advanced_plus (174-), restated for one
# partition (the HiRED release calls it once per partition), in the inputs' dtype as there.
def prumerge_release(features, queries, keys, plus, neighbours=32):
    """(kept ids in the release's order, its output tokens: merged kept ones then the summary)."""
    x = features[None]  # (1, N, C)
    _, n, c = x.shape
    attention = torch.softmax((queries[None] @ keys[None].transpose(-2, -1)) * c**-0.5, dim=-1)[:, 0, 1:]
    values = attention.to(torch.float32).numpy().flatten()
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    ratio = len(np.where(values > q3 + 1.5 * (q3 - q1))[0]) / len(values)
    idx = torch.topk(attention, int(n * ratio), dim=1, largest=True).indices
    if plus:
        grid = torch.arange(0, 575, int(int(1 / ratio) / 3))
        extra = torch.tensor([j for j in grid.tolist() if j not in idx.flatten().tolist()], dtype=torch.long)
        idx = torch.cat([idx, extra[None]], dim=1)
    taken = torch.zeros(n, dtype=torch.bool)
    taken[idx[0]] = True
    compl = torch.arange(n)[~taken][None]
    gather = lambda t, i: torch.gather(t, 1, i[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    patch_keys = keys[None][:, 1:]
    kept_x, kept_a = gather(x, idx), torch.gather(attention, 1, idx)
    rest_x, rest_a = gather(x, compl), torch.gather(attention, 1, compl)
    kept_k = torch.nn.functional.normalize(gather(patch_keys, idx), p=2, dim=-1)
    rest_k = torch.nn.functional.normalize(gather(patch_keys, compl), p=2, dim=-1)
    out = torch.zeros_like(kept_x)
    for i in range(idx.shape[1]):
        pool_x = torch.cat([kept_x[:, :i], kept_x[:, i + 1 :], rest_x], dim=1)
        pool_a = torch.cat([kept_a[:, :i], kept_a[:, i + 1 :], rest_a], dim=1)
        pool_k = torch.cat([kept_k[:, :i], kept_k[:, i + 1 :], rest_k], dim=1)
        similar = torch.topk(torch.bmm(kept_k[0, i][None, None], pool_k.transpose(1, 2)), k=neighbours, dim=2)
        members = similar.indices.squeeze()
        weighted = torch.sum(pool_x[:, members] * pool_a[:, members][..., None], dim=1)
        out[0, i] = kept_x[0, i] + weighted if plus else weighted + kept_x[0, i]
    summary = torch.sum(rest_x * rest_a[..., None], dim=1, keepdim=True)
    return idx[0].tolist(), torch.cat([out, summary], dim=1)[0]


# The released GlobalCom2, xuyang-liu16/GlobalCom2 at 96b2d00: the head-mean attention logits of its
# custom CLIP attention (llava/model/multimodal_encoder/apply_customvit.py, CustomCLIPAttention.forward)
# and, in llava/model/llava_arch.py, generate_scale_for_crop_features (103-135), compress_thumbnail
# (285-295), compress_crops (297-388) with its helpers (138-268), restated for one image alone.
def globalcom2_release_image(queries, keys, heads, projected, newline, grid, image_size, budget, temperature):
    """The LLM inputs the release makes of one image: (tokens, count), in the inputs' dtype."""
    parts, t, c = queries.shape
    d = c // heads

    def shape(x):
        return x.view(parts, t, heads, d).transpose(1, 2).contiguous().view(parts * heads, t, d)

    weights = torch.bmm(shape(queries * d**-0.5), shape(keys).transpose(1, 2))
    scores = weights.view(parts, heads, t, t).mean(dim=1)[:, 0, 1:]
    n, side = scores.shape[1], int(scores.shape[1] ** 0.5)
    base = scores[0]
    thumb = projected[0][torch.argsort(base, descending=True)[: int(n * budget)]]
    nph, npw = grid
    pw, ph = max(side // npw, 1), max(side // nph, 1)
    sums = np.zeros(nph * npw)
    for idx, score in enumerate(base):
        i, j = divmod(idx, side)
        sums[min(i // ph, nph - 1) * npw + min(j // pw, npw - 1)] += score.item()
    soft = np.exp((sums - np.max(sums)) / temperature)
    soft = soft / (np.sum(soft) + 1e-8)
    scales = np.clip(budget * (1 + soft - np.mean(soft)), None, 1.0).tolist()
    height, width = image_size
    rows, cols = nph * side, npw * side
    mask = torch.zeros((nph * npw, n), dtype=torch.bool)
    mask = mask.view(nph, npw, side, side).permute(0, 2, 1, 3).contiguous().flatten(0, 1).flatten(1, 2)
    if width / height > cols / rows:
        pad = (rows - int(height * (cols / width))) // 2
        mask[pad : rows - pad, :] = True
    else:
        pad = (cols - int(width * (rows / height))) // 2
        mask[:, pad : cols - pad] = True
    r, k = torch.any(mask, dim=1).nonzero(as_tuple=True)[0], torch.any(mask, dim=0).nonzero(as_tuple=True)[0]
    cur_h, cur_w = int(r[-1] - r[0] + 1), int(k[-1] - k[0] + 1)
    mask = mask.view(nph, side, npw, side).permute(0, 2, 1, 3).contiguous()
    dims = []
    for i in range(nph):
        for j in range(npw):
            nz = torch.nonzero(mask[i, j], as_tuple=True)
            dims.append(
                (0, 0)
                if len(nz[0]) == 0
                else (int(nz[1].max() - nz[1].min() + 1), int(nz[0].max() - nz[0].min() + 1))
            )
    mask = mask.view(nph * npw, n)
    big = torch.nn.functional.interpolate(
        base.view(1, 1, side, side), size=(cur_h, cur_w), mode="bilinear", align_corners=False
    ).squeeze()
    guides, top = [], 0
    for i in range(nph):
        left = 0
        for j in range(npw):
            w, h = dims[i * npw + j]
            guides.append(big[top : top + h, left : left + w].flatten())
            left += w
        top += dims[i * npw][1]
    final = torch.zeros((nph * npw, n, projected.shape[-1]))
    picked_mask = torch.zeros((nph * npw, n), dtype=torch.bool)
    for i in range(nph * npw):
        tokens, own = projected[1 + i][mask[i]], scores[1 + i][mask[i]]
        combined = torch.nn.functional.normalize(own.unsqueeze(0), p=2, dim=-1).squeeze(0)
        combined = combined + torch.nn.functional.normalize(guides[i].unsqueeze(0), p=2, dim=-1).squeeze(0)
        _, chosen = torch.topk(combined, int(tokens.shape[0] * scales[i]))
        for f, idx in enumerate(chosen):
            final[i, idx] = tokens[chosen][f]
            picked_mask[i, idx] = True
    final = (
        final.view(nph, npw, side, side, -1).permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
    )
    picked_mask = (
        picked_mask.view(nph, npw, side, side, -1)
        .permute(4, 0, 2, 1, 3)
        .contiguous()
        .flatten(1, 2)
        .flatten(2, 3)
    )
    final = (
        torch.cat((final, newline[:, None, None].expand(*final.shape[:-1], 1)), dim=-1)
        .flatten(1, 2)
        .transpose(0, 1)
    )
    picked_mask = (
        torch.cat((picked_mask, torch.ones((1, rows, 1), dtype=torch.bool)), dim=-1).flatten(1, 2).squeeze(0)
    )
    return torch.cat([thumb, final[picked_mask].to(projected.dtype)])
