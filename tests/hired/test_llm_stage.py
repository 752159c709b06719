"""FastV and DART inside the language model: the oracle ranking, a KV cache that stays right, SDPA kept,
mixed batches, exact counts, and budget 1.0 equal to the stock path."""

import math

import pytest
import torch
import transformers.integrations.sdpa_attention as sdpa_module

from hired.glue import prepare_batch, vision_shape
from hired.llm import LayerInputs, Pruning, pruning
from hired.methods import METHODS, method_params
from hired.spec import Method
from profiler.measure.request import generate_tokens
from workloads.images import synthetic_images
from workloads.models import load_model

PROMPT = "What is shown in this image?"


def prepared(lm, images, method="fastv", budget=0.2):
    pixels = lm.image_processor(images, return_tensors="pt")
    sizes = [tuple(s) for s in pixels["image_sizes"].tolist()]
    ids = [lm.prompt_ids(PROMPT)] * len(images)
    params = method_params(METHODS[method], vision_shape(lm.model))
    return prepare_batch(
        lm.model, pixels["pixel_values"], sizes, ids, METHODS[method], budget, params
    ), params


def hooks(lm, batch, method, params, budget=0.2):
    return pruning(
        lm.model, METHODS[method], params, budget, batch.visual, batch.attention_mask.bool(), batch.full
    )


@pytest.fixture(scope="module")
def eager():
    """The tiny model again (same seed, same weights) with eager attention: the oracle's attention weights."""
    lm = load_model("tiny", "random", "float32", "cpu", seed=0)
    lm.model.set_attn_implementation("eager")
    return lm


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 3])
def test_fastv_keeps_what_eager_attention_ranks_first(tiny, eager, k):
    images = synthetic_images([(600, 600)], 1, seed=4)
    batch, params = prepared(tiny, images)
    params = {**params, "layer": k}
    with torch.inference_mode():
        out = eager.model(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, output_attentions=True
        )
    attention = out.attentions[k - 1][0, :, -1].mean(dim=0)  # layer K-1, last token, averaged over heads
    visual = batch.visual[0].nonzero()[:, 0]
    count = math.floor(0.2 * batch.full[0] + 0.5)
    ranked = sorted(visual.tolist(), key=lambda j: (-float(attention[j]), j))[:count]
    with torch.inference_mode(), hooks(tiny, batch, "fastv", params) as inside:
        tiny.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, use_cache=True)
    assert inside.chosen[0].nonzero()[:, 0].tolist() == sorted(ranked)
    assert inside.kept == [count]


class FixedKeep:
    """A method keeping a given set of visual tokens (padded with False for tokens generated later)."""

    def __init__(self, chosen):
        self.chosen = chosen

    def __call__(self, inputs: LayerInputs, params: dict):
        grown = inputs.visual.shape[1] - self.chosen.shape[1]
        return torch.cat([self.chosen, self.chosen.new_zeros(len(self.chosen), grown)], dim=1)


