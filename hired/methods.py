"""Token-selection methods behind one interface, and the registry the CLI and runner use.

A method sees, per image, the projector-input features of every partition, the CLS attention of
the layers it asked for and the token layout, and returns what the projector should receive.
`none` (and any method at budget 1.0) is the stock LLaVA-Next path, newline tokens included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry stays importable without torch, so the CLI starts fast
    import torch

    from hired.layout import ImageLayout


@dataclass
class ImageTokens:
    """One image's vision output, as a method sees it."""

    layout: ImageLayout
    features: torch.Tensor  # (P, side**2, C) projector input
    cls_attention: dict[int, torch.Tensor]  # layer -> (P, heads, side**2)


@dataclass
class Selection:
    """What a method keeps of one image."""

    tokens: torch.Tensor  # (k, C) projector input, in the order the LLM receives it
    kept: torch.Tensor  # flat indices p * side**2 + j of the chosen tokens (for drawing and checks)


@dataclass(frozen=True)
class VisionShape:
    """What method defaults depend on: the vision tower's depth and the projector's input layer."""

    depth: int
    feature_layer: int


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    defaults: Callable[[VisionShape], dict]
    attention_layers: Callable[[dict], set[int]]
    select: Callable[[list[ImageTokens], float, dict], list[Selection]] | None  # None: stock path


def budget_tokens(budget: float, n_full: int) -> int:
    """N_budget = round(b * N_full), halves rounded up (Python's round() would round them to even)."""
    return math.floor(budget * n_full + 0.5)


def _select_hired(images: list[ImageTokens], budget: float, params: dict) -> list[Selection]:
    from hired.hired import select_hired

    out = []
    for image in images:
        keep = select_hired(
            image.layout,
            image.cls_attention,
            budget_tokens(budget, image.layout.n_full),
            params["alpha"],
            params["l_init"],
            params["l_final"],
        )
        kept = image.layout.candidates.to(keep.device)[keep]
        out.append(Selection(image.features.flatten(0, 1)[kept], kept))
    return out


METHODS: dict[str, Method] = {
    "none": Method(
        "none",
        "all visual tokens: stock LLaVA-Next (the baseline)",
        defaults=lambda shape: {},
        attention_layers=lambda params: set(),
        select=None,
    ),
    "hired": Method(
        "hired",
        "HiRED: budget split by layer-l_init CLS attention, top tokens by layer-l_final CLS attention",
        defaults=lambda shape: {"alpha": 0.5, "l_init": 0, "l_final": shape.feature_layer},
        attention_layers=lambda params: {params["l_init"], params["l_final"]},
        select=_select_hired,
    ),
}


def method_params(method: Method, shape: VisionShape, overrides: dict | None = None) -> dict:
    """The method's defaults for this vision tower with the given overrides (None values ignored), checked."""
    params = method.defaults(shape)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ValueError(f"method {method.name!r} takes no parameter(s) {unknown}")
    params.update(given)
    if "alpha" in params and not 0.0 <= params["alpha"] <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {params['alpha']}")
    for key in ("l_init", "l_final"):
        if key in params and not 0 <= params[key] < shape.depth:
            raise ValueError(f"{key} must be a vision layer in 0..{shape.depth - 1}, got {params[key]}")
    return params
