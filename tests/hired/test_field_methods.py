"""VisionZip, DivPrune, GlobalCom2 and the resize baseline: exact counts, oracles, vision savings."""

import math

import pytest
import torch
from typer.testing import CliRunner

from hired.capture import VisionBatch
from hired.layout import image_layout
from hired.methods import METHODS, check_point, method_params
from hired.methods.divprune import farthest_point
from hired.methods.resize import plan_resize
from hired.shape import VisionShape
from hired.spec import apportion
from profiler.cli import app
from profiler.results.store import read_records
from tests.conftest import QUICK, TINY, plant_key_ties, with_patch_queries
from tests.support.oracles import (
    divprune_greedy,
    globalcom2_image,
    globalcom2_release_image,
    visionzip_partition,
)
from workloads.presets import PRESETS

SHAPE = VisionShape(depth=4, feature_layer=2)
# (height, width): 2x2, 1x3, 3x1 and a padded 16:9 picture
SIZES = [(600, 600), (336, 1008), (1008, 336), (1080, 1920)]
NEW = ["visionzip", "divprune", "globalcom2"]


def fake_batch(config, sizes, width=16, heads=4, seed=0, dtype=torch.float32, layers=(2, 3), project_to=24):
    g = torch.Generator().manual_seed(seed)
    layouts = [image_layout(size, config) for size in sizes]
    s = sum(layout.partitions for layout in layouts)
    projection = torch.randn(width, project_to, generator=g).to(dtype)
    return VisionBatch(
        layouts,
        torch.randn(s, 576, width, generator=g).to(dtype),
        heads,
        {
            layer: with_patch_queries(torch.randn(s, width, generator=g) * 2, seed).to(dtype)
            for layer in layers
        },
        {layer: torch.randn(s, 577, width, generator=g).to(dtype) for layer in layers},
        project=lambda x: x @ projection,
    )


def run(batch, name, budget, shape=SHAPE, **params):
    method = METHODS[name]
    check_point(method, budget, "paper")
    return method.select(batch, budget, "paper", method_params(method, shape, params))


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("budget", [0.05, 0.2, 0.5])
def test_exact_counts_no_padding_dtype_kept(tiny, name, budget):
    batch = fake_batch(tiny.model.config, SIZES, seed=int(budget * 100), dtype=torch.float64)
    for layout, sel in zip(batch.layouts, run(batch, name, budget), strict=True):
        assert sel.tokens.shape == (math.floor(budget * layout.n_full + 0.5), 16)
        assert sel.tokens.dtype == torch.float64 and sel.tokens.device == batch.features.device
        chosen = set(sel.kept.tolist()) | set([] if sel.anchors is None else sel.anchors.tolist())
        assert chosen <= set(layout.candidates.tolist())  # never a padding token
        position = {c: i for i, c in enumerate(layout.candidates.tolist())}
        order = [position[c] for c in sel.kept.tolist()]
        base = [o for o, c in zip(order, sel.kept.tolist(), strict=True) if c < 576]
        assert base == sorted(base) and order[len(base) :] == sorted(order[len(base) :])  # stock order


def test_visionzip_equals_its_token_by_token_oracle_at_7b_shapes():
    config = PRESETS["llava-next-7b"].config()
    batch = fake_batch(config, [(600, 600), (1080, 1920)], width=1024, heads=16, layers=(22,))
    shape = VisionShape(depth=24, feature_layer=22)
    selections = run(batch, "visionzip", 0.1, shape)
    scores = batch.cls_attention(22).sum(1)
    keys = batch.head_mean_keys(22)
    row = 0
    for layout, sel in zip(batch.layouts, selections, strict=True):
        valid = torch.zeros(layout.partitions * 576, dtype=torch.bool)
        valid[layout.candidates] = True
        budgets = apportion(0.1, layout.valid_per_partition().tolist())
        dominant, merged = [], []
        for p in range(layout.partitions):
            d, m = visionzip_partition(
                batch.features[row + p],
                scores[row + p],
                keys[row + p],
                valid.view(-1, 576)[p],
                budgets[p],
                10 / 64,
            )
            dominant += [p * 576 + j for j in d]
            merged.append(m)
        row += layout.partitions
        position = {c: i for i, c in enumerate(layout.candidates.tolist())}
        assert sel.kept.tolist() == sorted(dominant, key=position.get)
        n_base = sum(1 for c in dominant if c < 576)
        flat = batch.features[row - layout.partitions : row].flatten(0, 1)
        expected = torch.cat([flat[sel.kept[:n_base]], merged[0], flat[sel.kept[n_base:]], *merged[1:]])
        torch.testing.assert_close(sel.tokens, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_divprune_equals_the_greedy_loop_at_7b_shapes():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2880, 4096, generator=g)
    x[1, 2000:] = 0  # the second image is shorter: padding rows
    valid = torch.ones(2, 2880, dtype=torch.bool)
    valid[1, 2000:] = False
    counts = torch.tensor([576, 400])
    chosen = farthest_point(x, valid, counts)
    assert sorted(chosen[0].tolist()) == divprune_greedy(x[0], 576)
    assert sorted(chosen[1, :400].tolist()) == divprune_greedy(x[1, :2000], 400)
    assert (chosen[1, 400:] == -1).all()


def test_divprune_selects_on_projector_outputs(tiny):
    batch = fake_batch(tiny.model.config, SIZES[:2])
    selections = run(batch, "divprune", 0.2)
    for layout, sel, features in zip(batch.layouts, selections, batch.split(batch.features), strict=True):
        torch.testing.assert_close(sel.projected, batch.project(sel.tokens))
        candidates = features.flatten(0, 1)[layout.candidates]
        positions = divprune_greedy(batch.project(candidates), sel.tokens.shape[0])
        assert sel.kept.tolist() == layout.candidates[positions].tolist()


