"""Input images: deterministic synthetic pictures of given sizes, or the pictures in a folder."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from workloads.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def parse_size(text: str) -> tuple[int, int]:
    """'600x600' -> (width, height) in pixels, at most Pillow's decompression-bomb limit."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise InputError(f"image size must look like WIDTHxHEIGHT in pixels (e.g. 600x600), got {text!r}")
    width, height = int(match[1]), int(match[2])
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise InputError(
            f"image size {width}x{height} is {width * height / 1e6:.0f} megapixels, above the "
            f"{limit / 1e6:.0f}-megapixel limit (Pillow's decompression-bomb limit): use a smaller size"
        )
    return width, height


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture with structure (colour fields, blocks, a disc), the same for the same arguments.

    Uniform noise would give uniform attention; some structure makes selection non-trivial.
    """
    rng = np.random.default_rng([seed, width, height])
    coarse = rng.random((6, 6, 3))
    field = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 10 + 1, width // 3 + 2), rng.integers(height // 10 + 1, height // 3 + 2)
        field[(xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)] = rng.random(3) * 255
    cx, cy, r = rng.integers(0, width), rng.integers(0, height), min(width, height) // 5 + 1
    field[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.random(3) * 255
    return Image.fromarray(field.clip(0, 255).astype(np.uint8))


def synthetic_images(sizes: list[tuple[int, int]], count: int, seed: int = 0) -> list[Image.Image]:
    """`count` pictures cycling through `sizes` (width, height); picture i is seeded by seed + i."""
    return [synthetic_image(*sizes[i % len(sizes)], seed=seed + i) for i in range(count)]


def folder_images(folder: Path, count: int) -> list[Image.Image]:
    """`count` pictures from a folder in name order, cycling when it holds fewer."""
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    loaded = [load_image(p) for p in paths[:count]]
    return [loaded[i % len(loaded)] for i in range(count)]


def load_image(path: Path) -> Image.Image:
    """An RGB picture; one above Pillow's decompression-bomb limit is refused, not decoded, and so is
    anything but a regular file (a FIFO or a device would block or never end)."""
    if path.exists() and not path.is_file():
        raise InputError(f"cannot read image {path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
