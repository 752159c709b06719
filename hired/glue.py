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
from hired.shape import VisionShape, shape_of
from hired.spec import Method, Selection


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
    full: list[int]  # N_full per sample, of the picture as given (before a method's resize)
    visual: torch.Tensor  # (B, L) bool: which prompt positions hold visual tokens
    entering: list[int] | None = None  # LLM-stage methods: the visual tokens entering layer 0 (kept: from K)


def _no_mark(_name: str) -> None:
    return None


def uses_stock_path(method: Method, budget: float | None, fidelity: str) -> bool:
    """Stock LLaVA-Next (newlines included): `none` or budget 1.0, in paper fidelity.

    The released HiRED code has its own full path (all candidates, no newlines): reference fidelity.
    """
    return fidelity == "paper" and (method.name == "none" or (budget is not None and budget >= 1.0))


def picture_sizes(pixels, pictures) -> list[tuple[int, int]]:
    """(height, width) per picture: the anyres processor says so; CLIP's (LLaVA-1.5) does not."""
    if "image_sizes" in pixels:
        return [tuple(s) for s in pixels["image_sizes"].tolist()]
    return [(img.height, img.width) for img in pictures]


def shown_pictures(method: Method, images: list, budget: float | None, params: dict, fidelity: str, config):
    """(pictures the model is shown, base-only flags): a method with a `prepare` step (resize) changes
    them before preprocessing; every other method shows them as they are."""
    if method.prepare is None or uses_stock_path(method, budget, fidelity):
        return images, [False] * len(images)
    plan = method.prepare([img.size for img in images], budget, params, config)
    shown = [
        img if size is None else img.resize(size, resample=3)
        for img, (size, _) in zip(images, plan, strict=True)
    ]
    return shown, [base_only for _, base_only in plan]


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
    base_only: list[bool] | None = None,
    source_sizes: list[tuple[int, int]] | None = None,
) -> PreparedBatch:
    """Vision, selection and projection for one batch; `mark` is called after each of those phases.

    budget: fraction of visual tokens kept, or None for a method's adaptive count. base_only and
    source_sizes ((height, width) before a resize) come from `shown_pictures`.
    """
    config = model.config
    # an LLM-stage method gets every visual token; it drops them inside the language model
    stock = uses_stock_path(method, budget, fidelity) or method.stage == "llm"
    vision = vision_pass(
        model, pixel_values, image_sizes, set() if stock else method.layers(params), base_only
    )
    vision.source_sizes = source_sizes
    layouts = vision.layouts
    inner = model.model
    mark("vision")
    if stock:
        mark("select")
        projected = inner.multi_modal_projector(vision.features).split(vision.partitions)
        features = [p.flatten(0, 1) for p in projected]  # LLaVA-1.5: one partition, as it is
        if hasattr(inner, "pack_image_features"):  # LLaVA-Next: un-padding and newline tokens
            select = config.vision_feature_select_strategy
            features, _ = inner.pack_image_features(
                projected, torch.tensor(image_sizes), select, inner.image_newline
            )
        selections = None
    else:
        selections = method.select(vision, budget, fidelity, params)
        mark("select")
        features = project_selections(inner.multi_modal_projector, selections)
    kept = [f.shape[0] for f in features]
    input_ids, attention_mask = expand_prompts(prompt_ids, kept, config.image_token_id, pad_id(model))
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    embeds = inner.get_input_embeddings()(input_ids)
    visual = input_ids == config.image_token_id
    # row-major order over the batch: sample i's placeholders take exactly sample i's features
    embeds[visual] = torch.cat(features).to(embeds.dtype)
    mark("project")
    prompt_tokens = attention_mask.sum(dim=1).tolist()
    if source_sizes is None and not any(base_only or []):  # the pictures encoded are the originals
        full = [layout.n_full for layout in layouts]
    else:  # a resized or base-only picture: N_full is the original picture's
        sources = source_sizes or [layout.image_size for layout in layouts]
        full = [image_layout(tuple(size), config).n_full for size in sources]
    return PreparedBatch(embeds, attention_mask, layouts, kept, prompt_tokens, selections, full, visual)


def vision_pass(model, pixel_values, image_sizes, layers: set[int], base_only: list[bool] | None = None):
    """The vision tower over every partition to encode (a base-only picture: its base alone), with the
    layers a method reads hooked and the projector at hand (hired.capture.VisionBatch)."""
    flags = base_only or [False] * len(image_sizes)
    layouts = [image_layout(tuple(size), model.config, f) for size, f in zip(image_sizes, flags, strict=True)]
    vision = encode_images(model, pixel_values.to(model.device), layouts, layers)
    vision.project = model.model.multi_modal_projector
    vision.newline = getattr(model.model, "image_newline", None)
    return vision


def project_selections(projector, selections: list[Selection]) -> list[torch.Tensor]:
    """Each selection's LLM inputs: one projector call for all that are not projected already."""
    pending = [s.tokens for s in selections if s.projected is None]
    fresh = iter(projector(torch.cat(pending)).split([len(t) for t in pending])) if pending else iter(())
    return [s.projected if s.projected is not None else next(fresh) for s in selections]


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
