"""The model presets: published architectures, their tokenizers' prompt lengths, grouped-query attention
in the memory model, and every vision-stage method on the Mistral-shaped and LLaVA-1.5-shaped twins."""

import math

import pytest
import torch
from typer.testing import CliRunner

from hired.glue import expand_prompts, pad_id, picture_sizes, prepare_batch, shown_pictures, vision_shape
from hired.methods import METHODS, method_params
from profiler.capacity.model import model_shape
from profiler.cli import app
from tests.conftest import QUICK
from workloads.images import synthetic_images
from workloads.models import load_model
from workloads.presets import PRESETS

RUNNER = CliRunner()
PROMPT = "What is shown in this image?"
MIXED = [(600, 600), (1000, 300), (336, 1008)]

# Total parameters of each published checkpoint: computed from its published config.json (every CLIP
# layer, the projector, LLaVA-Next's image_newline, an untied lm_head) and agreeing with the totals the
# llava-hf model cards round to (7.06B, 7.57B, 34.8B) and with the float16 shard sizes (2 bytes per
# parameter: mistral 4 shards, 15.13 GB; vicuna 14.13 GB).
PUBLISHED = {
    "llava-next-7b": 7_063_431_168,
    "llava-next-mistral-7b": 7_566_747_648,
    "llava-next-34b": 34_752_083_968,
    "llava-1.5-7b": 7_063_427_072,
}
# The real tokenizers' ids for the default question (see workloads/presets.py for how each was obtained):
# Vicuna v1.6 19 (non-legacy), Mistral 19, Yi 25 (no BOS), LLaVA-1.5's legacy Vicuna 20.
PROMPT_TOKENS = {"llava-next-7b": 19, "llava-next-mistral-7b": 19, "llava-next-34b": 25, "llava-1.5-7b": 20}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_match_the_published_checkpoints(name):
    assert model_shape(PRESETS[name].config()).parameters == PUBLISHED[name]


def test_kv_bytes_per_token_follow_the_kv_heads():
    vicuna = model_shape(PRESETS["llava-next-7b"].config())
    mistral = model_shape(PRESETS["llava-next-mistral-7b"].config())
    yi = model_shape(PRESETS["llava-next-34b"].config())
    # K and V x layers x KV heads x head dim x 2 bytes: 2*32*32*128*2 and 2*32*8*128*2 and 2*60*8*128*2
    assert vicuna.kv_bytes_per_token(2) == 512 * 1024  # 0.5 MiB
    assert mistral.kv_bytes_per_token(2) == 128 * 1024  # 0.125 MiB: 8 KV heads for 32 query heads
    assert yi.kv_bytes_per_token(2) == 240 * 1024
    assert (mistral.kv_heads, mistral.head_dim, yi.kv_heads, yi.layers) == (8, 128, 8, 60)


@pytest.mark.parametrize("name", list(PROMPT_TOKENS))
def test_prompt_lengths_equal_the_real_tokenizers(name):
    from workloads.models import prompt_text_tokens

    assert prompt_text_tokens(name, PROMPT) + 1 == PROMPT_TOKENS[name]  # + the image placeholder


def test_offline_ids_are_the_real_ids():
    mistral = load_model("tiny-mistral", "random", "float32", "cpu")
    real = [1, 733, 16289, 28793, 28705, 32000, 28705, 13]  # <s> ▁[ INST ] ▁ <image> ▁ <0x0A>
    real += [3195, 349, 4894, 297, 456, 3469, 28804, 733, 28748, 16289, 28793]  # What ... ? ▁[ / INST ]
    assert mistral.prompt_ids(PROMPT) == real
    one = load_model("tiny-llava-1.5", "random", "float32", "cpu")
    assert one.prompt_ids(PROMPT)[:8] == [1, 3148, 1001, 29901, 29871, 32000, 29871, 13]
    assert len(one.prompt_ids("Describe it in great detail, please.")) == 20 - 7 + 8  # other words: one each


@pytest.fixture(scope="module", params=["tiny-mistral", "tiny-llava-1.5"])
def twin(request):
    return load_model(request.param, "random", "float32", "cpu", seed=0)


def prepared(lm, images, method, budget):
    params = method_params(METHODS[method], vision_shape(lm.model))
    shown, base_only = shown_pictures(METHODS[method], images, budget, params, "paper", lm.model.config)
    pixels = lm.image_processor(shown, return_tensors="pt")
    ids = [lm.prompt_ids(PROMPT)] * len(images)
    sources = [(img.height, img.width) for img in images]
    return prepare_batch(
        lm.model,
        pixels["pixel_values"],
        picture_sizes(pixels, shown),
        ids,
        METHODS[method],
        budget,
        params,
        base_only=base_only,
        source_sizes=sources,
    )


