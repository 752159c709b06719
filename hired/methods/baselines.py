"""Cheap baselines the literature finds strong: random tokens, and spatial average pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hired.capture import VisionBatch
from hired.layout import ImageLayout, released_candidates
from hired.spec import BASELINE, Derived, Method, Param, Selection, budget_tokens


def random_tokens(layout: ImageLayout, n_budget: int, seed: int) -> torch.Tensor:
    """n_budget candidates drawn uniformly, as positions into layout.candidates, in stock order.

    A fresh generator per image makes an image's choice independent of its place in the batch
    (images of the same size get the same positions).
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(layout.n_full, generator=generator)[:n_budget].sort().values


def pooled_size(rows: int, cols: int, budget: float) -> tuple[int, int]:
    """The grid nearest to budget * rows * cols tokens with the grid's aspect ratio (at least 1 x 1)."""
    scale = math.sqrt(budget)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def pool_tokens(layout: ImageLayout, features: torch.Tensor, budget: float) -> torch.Tensor:
    """Average-pool the base grid and the un-padded sub-image canvas to `budget` of their tokens.

    features: (P, side**2, C) of one image. Returns (k, C): pooled base tokens in raster order,
    then pooled canvas tokens in raster order (the stock order of the regions they average).
    """
    side = layout.side
    flat = features.flatten(0, 1)
    grids = [(features[0], side, side)]
    if layout.partitions > 1:
        grids.append((flat[layout.candidates[side * side :].to(flat.device)], *layout.canvas))
    parts = [pool_grid(tokens, rows, cols, pooled_size(rows, cols, budget)) for tokens, rows, cols in grids]
    return torch.cat(parts)


def pool_grid(tokens: torch.Tensor, rows: int, cols: int, size: tuple[int, int]) -> torch.Tensor:
    """(rows * cols, C) raster-order tokens average-pooled to a (size) grid: (size[0] * size[1], C)."""
    image = tokens.float().reshape(1, rows, cols, -1).permute(0, 3, 1, 2)  # channels-last view, no copy
    return F.adaptive_avg_pool2d(image, size).flatten(2)[0].T.to(tokens.dtype)


def select_all(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    """Every candidate, un-padded as the released HiRED code does at rate 1 (the reference baseline;
    paper fidelity takes the stock path instead)."""
    out = []
    for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True):
        kept = released_candidates(layout).to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def select_random(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    out = []
    for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True):
        positions = random_tokens(layout, budget_tokens(budget, layout.n_full), params["seed"])
        kept = layout.candidates[positions].to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def select_pool(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    return [
        Selection(pool_tokens(layout, features, budget), None)
        for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True)
    ]


def pooled_count(layout: ImageLayout, budget: float | None, fidelity: str, params: dict) -> int:
    base = pooled_size(layout.side, layout.side, budget)
    canvas = pooled_size(*layout.canvas, budget) if layout.partitions > 1 else (0, 0)
    return base[0] * base[1] + canvas[0] * canvas[1]


NONE = Method(
    name=BASELINE,
    summary="all visual tokens (the baseline): stock LLaVA-Next; reference: all candidates, no newlines",
    stage="vision",
    reference="Liu et al., LLaVA-NeXT (2024); transformers' LlavaNextForConditionalGeneration",
    select=select_all,  # reference fidelity only; paper fidelity takes the stock path
    budgets={"paper": ("all",), "reference": ("all",)},
    tokens=lambda layout, budget, fidelity, params: (
        layout.stock_tokens if fidelity == "paper" else layout.n_full
    ),
)
RANDOM = Method(
    name="random",
    summary="round(b * N_full) candidates drawn uniformly (seeded), stock order",
    stage="vision",
    reference="a baseline of this suite",
    select=select_random,
    params=(
        Param("seed", int, Derived("the run's --seed", lambda shape, seed: seed), "generator seed", low=0),
    ),
)
POOL = Method(
    name="pool",
    summary="average pooling of the base grid and the sub-image canvas to the nearest grid of b * tokens",
    stage="vision",
    reference="a baseline of this suite (spatial average pooling)",
    select=select_pool,
    budgets={"paper": ("nearest",)},
    tokens=pooled_count,
)
