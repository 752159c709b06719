"""The resize baseline: show LLaVA-Next a smaller picture, so it makes fewer partitions and tokens.

Before preprocessing, each picture is downscaled so that LLaVA-Next's own anyres picks the grid
whose token count (candidates, no newline tokens) is nearest round(b * N_full) of the original; below
what the smallest grid gives, only the base partition is encoded, average-pooled to the nearest
square grid. The only baseline that also saves vision-tower time: fewer partitions are encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

from hired.capture import VisionBatch
from hired.layout import ImageLayout, image_layout
from hired.methods.baselines import pool_grid
from hired.spec import Method, Selection, budget_tokens

SCALES = [k / 64 for k in range(64, 0, -1)]  # downscales tried, 1/64 apart


@dataclass(frozen=True)
class ResizePlan:
    size: tuple[int, int] | None  # (width, height) to show the model; None: the picture as it is
    base_only: bool  # encode the base partition alone
    grid: tuple[int, int]  # the base grid is pooled to (rows, cols) when base_only
    tokens: int  # visual tokens the LLM receives


def plan_resize(size: tuple[int, int], budget: float, config) -> ResizePlan:
    """The option whose token count is nearest round(b * N_full) of a (width, height) picture
    (ties: the larger picture)."""
    vision = config.vision_config
    key = (json.dumps(config.image_grid_pinpoints), vision.image_size, vision.patch_size)
    return _plan(tuple(size), budget, key)


@cache
def _plan(size: tuple[int, int], budget: float, key: tuple) -> ResizePlan:
    pinpoints, image_size, patch = key
    config = SimpleNamespace(
        vision_config=SimpleNamespace(image_size=image_size, patch_size=patch),
        image_grid_pinpoints=json.loads(pinpoints),
    )
    width, height = size
    target = budget_tokens(budget, image_layout((height, width), config).n_full)
    options = []
    for scale in SCALES:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        tokens = image_layout((h, w), config).n_full
        options.append(ResizePlan(None if scale == 1 else (w, h), False, (0, 0), tokens))
    side = image_size // patch
    for g in range(side, 0, -1):
        options.append(ResizePlan(None, True, (g, g), g * g))
    return min(options, key=lambda o: abs(o.tokens - target))  # min keeps the first of equals


def prepare(sizes: list[tuple[int, int]], budget: float | None, params: dict, config) -> list:
    """Per (width, height) picture: (the size to show the model or None, whether only the base is encoded)."""
    return [(p.size, p.base_only) for p in (plan_resize(s, budget, config) for s in sizes)]


def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    """Every candidate of the shown picture; a base-only picture's grid pooled to the planned size."""
    out = []
    sources = batch.source_sizes or [layout.image_size for layout in batch.layouts]
    for layout, features, source in zip(batch.layouts, batch.split(batch.features), sources, strict=True):
        plan = plan_resize((source[1], source[0]), budget, layout.config)
        if plan.base_only and plan.grid != (layout.side, layout.side):
            out.append(Selection(pool_grid(features[0], layout.side, layout.side, plan.grid), None))
            continue
        kept = layout.candidates.to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def token_count(layout: ImageLayout, budget: float | None, fidelity: str, params: dict) -> int:
    return plan_resize((layout.image_size[1], layout.image_size[0]), budget, layout.config).tokens


METHOD = Method(
    name="resize",
    summary="the picture downscaled so LLaVA-Next's anyres picks a smaller grid (then base only, pooled)",
    stage="vision",
    reference="a baseline of this suite; VTC-Bench (2025) found downsampling beats many pruning methods",
    select=select,
    needs_anyres=True,
    budgets={"paper": ("nearest",)},
    tokens=token_count,
    prepare=prepare,
)