def vision_methods(lm):
    one_partition = not PRESETS[lm.name].anyres
    return [
        name
        for name, m in METHODS.items()
        if m.stage == "vision" and name != "none" and not (one_partition and m.needs_anyres)
    ]


def test_every_vision_method_keeps_exact_counts(twin):
    images = synthetic_images(MIXED, 3, seed=2)
    for method in vision_methods(twin):
        batch = prepared(twin, images, method, 0.2)
        exact = [math.floor(0.2 * n + 0.5) for n in batch.full]
        if method in ("pool", "resize"):  # the nearest count the geometry allows
            assert all(abs(k - e) <= 0.1 * e for k, e in zip(batch.kept, exact, strict=True)), method
        else:
            assert batch.kept == exact, method
    if not PRESETS[twin.name].anyres:
        assert batch.full == [576, 576, 576]  # LLaVA-1.5: one partition of 576 tokens, whatever the size


@pytest.mark.slow
def test_budget_one_is_the_stock_model_bit_for_bit(twin):
    images = synthetic_images(MIXED, 3, seed=5)
    ours = prepared(twin, images, "hired", 1.0)
    pixels = twin.image_processor(images, return_tensors="pt")
    ids = [twin.prompt_ids(PROMPT)] * 3
    input_ids, mask = expand_prompts(ids, ours.kept, twin.model.config.image_token_id, pad_id(twin.model))
    with torch.inference_mode():
        stock = twin.model(input_ids=input_ids, attention_mask=mask, **pixels).logits
        mine = twin.model(inputs_embeds=ours.inputs_embeds, attention_mask=ours.attention_mask).logits
    assert torch.equal(stock, mine)


@pytest.mark.slow
def test_mixed_batch_equals_one_by_one(twin):
    images = synthetic_images(MIXED, 3, seed=11)
    for method in ("hired", "visionzip", "prumerge", "fastv", "dart"):
        together = prepared(twin, images, method, 0.2)
        batched = greedy(twin, together, method)
        for i, image in enumerate(images):
            alone = prepared(twin, [image], method, 0.2)
            assert greedy(twin, alone, method)[0].tolist() == batched[i].tolist(), (method, i)


def greedy(lm, batch, method):
    """Five greedy tokens; an LLM-stage method's hooks installed for the request (grouped-query
    attention on the Mistral twin: its KV heads are shared by two query heads each)."""
    from hired.llm import pruning
    from profiler.measure.request import generate_tokens

    params = method_params(METHODS[method], vision_shape(lm.model))
    valid = batch.attention_mask.bool()
    with pruning(lm.model, METHODS[method], params, 0.2, batch.visual, valid, batch.full):
        return generate_tokens(lm.model, batch, 5)


def test_one_partition_models_refuse_what_needs_partitions(tmp_path):
    args = ["--model", "tiny-llava-1.5", "--device", "cpu", "--output", str(tmp_path / "r.jsonl")]
    refused = RUNNER.invoke(app, ["run", *args, "--method", "globalcom2"])
    assert refused.exit_code == 2 and "needs LLaVA-Next's sub-image partitions" in refused.stderr
    listed = RUNNER.invoke(app, ["methods"])
    assert "LLaVA-Next only" in listed.stdout
    ran = RUNNER.invoke(
        app,
        [
            "run",
            *args,
            "--method",
            "all",
            "--batch",
            "1",
            *QUICK,
        ],
    )
    assert ran.exit_code == 0, ran.stderr
    assert "resize" not in ran.stdout and "globalcom2" not in ran.stdout and "visionzip" in ran.stdout


def test_predict_puts_models_side_by_side():
    result = RUNNER.invoke(
        app,
        [
            "predict",
            "--gpu-memory",
            "24GiB",
            "--model",
            "llava-next-7b,llava-next-mistral-7b",
            "--budget",
            "0.2",
            "--method",
            "hired",
        ],
    )
    assert result.exit_code == 0, result.stderr
    none = next(line for line in result.stdout.splitlines() if line.startswith("│ none"))
    cells = [c.strip() for c in none.strip("│").split("│")]
    vicuna_largest, mistral_largest = int(cells[3]), int(cells[5])
    assert mistral_largest > 2 * vicuna_largest  # a 4x smaller KV cache per token
