"""What a method is, described once: name, stage, budgets per fidelity, reference, typed parameters.

The command line (`--param NAME=VALUE`, `hired-bench methods`), sweep files, the records'
`method_params` and docs/methods.md all read these specs; nothing else lists a method's parameters.
Importable without torch, so the command line answers bad input before anything heavy loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hired.shape import VisionShape

if TYPE_CHECKING:
    import torch

    from hired.capture import VisionBatch
    from hired.layout import ImageLayout

BASELINE = "none"  # the full-token baseline's method name (hired.methods.baselines.NONE), torch-free
FIDELITIES = ("paper", "reference")
STAGES = ("vision", "llm")
# how a method meets a budget b: exactly round(b * N_full) tokens; the nearest count its geometry
# allows; the released code's own arithmetic; its own count (no budget); everything (the baseline)
BUDGET_KINDS = ("exact", "nearest", "released", "adaptive", "all")
NUMERIC = ("exact", "nearest", "released")


@dataclass(frozen=True)
class Derived:
    """A default read off the model or the run (e.g. the projector's input layer, the run's seed)."""

    text: str  # what the docs and `hired-bench methods` say
    value: Callable[[VisionShape, int], int | float]  # (shape, run seed) -> value


@dataclass(frozen=True)
class Param:
    """One typed parameter: the CLI, sweep files and docs all read this."""

    name: str
    type: type  # int, float or str
    default: Any  # a value, or a Derived
    help: str
    low: Any = None  # inclusive bounds: a number, a Derived, or None (unbounded)
    high: Any = None
    choices: tuple[str, ...] = ()
    unit: str = ""  # said in messages, e.g. "a vision layer"

    def default_text(self) -> str:
        return self.default.text if isinstance(self.default, Derived) else repr(self.default)

    def range_text(self, shape: VisionShape | None = None) -> str:
        """'in [0, 1]', 'a vision layer in 0..23', 'at least 1', 'one of a, b'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        words = f"{self.unit} " if self.unit else ""
        low, high = (_bound_text(b, shape) for b in (self.low, self.high))
        if low is None and high is None:
            return self.unit or f"any {self.type.__name__}"
        if high is None:
            return f"{words}at least {low}"
        if low is None:
            return f"{words}at most {high}"
        return f"{words}in {low}..{high}" if self.type is int else f"{words}in [{low}, {high}]"

    def describe(self) -> str:
        """'alpha (float in [0, 1], default 0.5)'."""
        kind = f"{self.type.__name__}, " if self.unit else f"{self.type.__name__} "
        return f"{self.name} ({kind}{self.range_text()}, default {self.default_text()})"

    def coerce(self, value: Any) -> Any:
        """A value of this parameter's type from a TOML value or a command-line string; ValueError if not."""
        if isinstance(value, str) and self.type is not str:
            try:
                value = self.type(value.strip())
            except ValueError:
                raise ValueError(f"{self.name} must be a {self.type.__name__}, got {value!r}") from None
        accepted = (float, int) if self.type is float else self.type  # TOML writes 1 for 1.0
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ValueError(f"{self.name} must be a {self.type.__name__}, got {value!r}")
        if self.type is float:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{self.name} must be a finite number, got {value}")
        return value

    def check(self, value: Any, shape: VisionShape | None, seed: int = 0) -> Any:
        """The coerced value, or ValueError saying the allowed range (bounds read off the model are
        checked only when its shape is given)."""
        value = self.coerce(value)
        low, high = (
            None if isinstance(b, Derived) and shape is None else _value(b, shape, seed)
            for b in (self.low, self.high)
        )
        if (
            (self.choices and value not in self.choices)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise ValueError(f"{self.name} must be {self.range_text(shape)}, got {value!r}")
        return value


def _value(spec: Any, shape: VisionShape | None, seed: int) -> Any:
    return spec.value(shape, seed) if isinstance(spec, Derived) else spec


def _bound_text(bound: Any, shape: VisionShape | None) -> str | None:
    """A bound for messages: its value where the model is known, else what it is derived from."""
    if bound is None:
        return None
    if isinstance(bound, Derived):
        value = bound.value(shape, 0) if shape is not None else None
        return bound.text if value is None else str(value)
    return f"{bound:g}"


def llm_layer(name: str, default: Any, help: str) -> Param:
    """A decoder layer K of the language model (1..depth - 1: layer K - 1's attention must exist)."""
    return Param(
        name,
        int,
        default,
        help,
        low=1,
        high=Derived("LLM depth - 1", lambda shape, seed: shape.llm_depth - 1 if shape.llm_depth else None),
        unit="a decoder layer",
    )


def vision_layer(name: str, default: Any, help: str) -> Param:
    """A vision-tower layer index, bounded by the tower's depth."""
    return Param(
        name,
        int,
        default,
        help,
        low=0,
        high=Derived("depth - 1", lambda shape, seed: shape.depth - 1),
        unit="a vision layer",
    )


@dataclass
class Selection:
    """What a method keeps of one image."""

    tokens: torch.Tensor  # (k, C) projector input, in the order the LLM receives it
    kept: torch.Tensor | None  # flat indices p * side**2 + j of chosen tokens; None if not a subset (pooling)
    anchors: torch.Tensor | None = None  # flat indices where merged (contextual) tokens sit, for pictures
    projected: torch.Tensor | None = None  # (k, D) LLM inputs, when the method already ran the projector


Select = Callable[["VisionBatch", "float | None", str, dict], list[Selection]]
# before preprocessing, per original (width, height): the size to show the model (None: unchanged) and
# whether only the base partition is encoded; receives the budget, the parameters and the model config
Prepare = Callable[[list, "float | None", dict, object], list]
# tokens the LLM receives for one image, from its layout alone; None when the weights decide
TokenCount = Callable[["ImageLayout", "float | None", str, dict], "int | None"]


def budget_tokens(budget: float, n_full: int) -> int:
    """N_budget = round(b * N_full), halves rounded up (Python's round() would round them to even)."""
    return math.floor(budget * n_full + 0.5)


def apportion(budget: float, valid_counts: list[int]) -> list[int]:
    """round(budget * sum) tokens over partitions in proportion to their valid tokens (largest remainder)."""
    total = math.floor(budget * sum(valid_counts) + 0.5)
    exact = [budget * v for v in valid_counts]
    counts = [min(math.floor(e), v) for e, v in zip(exact, valid_counts, strict=True)]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def exact_count(layout: ImageLayout, budget: float | None, fidelity: str, params: dict) -> int | None:
    return None if budget is None else budget_tokens(budget, layout.n_full)


def _no_layers(params: dict) -> set[int]:
    return set()


@dataclass(frozen=True)
class Method:
    """A token-dropping method, as every part of the suite sees it."""

    name: str
    summary: str  # one line
    stage: str  # "vision": between the vision tower and the LLM; "llm": inside the LLM
    reference: str  # paper and released code
    select: Select | None = None  # vision stage: per image, what the projector receives
    budgets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"paper": ("exact",)})  # per fidelity
    params: tuple[Param, ...] = ()
    layers: Callable[[dict], set[int]] = _no_layers  # vision layers whose CLS query and keys it reads
    tokens: TokenCount = exact_count
    prepare: Prepare | None = None  # changes the pictures before preprocessing (the resize baseline)
    keep: Callable | None = None  # llm stage (hired.llm.LlmKeep): per sample, the visual tokens kept
    needs_anyres: bool = False  # needs LLaVA-Next's sub-images: not for a one-partition model (LLaVA-1.5)
    engines: tuple[str, ...] = ("eager", "compiled", "vllm")  # the generation engines it can run on
    engines_why: str = ""  # why not on the others, said when refused

    @property
    def fidelities(self) -> tuple[str, ...]:
        return tuple(self.budgets)

    @property
    def adaptive(self) -> bool:
        """Can choose its own token count (budget None, "adaptive" on the command line)."""
        return any("adaptive" in kinds for kinds in self.budgets.values())

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(f"{self.name} takes no such parameter {name!r}; {self.signature()}")

    def signature(self) -> str:
        """'its parameters: alpha (float in [0, 1], default 0.5); ...' or 'it takes no parameters'."""
        if not self.params:
            return "it takes no parameters"
        return "its parameters: " + "; ".join(p.describe() for p in self.params)

    def defaults(self, shape: VisionShape, seed: int = 0) -> dict:
        return {p.name: _value(p.default, shape, seed) for p in self.params}