def test_globalcom2_equals_its_oracle(tiny):
    batch = fake_batch(tiny.model.config, SIZES, layers=(3,), seed=5)
    logits = batch.cls_attention(3, softmax=False).mean(1)
    for alpha in (0.5, 0.8):
        selections = run(batch, "globalcom2", 0.2, alpha=alpha)
        for layout, sel, own in zip(batch.layouts, selections, batch.split(logits), strict=True):
            assert sel.kept.tolist() == globalcom2_image(layout, own, 0.2, alpha, 10.0)


@pytest.mark.parametrize("size", [(600, 600), (396, 704), (1080, 1920)])
def test_globalcom2_reference_equals_the_release_on_fp16_ties(tiny, size):
    """Reference GlobalCom2 gives the LLM what the release gives it for one image, bit for bit in fp16:
    its head-mean logits, argsort and topk tie orders, int() counts and un-padding, the slots its
    compacted indices name in padded crops, and a newline after every row of the padded canvas."""
    for seed in range(2):
        batch = fake_batch(tiny.model.config, [size], seed=seed, dtype=torch.float16, layers=(3,))
        plant_key_ties(batch)
        batch.newline = torch.randn(24, generator=torch.Generator().manual_seed(seed)).half()
        method = METHODS["globalcom2"]
        check_point(method, 0.2, "reference")
        (selection,) = method.select(batch, 0.2, "reference", method_params(method, SHAPE))
        layout = batch.layouts[0]
        expected = globalcom2_release_image(
            batch.queries[3],
            batch.keys[3],
            batch.heads,
            batch.project(batch.features),
            batch.newline,
            layout.grid,
            size,
            0.2,
            10.0,
        )
        assert torch.equal(selection.projected, expected), f"{size}, seed {seed}"
        newlines = layout.grid[0] * 24  # one per row of the padded canvas
        assert len(selection.kept) == len(expected) - newlines


def test_globalcom2_crops_with_more_thumbnail_score_get_more_tokens(tiny):
    batch = fake_batch(tiny.model.config, [(600, 600)], layers=(3,))
    thumbnail = torch.zeros(24, 24)
    thumbnail[:12, :12] = 40.0  # the top-left crop's region dominates the thumbnail's logits
    batch.queries[3][0, 0] = 0
    batch.keys[3][0, 1:] = 0
    logits = thumbnail.flatten()
    import hired.methods.globalcom2 as g2

    weights = g2.crop_weights(logits, batch.layouts[0], [576] * 4, 10.0)
    assert weights[0] > weights[1] == weights[2] == weights[3]
    assert sum(weights) == pytest.approx(4 * 576)  # on average each crop keeps its share


# --- resize ------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.05, 0.1, 0.2, 0.4, 0.7])
def test_resize_plan_is_nearest_to_the_budget(tiny, budget):
    config = tiny.model.config
    for height, width in SIZES:
        target = math.floor(budget * image_layout((height, width), config).n_full + 0.5)
        plan = plan_resize((width, height), budget, config)
        shown = (height, width) if plan.size is None else (plan.size[1], plan.size[0])
        tokens = plan.grid[0] * plan.grid[1] if plan.base_only else image_layout(shown, config).n_full
        assert tokens == plan.tokens
        for scale in (1.0, 0.75, 0.5, 0.25):  # no other size it could have chosen is nearer
            other = image_layout((max(1, round(height * scale)), max(1, round(width * scale))), config).n_full
            assert abs(plan.tokens - target) <= abs(other - target)
        assert abs(plan.tokens - target) <= abs(576 - target)


def test_resize_encodes_fewer_partitions_and_records_the_achieved_budget(tmp_path, monkeypatch):
    import hired.glue

    encoded = []
    real = hired.glue.encode_images

    def counting(model, pixel_values, layouts, layers):
        encoded.append(sum(layout.partitions for layout in layouts))
        return real(model, pixel_values, layouts, layers)

    monkeypatch.setattr(hired.glue, "encode_images", counting)
    out = tmp_path / "r.jsonl"
    args = [
        "run",
        *TINY,
        *QUICK,
        "--no-agreement",  # the timed requests only
    ]
    result = CliRunner().invoke(
        app, [*args, "--method", "resize", "--budget", "0.1,0.4", "--batch", "1", "--output", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    assert encoded == [5, 1, 3]  # stock 2x2 grid; base alone at 10%; a 1x2 grid at 40%
    _, low, high = read_records(out)
    assert low["metrics"]["visual_tokens"]["kept"] == [289]  # 17 x 17, nearest 288 = 10% of 2880
    assert low["metrics"]["visual_tokens"]["full"] == [2880]
    assert low["metrics"]["visual_tokens"]["achieved_budget"] == [289 / 2880]
    assert high["metrics"]["visual_tokens"]["kept"] == [1152]  # nearest 1152 = 40%: a 1x2 grid


def test_selection_pictures_draw_merged_tokens(tiny, tmp_path):
    from hired.draw import token_states

    batch = fake_batch(tiny.model.config, [(600, 600)])
    (sel,) = run(batch, "visionzip", 0.2)
    states = token_states(batch.layouts[0], sel)
    assert int((states == 3).sum()) == len(sel.anchors) == sel.tokens.shape[0] - len(sel.kept)
