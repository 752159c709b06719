"""Every method on hand-made vision outputs: counts, order, dtype, and agreement with the oracles."""

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from hired.capture import VisionBatch
from hired.layout import image_layout
from hired.methods import METHODS, VisionShape, check_point, method_params
from hired.methods.hired import select_hired, select_hired_reference
from hired.methods.prumerge import apportion, merge, outlier_counts, plus_stride, reference_partition
from tests.conftest import plant_key_ties, with_patch_queries
from tests.support.oracles import (
    hired_reference_budgets,
    hired_release_kept,
    merge_loop,
    outlier_count_numpy,
    prumerge_plus_reference_order,
    prumerge_release,
)

SHAPE = VisionShape(depth=4, feature_layer=2)
SIZES = [(600, 600), (300, 1000), (1008, 336)]  # (height, width): 2x2, 1x3 and 3x1 grids


def fake_batch(config, sizes, width=16, heads=4, seed=0, dtype=torch.float32, layers=(0, 2, 3)):
    """A VisionBatch with random features, queries and keys (heavy-tailed CLS attention, as real ones)."""
    g = torch.Generator().manual_seed(seed)
    layouts = [image_layout(size, config) for size in sizes]
    s = sum(layout.partitions for layout in layouts)
    features = torch.randn(s, 576, width, generator=g).to(dtype)
    queries = {
        layer: with_patch_queries(torch.randn(s, width, generator=g) * 2, seed).to(dtype) for layer in layers
    }
    keys = {layer: torch.randn(s, 577, width, generator=g).to(dtype) for layer in layers}
    return VisionBatch(layouts, features, heads, queries, keys)


def run(batch, name, budget, fidelity="paper", **overrides):
    method = METHODS[name]
    check_point(method, budget, fidelity)
    return method.select(batch, budget, fidelity, method_params(method, SHAPE, overrides))


@pytest.mark.parametrize("name", ["hired", "prumerge", "prumerge+", "random"])
@pytest.mark.parametrize("budget", [0.05, 0.2, 0.5, 0.9])
def test_paper_mode_keeps_exactly_round_b_n_full(tiny, name, budget):
    batch = fake_batch(tiny.model.config, SIZES, seed=int(budget * 100))
    selections = run(batch, name, budget)
    for layout, sel in zip(batch.layouts, selections, strict=True):
        assert sel.tokens.shape == (math.floor(budget * layout.n_full + 0.5), 16)
        assert sel.tokens.dtype == torch.float32


@pytest.mark.parametrize("budget", [0.1, 0.2, 0.5])
def test_pool_keeps_the_nearest_grids(tiny, budget):
    batch = fake_batch(tiny.model.config, SIZES)
    for layout, sel in zip(batch.layouts, run(batch, "pool", budget), strict=True):
        rows, cols = layout.canvas
        grid = round(24 * math.sqrt(budget)) ** 2 + round(rows * math.sqrt(budget)) * round(
            cols * math.sqrt(budget)
        )
        assert sel.tokens.shape[0] == grid and sel.kept is None


def test_pool_averages_regions(tiny):
    """A canvas whose feature is its column index: pooling to half the columns averages column pairs."""
    layout = image_layout((672, 672), tiny.model.config)
    features = torch.zeros(5, 576, 1)
    flat = features.view(-1)
    canvas_cols = torch.arange(48).repeat(48).float()  # canvas raster: column index
    flat[layout.candidates[576:]] = canvas_cols
    batch = VisionBatch([layout], features, 4)
    tokens = run(batch, "pool", 0.25)[0].tokens  # base 12x12, canvas 24x24
    canvas_tokens = tokens[144:, 0].view(24, 24)
    assert torch.allclose(canvas_tokens[0], torch.arange(24).float() * 2 + 0.5)