def method_params(method: Method, shape: VisionShape, overrides: dict | None = None, seed: int = 0) -> dict:
    """The method's defaults for this model with the given overrides (None values ignored), checked.

    Raises ValueError naming the parameter, its allowed range and the method's parameter list.
    """
    params = method.defaults(shape, seed)
    for name in overrides or {}:
        method.param(name)  # raises, listing the method's parameters, for an unknown name
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for param in method.params:  # defaults too: a default may not fit a small model (K on a 2-layer LLM)
        try:
            params[param.name] = param.check(params[param.name], shape, seed)
        except ValueError as exc:
            raise ValueError(f"{method.name}: {exc}; {method.signature()}") from None
    return params


def check_point(method: Method, budget: float | None, fidelity: str) -> None:
    """Refuse combinations a method does not define (a fidelity it lacks, a budget kind it lacks)."""
    if fidelity not in method.budgets:
        raise ValueError(
            f"method {method.name!r} has no {fidelity!r} fidelity (it has {', '.join(method.fidelities)})"
        )
    kinds = method.budgets[fidelity]
    if budget is not None and not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be in (0, 1] (a fraction of the visual tokens kept), got {budget}")
    if "all" in kinds:
        return
    if budget is None and "adaptive" not in kinds:
        raise ValueError(f"method {method.name!r} needs a numeric budget (in {fidelity} fidelity)")
    if budget is not None and not set(kinds) & set(NUMERIC):
        raise ValueError(
            f"{method.name} {fidelity} fidelity is adaptive only (its released code takes no budget)"
        )
