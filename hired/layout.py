"""Where each visual token of a LLaVA-Next image sits, in the order stock LLaVA-Next feeds them.

An image becomes P partitions (partition 0 = the whole image squashed, 1..P-1 = crops of an
nph x npw grid), each with side x side patch tokens. Stock LLaVA-Next un-pads the combined
sub-image canvas; the tokens it keeps are the candidates every method chooses from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ImageLayout:
    """Token geometry of one image (sizes in patches, indices into its P * side * side tokens)."""

    image_size: tuple[int, int]  # original (height, width) in pixels
    grid: tuple[int, int]  # sub-image grid (rows nph, cols npw); (0, 0) when there is no anyres grid
    side: int  # patch tokens per partition side (24 for CLIP ViT-L/14 at 336 px)
    candidates: torch.Tensor  # (N_full,) flat token index p * side**2 + j, in stock order
    canvas: tuple[int, int]  # un-padded sub-image canvas (rows, cols) in patches
    config: object = field(default=None, compare=False, repr=False)  # the model config it was laid out for

    @property
    def partitions(self) -> int:
        return 1 + self.grid[0] * self.grid[1]

    @property
    def n_full(self) -> int:
        """Candidates: base tokens plus the sub-image tokens stock LLaVA-Next keeps (no newlines)."""
        return int(self.candidates.numel())

    @property
    def stock_tokens(self) -> int:
        """What stock LLaVA-Next feeds the LLM: candidates plus one newline per canvas row."""
        return self.n_full + (self.canvas[0] if self.partitions > 1 else 0)

    def valid_per_partition(self) -> torch.Tensor:
        """(P,) number of candidate (non-padding) tokens in each partition."""
        return torch.bincount(self.candidates // self.side**2, minlength=self.partitions)


def image_layout(image_size: tuple[int, int], config, base_only: bool = False) -> ImageLayout:
    """Layout of a (height, width) pixel image for a LlavaNextConfig, by transformers' own geometry.

    base_only: the image is encoded as its base partition alone (no sub-images)."""
    # imported here: transformers' modeling module takes seconds, and the registry must load fast
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
        unpad_image,
    )

    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    n = side * side
    pinpoints = getattr(config, "image_grid_pinpoints", None)  # none: LLaVA-1.5, one partition
    partitions = image_size_to_num_patches(list(image_size), pinpoints, vision.image_size) if pinpoints else 1
    base = torch.arange(n)
    if partitions == 1 or base_only:
        return ImageLayout(tuple(image_size), (0, 0), side, base, (side, side), config)
    nph, npw = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, vision.image_size)
    kept = unpad_image(sub_image_canvas((nph, npw), side)[None], list(image_size))[0]
    candidates = torch.cat([base, kept.reshape(-1)])
    return ImageLayout(tuple(image_size), (nph, npw), side, candidates, tuple(kept.shape), config)


def sub_image_canvas(grid: tuple[int, int], side: int) -> torch.Tensor:
    """(nph * side, npw * side): canvas[y, x] = flat index of the token drawn there, laid out as
    pack_image_features lays the sub-image features out."""
    nph, npw = grid
    rows = torch.arange(nph * side)[:, None]
    cols = torch.arange(npw * side)[None, :]
    partition = 1 + (rows // side) * npw + cols // side
    return partition * side**2 + (rows % side) * side + cols % side


def released_candidates(layout: ImageLayout) -> torch.Tensor:
    """The candidates as the released code (transformers 4.42) un-pads them: int(original * scale),
    where transformers 5 rounds to 7 places first; the two differ on some sizes (a 704 x 396 picture:
    1824 candidates there, 1920 here). Same grid geometry as `image_layout` (4.42's transposed grid is not
    reproduced, docs/methods.md)."""
    if layout.partitions == 1:
        return layout.candidates
    canvas = sub_image_canvas(layout.grid, layout.side)
    rows, cols = canvas.shape
    height, width = layout.image_size
    if width / height > cols / rows:
        padding = (rows - int(height * (cols / width))) // 2
        kept = canvas[padding : rows - padding]
    else:
        padding = (cols - int(width * (rows / height))) // 2
        kept = canvas[:, padding : cols - padding]
    return torch.cat([layout.candidates[: layout.side**2], kept.reshape(-1)])


def valid_masks(layouts: list[ImageLayout], n: int, device) -> torch.Tensor:
    """(sum P, n): which of each partition's tokens are candidates (not padding), for a batch."""
    masks = []
    for layout in layouts:
        valid = torch.zeros(layout.partitions * n, dtype=torch.bool, device=device)
        valid[layout.candidates.to(device)] = True
        masks.append(valid.view(-1, n))
    return torch.cat(masks)


def descending_rank(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(rows, n): each position's rank by descending score in its row, allowed positions first (ties:
    the lower index)."""
    rows, n = scores.shape
    masked = scores.float().masked_fill(~allowed, float("-inf"))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand(rows, n))


def top_per_row(scores: torch.Tensor, allowed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(rows, n) bool: the counts[r] highest-scoring allowed positions of each row (ties: the lower index)."""
    return (descending_rank(scores, allowed) < counts[:, None]) & allowed