@pytest.mark.parametrize("name", ["hired", "random"])
def test_selection_order_is_stock_order(tiny, name):
    batch = fake_batch(tiny.model.config, SIZES, seed=3)
    for layout, sel in zip(batch.layouts, run(batch, name, 0.3), strict=True):
        position = {c: i for i, c in enumerate(layout.candidates.tolist())}
        ranks = [position[k] for k in sel.kept.tolist()]
        assert ranks == sorted(ranks)
    first = batch.split(batch.features)[0].flatten(0, 1)
    sel = run(batch, name, 0.3)[0]
    assert torch.equal(sel.tokens, first[sel.kept])  # selection, not transformation


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["hired", "prumerge", "prumerge+", "random", "pool"])
def test_dtype_is_preserved(tiny, name, dtype):
    batch = fake_batch(tiny.model.config, SIZES[:1], dtype=dtype)
    assert all(sel.tokens.dtype == dtype for sel in run(batch, name, 0.2))


def test_tiny_budget_leaves_partitions_empty_and_stays_exact(tiny):
    batch = fake_batch(tiny.model.config, [(600, 600)])
    for name in ("hired", "prumerge", "prumerge+", "random"):
        (sel,) = run(batch, name, 0.001)  # round(0.001 * 2880) = 3 tokens for 5 partitions
        assert sel.tokens.shape[0] == 3, name
    assert apportion(0.001, [576] * 5) == [1, 1, 1, 0, 0]


def test_apportion_is_exact_and_proportional():
    assert apportion(0.2, [576, 528, 528, 528]) == [115, 106, 106, 105]
    assert sum(apportion(0.37, [576, 96, 96, 96])) == math.floor(0.37 * 864 + 0.5)


# --- PruMerge against the oracles -------------------------------------------------------------


def test_outlier_counts_equal_numpy():
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randn(4, 576, generator=g).exp(), torch.rand(2, 576, generator=g)])
    rows[5, :7] = 5.0  # a few clear outliers in a uniform row
    valid = torch.rand(6, 576, generator=g) > 0.2
    assert outlier_counts(rows, torch.ones_like(valid)).tolist() == [outlier_count_numpy(r) for r in rows]
    assert outlier_counts(rows, valid).tolist() == [
        outlier_count_numpy(r, v) for r, v in zip(rows, valid, strict=True)
    ]


@pytest.mark.parametrize("with_padding", [False, True])
def test_batched_merge_equals_the_loop_at_7b_shapes(with_padding):
    """5 partitions x 577 tokens, width 1024 (CLIP ViT-L), varied kept counts including 0."""
    g = torch.Generator().manual_seed(1)
    s, n, c = 5, 576, 1024
    x = torch.randn(s, n, c, generator=g)
    keys = F.normalize(torch.randn(s, n, c, generator=g), dim=-1)
    attention = torch.softmax(torch.randn(s, n, generator=g) * 2, dim=-1)
    pool = torch.ones(s, n, dtype=torch.bool)
    if with_padding:
        pool[1:, :48] = False  # the first two rows of each sub-image are padding
    counts = [40, 17, 0, 64, 1]
    kept = [torch.randperm(n, generator=g)[: counts[i]] for i in range(s)]
    kept = [k[pool[i, k]] for i, k in enumerate(kept)]
    counts = torch.tensor([len(k) for k in kept])
    width = int(counts.max())
    kept_idx = torch.stack(
        [
            torch.cat([k, torch.tensor([j for j in range(n) if j not in set(k.tolist())])])[:width]
            for k in kept
        ]
    )
    merged, summary = merge(x, keys, attention, kept_idx, counts, pool)
    for i in range(s):
        expected, expected_summary = merge_loop(x[i], keys[i], attention[i], kept[i].tolist(), pool[i])
        assert torch.allclose(merged[i, : counts[i]], expected, rtol=1e-4, atol=1e-5)
        assert torch.allclose(summary[i], expected_summary, rtol=1e-4, atol=1e-5)


def test_reference_prumerge_plus_order_equals_the_released_rule():
    g = torch.Generator().manual_seed(2)
    features, keys = torch.randn(576, 8, generator=g), torch.randn(576, 8, generator=g)
    for _ in range(3):
        attention = torch.softmax(torch.randn(576, generator=g) * 2, dim=-1)
        kept, _, _ = reference_partition(features, keys, attention, plus=True, neighbours=32)
        assert kept.tolist() == prumerge_plus_reference_order(attention)
        kept, _, _ = reference_partition(features, keys, attention, plus=False, neighbours=32)
        k = outlier_count_numpy(attention)
        assert kept.tolist() == torch.topk(attention, k).indices.tolist()


