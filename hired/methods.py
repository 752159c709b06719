"""Token-selection methods behind one interface, and the registry the CLI and runner use.

A method gets the batch's vision output (projector-input features, and the CLS query and keys of
the layers it asked for) and returns, per image, what the projector should receive. In paper
fidelity, `none` and any method at budget 1.0 take the stock LLaVA-Next path (newline tokens
included) instead; see hired.glue.uses_stock_path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry stays importable without torch, so the CLI starts fast
    import torch

    from hired.capture import VisionBatch

FIDELITIES = ("paper", "reference")


@dataclass
class Selection:
    """What a method keeps of one image."""

    tokens: torch.Tensor  # (k, C) projector input, in the order the LLM receives it
    kept: torch.Tensor | None  # flat indices p * side**2 + j of chosen tokens; None if not a subset (pooling)


@dataclass(frozen=True)
class VisionShape:
    """What method defaults depend on: the vision tower's depth and the projector's input layer."""

    depth: int
    feature_layer: int


Select = Callable[["VisionBatch", "float | None", str, dict], list[Selection]]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    defaults: Callable[[VisionShape], dict]
    layers: Callable[[dict], set[int]]  # vision layers whose CLS query and keys the method reads
    select: Select
    fidelities: tuple[str, ...] = ("paper",)
    adaptive: bool = False  # can choose its own token count (budget None, "adaptive" on the CLI)


def budget_tokens(budget: float, n_full: int) -> int:
    """N_budget = round(b * N_full), halves rounded up (Python's round() would round them to even)."""
    return math.floor(budget * n_full + 0.5)


def _hired(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    from hired.hired import select_hired, select_hired_reference

    summed = {
        layer: batch.split(batch.cls_attention(layer).sum(1))
        for layer in {params["l_init"], params["l_final"]}
    }
    out = []
    for i, (layout, features) in enumerate(zip(batch.layouts, batch.split(batch.features), strict=True)):
        init, final = summed[params["l_init"]][i][0], summed[params["l_final"]][i]
        if fidelity == "reference":
            kept = select_hired_reference(layout, init, final, budget, params["alpha"])
        else:
            kept = layout.candidates.to(final.device)[
                select_hired(layout, init, final, budget_tokens(budget, layout.n_full), params["alpha"])
            ]
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def _all_candidates(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    out = []
    for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True):
        kept = layout.candidates.to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def _random(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    from hired.baselines import random_tokens

    out = []
    for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True):
        positions = random_tokens(layout, budget_tokens(budget, layout.n_full), params["seed"])
        kept = layout.candidates[positions].to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


def _pool(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    from hired.baselines import pool_tokens

    return [
        Selection(pool_tokens(layout, features, budget), None)
        for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True)
    ]


def _prumerge(name: str, summary: str, plus: bool) -> Method:
    def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
        from hired.prumerge import select_prumerge

        return select_prumerge(batch, budget, fidelity, params, plus)

    return Method(
        name,
        summary,
        defaults=lambda shape: {"layer": shape.depth - 1, "neighbours": 32},
        layers=lambda params: {params["layer"]},
        select=select,
        fidelities=FIDELITIES,
        adaptive=True,
    )


METHODS: dict[str, Method] = {
    "none": Method(
        "none",
        "all visual tokens (the baseline): stock LLaVA-Next; reference: all candidates, no newlines",
        defaults=lambda shape: {},
        layers=lambda params: set(),
        select=_all_candidates,  # reference fidelity only; paper fidelity takes the stock path
        fidelities=FIDELITIES,
    ),
    "hired": Method(
        "hired",
        "HiRED: budget split by layer-l_init CLS attention, top tokens by layer-l_final CLS attention",
        defaults=lambda shape: {"alpha": 0.5, "l_init": 0, "l_final": shape.feature_layer},
        layers=lambda params: {params["l_init"], params["l_final"]},
        select=_hired,
        fidelities=FIDELITIES,
    ),
    "prumerge": _prumerge(
        "prumerge",
        "PruMerge: outlier or top tokens by last-layer CLS attention, merged with their 32 nearest keys",
        plus=False,
    ),
    "prumerge+": _prumerge("prumerge+", "PruMerge+: PruMerge plus spatially uniform tokens", plus=True),
    "random": Method(
        "random",
        "round(b * N_full) tokens drawn uniformly (seeded), stock order",
        defaults=lambda shape: {"seed": 0},
        layers=lambda params: set(),
        select=_random,
    ),
    "pool": Method(
        "pool",
        "average pooling of the base grid and the sub-image canvas to the nearest grid of b * tokens",
        defaults=lambda shape: {},
        layers=lambda params: set(),
        select=_pool,
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
    if params.get("neighbours", 1) < 1:
        raise ValueError(f"neighbours must be at least 1, got {params['neighbours']}")
    if "alpha" in params and not 0.0 <= params["alpha"] <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {params['alpha']}")
    for key in ("l_init", "l_final", "layer"):
        if key in params and not 0 <= params[key] < shape.depth:
            raise ValueError(f"{key} must be a vision layer in 0..{shape.depth - 1}, got {params[key]}")
    return params


def check_point(method: Method, budget: float | None, fidelity: str) -> None:
    """Refuse combinations a method does not define (adaptive budget, unknown fidelity)."""
    if fidelity not in method.fidelities:
        raise ValueError(
            f"method {method.name!r} has no {fidelity!r} fidelity (it has {', '.join(method.fidelities)})"
        )
    if budget is None and not method.adaptive and method.name != "none":
        adaptive = ", ".join(m.name for m in METHODS.values() if m.adaptive)
        raise ValueError(f"method {method.name!r} needs a numeric budget; adaptive methods: {adaptive}")
    if budget is not None and fidelity == "reference" and method.adaptive:
        raise ValueError(
            f"{method.name} reference fidelity is adaptive only (its released code takes no budget)"
        )
    if budget is not None and not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be in (0, 1] (a fraction of the visual tokens kept), got {budget}")


def expected_tokens(method: str, budget: float | None, fidelity: str, layout) -> int | None:
    """Visual tokens the LLM will receive for one image, from the layout alone; None when the count
    depends on the weights (adaptive PruMerge) or the attention (reference HiRED keeps at most this)."""
    from hired.baselines import pooled_size

    if method == "none" or (fidelity == "paper" and budget is not None and budget >= 1.0):
        return layout.stock_tokens if fidelity == "paper" else layout.n_full
    if budget is None:
        return None
    if method == "pool":
        base = pooled_size(layout.side, layout.side, budget)
        canvas = pooled_size(*layout.canvas, budget) if layout.partitions > 1 else (0, 0)
        return base[0] * base[1] + canvas[0] * canvas[1]
    if fidelity == "reference":  # HiRED's int(P * 576 * b), before un-padding drops what fell in padding
        return int(layout.partitions * layout.side**2 * budget)
    return budget_tokens(budget, layout.n_full)
