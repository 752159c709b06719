"""The registry: every method the suite knows, by name. Adding a method is a module and a line here.

A method (hired.spec.Method) describes itself: stage, budgets per fidelity, typed parameters,
reference. In paper fidelity, `none` and any method at budget 1.0 take the stock LLaVA-Next path
(newline tokens included) instead of selecting; see hired.glue.uses_stock_path.
"""

from __future__ import annotations

from hired.methods.baselines import NONE, POOL, RANDOM
from hired.methods.dart import METHOD as DART
from hired.methods.divprune import METHOD as DIVPRUNE
from hired.methods.fastv import METHOD as FASTV
from hired.methods.globalcom2 import METHOD as GLOBALCOM2
from hired.methods.hired import METHOD as HIRED
from hired.methods.prumerge import PRUMERGE, PRUMERGE_PLUS
from hired.methods.resize import METHOD as RESIZE
from hired.methods.visionzip import METHOD as VISIONZIP
from hired.shape import VisionShape  # noqa: F401  (re-exported)
from hired.spec import (  # noqa: F401  (re-exported: the library's one import for methods)
    FIDELITIES,
    Method,
    Selection,
    budget_tokens,
    check_point,
    method_params,
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        NONE,
        HIRED,
        PRUMERGE,
        PRUMERGE_PLUS,
        VISIONZIP,
        DIVPRUNE,
        GLOBALCOM2,
        FASTV,
        DART,
        RANDOM,
        POOL,
        RESIZE,
    )
}


def expected_tokens(method: str, budget: float | None, fidelity: str, layout, params: dict | None = None):
    """Visual tokens the LLM will receive for one image, from the layout alone; None when the weights
    decide (adaptive counts). Reference HiRED keeps at most this (un-padding drops padding picks)."""
    if fidelity == "paper" and budget is not None and budget >= 1.0:  # the stock path, newlines included
        return layout.stock_tokens
    return METHODS[method].tokens(layout, budget, fidelity, params or {})