@pytest.mark.parametrize("name", ["prumerge", "prumerge+"])
def test_prumerge_reference_equals_the_release_on_fp16_ties(tiny, name):
    """Reference PruMerge(+) keeps and merges what the release does, bit for bit in fp16: its scores'
    dtype, torch.topk's order among tied scores, and which members of a similarity tie it merges."""
    for seed in range(3):
        batch = fp16_batch_with_ties(tiny.model.config, (600, 600), seed=seed)
        (selection,) = run(batch, name, None, "reference")
        kept, tokens = [], []
        for p in range(batch.layouts[0].partitions):
            ids, out = prumerge_release(
                batch.features[p], batch.queries[3][p], batch.keys[3][p], plus=name == "prumerge+"
            )
            kept += [p * 576 + j for j in ids]
            tokens.append(out)
        assert selection.kept.tolist() == kept
        assert torch.equal(selection.tokens, torch.cat(tokens))


def test_prumerge_output_layout(tiny):
    """Paper: base kept (raster) + its summary, then sub-image tokens in canvas order, then their summaries.
    Reference adaptive: per partition, kept by descending attention then the summary."""
    batch = fake_batch(tiny.model.config, [(300, 1000)], layers=(3,))
    layout = batch.layouts[0]
    (paper,) = run(batch, "prumerge", 0.2)
    budgets = apportion(0.2, layout.valid_per_partition().tolist())
    assert paper.tokens.shape[0] == sum(budgets) and len(paper.kept) == sum(budgets) - 4
    base = paper.kept[: budgets[0] - 1]
    assert base.tolist() == sorted(base.tolist()) and base.max() < 576
    position = {c: i for i, c in enumerate(layout.candidates.tolist())}
    sub = [position[k] for k in paper.kept[budgets[0] - 1 :].tolist()]
    assert sub == sorted(sub)  # canvas raster order across the three sub-images
    (ref,) = run(batch, "prumerge", None, "reference")
    attention = batch.cls_attention(3, heads=1)[:, 0]
    counts = [outlier_count_numpy(a) for a in attention]
    assert ref.tokens.shape[0] == sum(counts) + 4 and len(ref.kept) == sum(counts)
    first = ref.kept[: counts[0]]
    assert torch.equal(first, torch.topk(attention[0], counts[0]).indices)


def test_plus_stride_refuses_where_the_released_code_fails():
    assert plus_stride(10, 576) == int(int(1 / (10 / 576)) / 3)
    with pytest.raises(ValueError, match="r = 0"):
        plus_stride(0, 576)
    with pytest.raises(ValueError, match="stride 0"):
        plus_stride(300, 576)  # int(1 / 0.52) = 1 -> int(1 / 3) = 0


