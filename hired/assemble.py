"""Putting one image's chosen tokens in the order the LLM receives them (stock order, extras after).

Kept tokens keep stock order: the base partition's in raster order, then the sub-images' in the
raster order of the un-padded canvas. Tokens a method makes rather than keeps (a PruMerge summary,
VisionZip's contextual tokens) follow their partition: the base's after the base tokens, the
sub-images' after all sub-image tokens, partition by partition.
"""

from __future__ import annotations

import torch

from hired.layout import ImageLayout
from hired.spec import Selection


def stock_order(
    layout: ImageLayout,
    kept: list[torch.Tensor],
    tokens: list[torch.Tensor],
    extras: list[torch.Tensor],
    anchors: torch.Tensor | None = None,
) -> Selection:
    """One Selection from per-partition pieces.

    kept[p]: flat indices (p * side**2 + j) of partition p's kept tokens, in any order; tokens[p]: their
    features in the same order; extras[p]: (e, C) tokens partition p adds after its own.
    """
    device = tokens[0].device
    position = torch.full((layout.partitions * layout.side**2,), -1, dtype=torch.long, device=device)
    position[layout.candidates.to(device)] = torch.arange(layout.n_full, device=device)
    flat, feats = torch.cat(kept).to(device), torch.cat(tokens)
    order = position[flat].argsort()  # base tokens come first in stock order, then the canvas
    base = int((flat < layout.side**2).sum())
    parts = [feats[order[:base]], extras[0], feats[order[base:]], *extras[1:]]
    return Selection(torch.cat(parts), flat[order], anchors=anchors)
