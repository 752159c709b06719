"""Cheap baselines the literature finds strong: random tokens, and spatial average pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hired.layout import ImageLayout


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
    parts = []
    for tokens, rows, cols in grids:
        image = tokens.float().reshape(1, rows, cols, -1).permute(0, 3, 1, 2)  # channels-last view, no copy
        parts.append(F.adaptive_avg_pool2d(image, pooled_size(rows, cols, budget)).flatten(2)[0].T)
    return torch.cat(parts).to(features.dtype)
