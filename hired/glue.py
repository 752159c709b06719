"""Puts a method between LLaVA-Next's vision tower and its language model, without patching transformers.

The vision tower, the method and the projector run here; each sample's prompt gets exactly as
many image placeholders as its own kept tokens, and its features are written into its own
placeholder positions. The language model then runs through `generate(inputs_embeds=...)`,
which transformers 5.17 and later support alike (5.17 has no `mm_encoder_outputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hired.capture import encode_images
from hired.layout import ImageLayout, image_layout
from hired.spec import Method, Selection, VisionShape, shape_of


def vision_shape(model) -> VisionShape:
    return shape_of(model.config)


@dataclass
class PreparedBatch:
    """The language model's input for one request, and what each sample kept."""

    inputs_embeds: torch.Tensor  # (B, L, D), left-padded
    attention_mask: torch.Tensor  # (B, L)
    layouts: list[ImageLayout]
    kept: list[int]  # visual tokens the LLM receives, per sample
    prompt_tokens: list[int]  # full prompt length (text + visual tokens), per sample
    selections: list[Selection] | None  # None on the stock path


def _no_mark(_name: str) -> None:
    return None


def uses_stock_path(method: Method, budget: float | None, fidelity: str) -> bool:
    """Stock LLaVA-Next (newlines included): `none` or budget 1.0, in paper fidelity.

    The released HiRED code has its own full path (all candidates, no newlines): reference fidelity.
    """
    return fidelity == "paper" and (method.name == "none" or (budget is not None and budget >= 1.0))


@torch.inference_mode()
def prepare_batch(
    model,
    pixel_values: torch.Tensor,
    image_sizes: list[tuple[int, int]],
    prompt_ids: list[list[int]],
    method: Method,
    budget: float | None,
    params: dict,
    fidelity: str = "paper",
    mark: Callable[[str], None] = _no_mark,
) -> PreparedBatch:
    """Vision, selection and projection for one batch; `mark` is called after each of those phases.

    budget: fraction of visual tokens kept, or None for a method's adaptive count.
    """
    config = model.config
    layouts = [image_layout(tuple(size), config) for size in image_sizes]
    stock = uses_stock_path(method, budget, fidelity)
    layers = set() if stock else method.layers(params)
    vision = encode_images(model, pixel_values.to(model.device), layouts, layers)
    mark("vision")
    inner = model.model
    if stock:
        mark("select")
        projected = inner.multi_modal_projector(vision.features).split(vision.partitions)
        features, _ = inner.pack_image_features(
            projected, torch.tensor(image_sizes), config.vision_feature_select_strategy, inner.image_newline
        )
        selections = None
    else:
        selections = method.select(vision, budget, fidelity, params)
        mark("select")
        counts = [s.tokens.shape[0] for s in selections]
        features = inner.multi_modal_projector(torch.cat([s.tokens for s in selections])).split(counts)
    kept = [f.shape[0] for f in features]
    input_ids, attention_mask = expand_prompts(prompt_ids, kept, config.image_token_id, pad_id(model))
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    embeds = inner.get_input_embeddings()(input_ids)
    # row-major order over the batch: sample i's placeholders take exactly sample i's features
    embeds[input_ids == config.image_token_id] = torch.cat(features).to(embeds.dtype)
    mark("project")
    prompt_tokens = attention_mask.sum(dim=1).tolist()
    return PreparedBatch(embeds, attention_mask, layouts, kept, prompt_tokens, selections)


def pad_id(model) -> int:
    for config in (model.generation_config, model.config.text_config, model.config):
        value = getattr(config, "pad_token_id", None)
        if value is not None:
            return int(value)
    return 0


def expand_prompts(
    prompt_ids: list[list[int]], counts: list[int], image_token_id: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each prompt's single image token by counts[i] placeholders; left-pad to one length."""
    if pad == image_token_id:
        raise ValueError("the pad token id must differ from the image token id")
    rows = []
    for ids, n in zip(prompt_ids, counts, strict=True):
        if ids.count(image_token_id) != 1:
            raise ValueError(f"a prompt must hold exactly one image token, found {ids.count(image_token_id)}")
        at = ids.index(image_token_id)
        rows.append(ids[:at] + [image_token_id] * n + ids[at + 1 :])
    length = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    return input_ids, attention_mask