@pytest.mark.parametrize("method", ["fastv", "dart"])
def test_cached_decoding_equals_recomputing_the_pruned_sequence(tiny, method):
    images = synthetic_images([(1000, 300)], 1, seed=8)
    batch, params = prepared(tiny, images, method)
    steps = 6
    with torch.inference_mode(), hooks(tiny, batch, method, params) as inside:
        out = tiny.model.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0].tolist()
    fixed = Method("fixed", "", "llm", "", keep=FixedKeep(inside.chosen))
    embed = tiny.model.get_input_embeddings()
    for t in range(steps):  # no cache: the whole pruned sequence recomputed for every token
        generated = embed(torch.tensor([tokens[:t]], dtype=torch.long))
        embeds = torch.cat([batch.inputs_embeds, generated], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        visual = torch.cat([batch.visual, torch.zeros(1, t, dtype=torch.bool)], dim=1)
        with torch.inference_mode(), Pruning(tiny.model, fixed, params, 0.2, visual, mask.bool(), batch.full):
            logits = tiny.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[:, -1]
        torch.testing.assert_close(logits, out.logits[t], rtol=1e-4, atol=1e-4)
        assert int(logits.argmax()) == tokens[t]


@pytest.mark.parametrize("method", ["fastv", "dart"])
def test_mixed_batch_equals_one_by_one(tiny, method):
    images = synthetic_images([(600, 600), (1000, 300), (336, 1008)], 3, seed=11)

    def greedy(selected):
        batch, params = prepared(tiny, selected, method)
        with hooks(tiny, batch, method, params) as inside:
            return generate_tokens(tiny.model, batch, 6), inside.kept

    together, kept = greedy(images)
    for i, image in enumerate(images):
        alone, alone_kept = greedy([image])
        assert alone_kept == [kept[i]] and alone[0].tolist() == together[i].tolist(), f"sample {i} differs"
    assert len(set(kept)) == 3  # the samples really keep different counts


def test_exact_counts_and_dart_pivots(tiny):
    images = synthetic_images([(600, 600), (1920, 1080)], 2, seed=3)
    for method in ("fastv", "dart"):
        for budget in (0.05, 0.3):
            batch, params = prepared(tiny, images, method, budget)
            with torch.inference_mode(), hooks(tiny, batch, method, params, budget) as inside:
                generate_tokens(tiny.model, batch, 2)
            assert inside.kept == [math.floor(budget * n + 0.5) for n in batch.full]
            assert not (inside.chosen & ~batch.visual).any()  # only visual tokens are dropped or kept


def test_sdpa_stays_on_and_no_attention_matrix_is_built(tiny, monkeypatch):
    images = synthetic_images([(600, 600)], 2, seed=1)
    batch, params = prepared(tiny, images)
    before = tiny.model.config.text_config._attn_implementation
    weights, calls = [], []
    real = sdpa_module.sdpa_attention_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", counting)
    handles = [
        layer.self_attn.register_forward_hook(lambda m, i, o: weights.append(o[1]))
        for layer in tiny.model.model.language_model.layers
    ]
    try:
        with hooks(tiny, batch, "fastv", params):
            generate_tokens(tiny.model, batch, 3)
    finally:
        for h in handles:
            h.remove()
    assert before == "sdpa" and tiny.model.config.text_config._attn_implementation == "sdpa"
    assert calls and all(w is None for w in weights)  # SDPA returns no attention weights: none were built


@pytest.mark.slow
def test_budget_one_is_the_stock_path(tiny):
    images = synthetic_images([(600, 600), (1000, 300)], 2, seed=5)
    stock, _ = prepared(tiny, images, "none", 1.0)
    batch, params = prepared(tiny, images, "fastv", 1.0)
    with torch.inference_mode(), hooks(tiny, batch, "fastv", params, 1.0) as inside:
        ours = tiny.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
    reference = tiny.model(inputs_embeds=stock.inputs_embeds, attention_mask=stock.attention_mask).logits
    assert inside is None and torch.equal(ours, reference)


def test_token_layer_share_in_the_record(tiny):
    from profiler.measure.runner import Runner
    from profiler.measure.settings import MeasureSettings
    from workloads.plan import Workload
    from workloads.point import Point

    runner = Runner(tiny, "r", {})
    images = synthetic_images([(600, 600)], 1, seed=2)
    record = runner.measure(
        Workload(images, PROMPT, 2), Point("fastv", 0.2, {"layer": 1}), MeasureSettings(warmup=0, repeats=1)
    )
    visual = record["metrics"]["visual_tokens"]
    layers = tiny.model.config.text_config.num_hidden_layers
    assert visual["kept"] == [576] and visual["full"] == [2880]
    assert visual["token_layer_share"] == [pytest.approx((1 * 2928 + (layers - 1) * 576) / (layers * 2880))]


def test_dart_pivots_are_per_sample_whatever_the_other_prompts():
    """A sample's DART selection is the one it gets alone: a prompt with 2 text tokens after the image
    in the same batch leaves another sample its 4 text pivots (and its own share of the quota)."""
    torch.manual_seed(0)
    width, n_visual = 16, 40
    texts = (7, 2, 0)  # text tokens after the image: plenty, fewer than the pivots asked, none
    samples = []
    for n_text in texts:
        n = 1 + n_visual + n_text
        samples.append(
            {
                "hidden": torch.randn(n, width),
                "keys": torch.randn(2, n, width // 2),
                "visual": torch.tensor([False] + [True] * n_visual + [False] * n_text),
            }
        )
    params = {"pivots_image": 4, "pivots_text": 4, "pivot_rule": "l1"}
    counts = torch.tensor([9, 13, 6])

    def inputs(group, group_counts):
        length = max(len(s["visual"]) for s in group)

        def left_pad(t, dim):
            pad = length - t.shape[dim]
            return torch.cat([t.new_zeros(*t.shape[:dim], pad, *t.shape[dim + 1 :]), t], dim)

        return LayerInputs(
            hidden=torch.stack([left_pad(s["hidden"], 0) for s in group]),
            keys=torch.stack([left_pad(s["keys"], 1) for s in group]),
            last_query=torch.zeros(len(group), 4, width // 2),
            visual=torch.stack([left_pad(s["visual"], 0) for s in group]),
            valid=torch.stack([left_pad(torch.ones(len(s["visual"]), dtype=torch.bool), 0) for s in group]),
            counts=group_counts,
            norm=lambda x: x,
        )

    together = METHODS["dart"].keep(inputs(samples, counts), params)
    assert together.sum(dim=1).tolist() == counts.tolist()
    length = together.shape[1]
    for i, sample in enumerate(samples):
        alone = METHODS["dart"].keep(inputs([sample], counts[i : i + 1]), params)[0]
        assert together[i, length - len(alone) :].tolist() == alone.tolist(), f"sample {i} differs"
