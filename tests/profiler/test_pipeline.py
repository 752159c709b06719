"""The glue between vision tower, method and LLM: per-sample correctness and the stock path."""

import pytest
import torch

from hired.glue import expand_prompts, prepare_batch, shown_pictures, vision_shape
from hired.methods import METHODS, method_params
from workloads.images import synthetic_images

MIXED = [(600, 600), (1000, 300), (336, 1008)]  # (width, height): 2x2, 1x3 and 3x1 grids


def prepared(lm, images, method, budget, fidelity="paper"):
    params = method_params(METHODS[method], vision_shape(lm.model))
    shown, base_only = shown_pictures(METHODS[method], images, budget, params, fidelity, lm.model.config)
    pixels = lm.image_processor(shown, return_tensors="pt")
    sizes = [tuple(s) for s in pixels["image_sizes"].tolist()]
    ids = [lm.prompt_ids("What is shown in this image?")] * len(images)
    sources = [(img.height, img.width) for img in images]
    return prepare_batch(
        lm.model,
        pixels["pixel_values"],
        sizes,
        ids,
        METHODS[method],
        budget,
        params,
        fidelity,
        base_only=base_only,
        source_sizes=sources,
    )


def greedy(lm, batch, new_tokens=6):
    return lm.model.generate(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )


@pytest.mark.parametrize(
    ("method", "budget", "fidelity"),
    [
        ("none", 1.0, "paper"),
        ("none", 1.0, "reference"),
        ("hired", 0.2, "paper"),
        ("hired", 0.05, "paper"),
        ("hired", 0.2, "reference"),
        ("prumerge", 0.2, "paper"),
        ("prumerge+", 0.2, "paper"),
        ("prumerge", None, "paper"),
        ("prumerge", None, "reference"),
        ("random", 0.2, "paper"),
        ("pool", 0.2, "paper"),
        ("visionzip", 0.2, "paper"),
        ("divprune", 0.2, "paper"),
        ("globalcom2", 0.2, "paper"),
        ("resize", 0.1, "paper"),
        ("resize", 0.4, "paper"),
    ],
)
def test_mixed_batch_equals_one_by_one(tiny, method, budget, fidelity):
    images = synthetic_images(MIXED, 3, seed=11)
    together = prepared(tiny, images, method, budget, fidelity)
    batched = greedy(tiny, together)
    for i, image in enumerate(images):
        alone = prepared(tiny, [image], method, budget, fidelity)
        assert alone.kept == [together.kept[i]]
        assert greedy(tiny, alone)[0].tolist() == batched[i].tolist(), f"sample {i} differs when batched"
    assert len(set(together.kept)) >= 2  # the samples really keep different counts


def stock_inputs(lm, images, kept):
    """What transformers' own LLaVA-Next path gets: expanded prompt ids plus pixel values."""
    pixels = lm.image_processor(images, return_tensors="pt")
    ids = [lm.prompt_ids("What is shown in this image?")] * len(images)
    input_ids, mask = expand_prompts(ids, kept, lm.model.config.image_token_id, 0)
    return {"input_ids": input_ids, "attention_mask": mask, **pixels}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hired", "none"])
def test_budget_one_is_the_stock_path_bit_for_bit(tiny, method):
    images = synthetic_images(MIXED, 3, seed=5)
    ours = prepared(tiny, images, method, 1.0)
    stock = stock_inputs(tiny, images, ours.kept)
    with torch.inference_mode():
        stock_logits = tiny.model(**stock).logits
        our_logits = tiny.model(inputs_embeds=ours.inputs_embeds, attention_mask=ours.attention_mask).logits
    assert torch.equal(stock_logits, our_logits)
    stock_tokens = tiny.model.generate(
        **stock, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0
    )
    assert stock_tokens[:, stock["input_ids"].shape[1] :].tolist() == greedy(tiny, ours).tolist()


def test_selection_keeps_dtype_device_and_candidates(tiny):
    images = synthetic_images(MIXED, 3, seed=2)
    batch = prepared(tiny, images, "hired", 0.3)
    width = tiny.model.config.text_config.hidden_size
    assert batch.inputs_embeds.dtype == tiny.model.dtype and batch.inputs_embeds.shape[-1] == width
    for sel, layout in zip(batch.selections, batch.layouts, strict=True):
        assert sel.tokens.dtype == tiny.model.dtype
        assert set(sel.kept.tolist()) <= set(layout.candidates.tolist())  # never a padding token
        assert sel.kept.tolist() == [c for c in layout.candidates.tolist() if c in set(sel.kept.tolist())]