def test_prumerge_plus_budgeted_fills_with_evenly_spaced_tokens(tiny):
    batch = fake_batch(tiny.model.config, [(600, 600)], layers=(3,))
    (plus,) = run(batch, "prumerge+", 0.3)
    (plain,) = run(batch, "prumerge", 0.3)
    assert plus.tokens.shape == plain.tokens.shape
    outliers = outlier_counts(batch.cls_attention(3, heads=1)[:, 0], torch.ones(5, 576, dtype=torch.bool))
    base = set(plus.kept[plus.kept < 576].tolist())
    top = torch.topk(batch.cls_attention(3, heads=1)[0, 0], int(outliers[0])).indices.tolist()
    assert set(top) <= base  # every outlier kept, the rest spread out
    spread = sorted(base - set(top))
    gaps = [b - a for a, b in pairwise(spread)]
    assert max(gaps) <= 3 * (576 // len(base))


def test_reference_fidelity_rules():
    with pytest.raises(ValueError, match="adaptive only"):
        check_point(METHODS["prumerge"], 0.2, "reference")
    with pytest.raises(ValueError, match="needs a numeric budget"):
        check_point(METHODS["hired"], None, "paper")
    with pytest.raises(ValueError, match="no 'reference' fidelity"):
        check_point(METHODS["random"], 0.2, "reference")


# --- HiRED reference against the transcription -----------------------------------------------------


@pytest.mark.parametrize("size", [(600, 600), (336, 1008), (1008, 336), (300, 1000)])
@pytest.mark.parametrize("budget", [0.1, 0.2, 0.4])
def test_hired_reference_budgets_equal_the_transcription(tiny, size, budget):
    layout = image_layout(size, tiny.model.config)
    g = torch.Generator().manual_seed(7)
    init = torch.rand(576, generator=g)
    final = torch.rand(layout.partitions, 576, generator=g)
    kept = select_hired_reference(layout, init, final, budget, 0.5)
    budgets = hired_reference_budgets(layout.partitions, layout.grid, init.tolist(), budget, 0.5)
    chosen = torch.zeros(layout.partitions * 576, dtype=torch.bool)
    for p, k in enumerate(budgets):
        chosen[p * 576 + torch.topk(final[p], k).indices] = True
    expected = [c for c in layout.candidates.tolist() if chosen[c]]  # un-padding drops padding picks
    assert kept.tolist() == expected
    assert len(kept) <= int(layout.partitions * 576 * budget)


RELEASE_CASES = [
    (size, budget) for size in [(600, 600), (396, 704), (704, 396)] for budget in (0.1, 0.2, 0.4)
]


def fp16_batch_with_ties(config, size, seed):
    """A half-precision VisionBatch whose CLS attention ties: every fourth patch key copies its neighbour's
    (exact ties in any dtype), and fp16 rounding makes more."""
    batch = fake_batch(config, [size], seed=seed, dtype=torch.float16)
    plant_key_ties(batch)
    return batch


def test_hired_reference_equals_the_release_on_fp16_ties(tiny):
    """Reference HiRED keeps what the release keeps, token for token and in its order, on fp16 scores
    full of ties (its dtype, torch.topk's tie order, its int() un-padding: 704 x 396 loses 96 tokens)."""
    params = method_params(METHODS["hired"], SHAPE)
    differs_in_float32 = 0
    for i, (size, budget) in enumerate(RELEASE_CASES):
        batch = fp16_batch_with_ties(tiny.model.config, size, seed=i)
        (selection,) = run(batch, "hired", budget, "reference")
        layout = batch.layouts[0]
        expected = hired_release_kept(
            batch.queries, batch.keys, batch.heads, layout.grid, size, budget, 0.5, 0, params["l_final"]
        )
        assert selection.kept.tolist() == expected, f"{size} at {budget}"
        init, final = (batch.cls_attention(layer).sum(1) for layer in (0, params["l_final"]))
        differs_in_float32 += select_hired_reference(layout, init[0], final, budget, 0.5).tolist() != expected
    assert differs_in_float32 > 0  # the ties matter: float32 scores would keep other tokens


def test_reference_uses_flat_chunks_paper_uses_regions(tiny):
    """Base attention in the top 12 rows (288 tokens = the reference mask size), 1x3 grid. The released
    code counts flat raster chunks of 192 tokens (8 rows): 192, 96, 0 -> sub budgets 2:1:0. Paper mode's
    column bands each hold a third of the hot rows -> an even split."""
    layout = image_layout((336, 1008), tiny.model.config)
    init = torch.zeros(24, 24)
    init[:12] = torch.rand(12, 24, generator=torch.Generator().manual_seed(1)) + 1
    init = init.flatten()
    final = torch.rand(4, 576, generator=torch.Generator().manual_seed(0))
    ref = select_hired_reference(layout, init, final, 0.2, 0.5)
    first, second, third = torch.bincount(ref // 576, minlength=4)[1:].tolist()
    assert third == 0 and abs(first - 2 * second) <= 1
    paper = layout.candidates[select_hired(layout, init, final, len(ref), 0.5)]
    paper_counts = torch.bincount(paper // 576, minlength=4)[1:].tolist()
    assert max(paper_counts) - min(paper_counts) <= 1


def test_prumerge_plus_adaptive_without_outliers_is_an_error(tiny):
    """Zero CLS queries: uniform attention, no outliers, r = 0, where the released code divides by zero."""
    batch = fake_batch(tiny.model.config, [(600, 600)], layers=(3,))
    batch.queries[3][:, 0] = 0
    with pytest.raises(ValueError, match="r = 0"):
        run(batch, "prumerge+", None)
    (sel,) = run(batch, "prumerge", None)  # PruMerge alone keeps no outlier: one summary token per partition
    assert sel.tokens.shape[0] == 5 and len(sel.kept) == 0
