"""Pictures of a selection: every partition of an image with its kept tokens outlined."""

from __future__ import annotations

import numpy as np
import torch

from hired.layout import ImageLayout
from hired.spec import Selection

KEPT_EDGE = "#ffd400"
ANCHOR_EDGE = "#00d5ff"  # where merged (contextual) tokens sit
DROPPED = (0.0, 0.0, 0.0, 0.62)
PADDING = (0.55, 0.55, 0.55, 0.85)


def partition_pictures(pixel_values: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """(P, 3, H, W) normalised pixels -> (P, H, W, 3) in [0, 1] for display."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (pixel_values.float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def token_states(layout: ImageLayout, selection: Selection) -> np.ndarray:
    """(P, side, side) per token: 0 dropped, 1 kept, 2 padding (never a candidate), 3 where a merged
    (contextual) token sits."""
    n = layout.side**2
    states = np.full(layout.partitions * n, 2, dtype=np.int8)
    states[layout.candidates.numpy()] = 0
    if selection.kept is None:  # pooling keeps (averages) every candidate
        states[layout.candidates.numpy()] = 1
    else:
        states[selection.kept.cpu().numpy()] = 1
    if selection.anchors is not None:
        states[selection.anchors.cpu().numpy()] = 3
    return states.reshape(layout.partitions, layout.side, layout.side)


def draw_selection(
    pictures: np.ndarray, layout: ImageLayout, selection: Selection, title: str, note: str | None = None
):
    """A matplotlib Figure: the base partition left, the sub-images in their grid right."""
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure  # not pyplot: no backend, no global figure registry
    from matplotlib.patches import Rectangle

    states = token_states(layout, selection)
    nph, npw = layout.grid if layout.partitions > 1 else (0, 0)
    fig = Figure(figsize=(4.2 + 3.2 * max(npw, 1), 1.2 + 3.2 * max(nph, 1.3)), layout="constrained")
    sub_figures = fig.subfigures(1, 2, width_ratios=[1.3, max(npw, 1)]) if nph else [fig]
    axes = [sub_figures[0].subplots()]
    if nph:
        grid_axes = np.atleast_2d(sub_figures[1].subplots(nph, npw, squeeze=False))
        axes += [grid_axes[r, c] for r in range(nph) for c in range(npw)]
    side = layout.side
    cell = pictures.shape[1] / side
    for p, ax in enumerate(axes):
        ax.imshow(pictures[p])
        overlay = np.zeros((side, side, 4))
        overlay[states[p] == 0] = DROPPED
        overlay[states[p] == 2] = PADDING
        ax.imshow(overlay, extent=(0, pictures.shape[2], pictures.shape[1], 0), interpolation="nearest")
        for state, edge in ((1, KEPT_EDGE), (3, ANCHOR_EDGE)):
            rows, cols = np.nonzero(states[p] == state)
            boxes = [Rectangle((c * cell, r * cell), cell, cell) for r, c in zip(rows, cols, strict=True)]
            ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=edge, linewidth=0.6))
        valid = int((states[p] != 2).sum())
        where = "base (whole image)" if p == 0 else f"sub-image {divmod(p - 1, max(npw, 1))}"
        merged = int((states[p] == 3).sum())
        extra = f" + {merged} merged" if merged else ""
        ax.set_title(f"{where}: {int((states[p] == 1).sum())} of {valid} kept{extra}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    if note:
        fig.supxlabel(note, fontsize=8, color="#a00000")
    return fig
