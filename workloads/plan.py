"""One planner for every command: models x workloads x batch sizes x methods x budgets x parameters
-> ordered, de-duplicated points, each with a stable key.

`run`, `sweep`, `oom-boundary`, `predict` and `show-selection` all plan through `plan_points`, so a
point means the same everywhere and `--resume` can match any results file by key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

from PIL import Image

from workloads.point import ENGINES, Inputs, MethodEntry, Point

MAX_POINTS = 20_000  # a plan larger than this is refused before it is expanded: split it into several files


@dataclass
class Plan:
    points: list[Point]
    duplicates: int = 0  # identical points asked more than once, measured once


def _defined(method, budget: float | None, fidelity: str) -> bool:
    from hired.spec import check_point

    try:
        check_point(method, budget, fidelity)
    except ValueError:
        return False
    return True


def expand(entry: MethodEntry) -> list[tuple[str, float | None, str, dict]]:
    """(method, budget, fidelity, params) for every budget and parameter combination of an entry.

    "all" means every method defined at that budget and fidelity, each with the given parameters it
    declares. Raises ValueError for anything a method does not define.
    """
    from hired.methods import METHODS
    from hired.spec import FIDELITIES, check_point

    if entry.fidelity not in FIDELITIES:
        raise ValueError(f"unknown fidelity {entry.fidelity!r} (use {', '.join(FIDELITIES)})")
    if entry.name != "all" and entry.name not in METHODS:
        raise ValueError(f"unknown method {entry.name!r} (choose from {', '.join(METHODS)}, all)")
    names = [n for n in METHODS if n != "none"] if entry.name == "all" else [entry.name]
    out, taken = [], set()
    for budget in entry.budgets:
        for name in names:
            method = METHODS[name]
            if entry.name == "all" and not _defined(method, budget, entry.fidelity):
                continue
            check_point(method, budget, entry.fidelity)
            declared = {p.name for p in method.params}
            given = {k: v for k, v in entry.params.items() if entry.name != "all" or k in declared}
            taken |= set(given)
            specs = {k: method.param(k) for k in given}  # an undeclared name: refused, naming the method's
            try:
                axes = {k: [specs[k].check(v, None) for v in values] for k, values in given.items()}
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if name == "none":
                continue  # the baseline is planned once per batch, whatever the entries say
            for combo in product(*axes.values()):
                out.append((name, budget, entry.fidelity, dict(zip(axes, combo, strict=True))))
    if entry.name == "all":
        if not any(name != "none" for name, *_ in out) and entry.budgets:
            budgets = ", ".join("adaptive" if b is None else f"{b:g}" for b in entry.budgets)
            raise ValueError(f"no method is defined for budget {budgets} in {entry.fidelity} fidelity")
        unused = sorted(set(entry.params) - taken)
        if unused:
            raise ValueError(f"no method measured takes parameter(s) {', '.join(unused)}")
    return out


# vLLM reserves each picture's placeholder tokens when the request is processed, before the encoder runs
VLLM_COUNTS = "vLLM reserves each picture's placeholders before its encoder runs"


def why_not(name: str, model: str, anyres: bool, engine: str, budget: float | None = 1.0) -> str | None:
    """Why a method cannot run for a model on an engine, or None: a method that needs LLaVA-Next's
    partitions on a one-partition model (LLaVA-1.5), an engine the method does not support, or an
    adaptive budget on vLLM (the count must be known before encoding)."""
    from hired.methods import METHODS

    method = METHODS[name]
    if method.needs_anyres and not anyres:
        return f"{name} needs LLaVA-Next's sub-image partitions; {model} has one partition per image"
    if engine not in method.engines:
        return f"{name} cannot run on the {engine} engine: {method.engines_why}"
    if engine == "vllm" and budget is None:
        return f"{name} adaptive cannot run on the vllm engine: {VLLM_COUNTS}; give a numeric budget"
    return None


def engine_refusal(engines: tuple[str, ...], fidelities, memory_cap: str | None = None) -> str | None:
    """What the asked engines cannot do at all, before any method is looked at; None when they can."""
    if "vllm" not in engines:
        return None
    if memory_cap is not None:
        return (
            "--memory-cap caps PyTorch's allocator; vLLM sizes its own KV cache (gpu_memory_utilization): "
            "not with the vllm engine"
        )
    if any(f != "paper" for f in fidelities):
        return (
            f"the vllm engine runs paper fidelity only: the released codes' counts depend on what the "
            f"encoder picks, and {VLLM_COUNTS}"
        )
    from hired.vllm_plugin import vllm_missing

    return vllm_missing()


def runnable(model: str, engine: str, expanded: list[tuple[bool, tuple]]) -> list[tuple]:
    """The expanded methods that can run for a model on an engine: `all` passes the others over, a
    method named explicitly is refused."""
    anyres = has_anyres(model)
    kept = []
    for from_all, method in expanded:
        why = why_not(method[0], model, anyres, engine, method[1])
        if why is None:
            kept.append(method)
        elif not from_all:
            raise ValueError(why)
    return kept


def has_anyres(model: str) -> bool:
    """Whether a model cuts pictures into LLaVA-Next partitions (presets know; others: their config)."""
    from workloads.presets import PRESETS

    if model == "auto" or model in PRESETS:
        return model == "auto" or PRESETS[model].anyres
    try:
        from workloads.models import model_config

        return getattr(model_config(model), "image_grid_pinpoints", None) is not None
    except Exception:  # an unknown model: refused later, with its own message
        return True


def plan_points(
    entries: list[MethodEntry],
    *,
    models: list[str],
    inputs: list[Inputs],
    batch_sizes: list[int],
    fidelity: str = "paper",
    baseline: bool = True,
    engines: tuple[str, ...] = ("eager",),
    accelerators: tuple[str | None, ...] = (None,),
    **common,
) -> Plan:
    """Ordered points: one model at a time (built once), input set by input set, batch sizes ascending
    (memory grows with the batch), the baseline first at each batch size (one per fidelity measured),
    then the entries in order. Identical points are planned once.

    common: weights, dtype, device, memory_cap, warmup, repeats, seed, min_duration (Point fields).
    Engines are an axis too. A method that cannot run for a model or on an engine is refused when
    named, passed over when it came from `all`. Accelerators (GPU
    types of a Ray cluster) are the outermost axis: the whole grid once per type.
    """
    expanded = [(entry.name == "all", m) for entry in entries for m in expand(entry)]
    fidelities = dict.fromkeys([fidelity, *(e.fidelity for e in entries)])
    head = [("none", 1.0, f, {}) for f in fidelities] if baseline else []
    unknown = [engine for engine in engines if engine not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine {unknown[0]!r} (use {', '.join(ENGINES)})")
    measured = {(m, e): head + runnable(m, e, expanded) for m in models for e in engines}
    # after the methods' refusals: those say more
    refusal = engine_refusal(engines, fidelities, common.get("memory_cap"))
    if refusal:
        raise ValueError(refusal)
    planned = sum(map(len, measured.values())) * len(accelerators) * len(inputs) * len(batch_sizes)
    if planned > MAX_POINTS:
        raise ValueError(
            f"the grid has {planned:,} points, more than the {MAX_POINTS:,} one plan may hold: split it into "
            "several sweep files (each may --resume into the same output)"
        )
    points, seen, duplicates = [], set(), 0
    for accelerator, model, engine, given, batch in product(
        accelerators, models, engines, inputs, sorted(batch_sizes)
    ):
        for name, budget, fidelity, params in measured[model, engine]:
            point = Point(
                name,
                budget,
                params,
                fidelity,
                model=model,
                batch_size=batch,
                image_sizes=given.image_sizes,
                images=given.images,
                new_tokens=given.new_tokens,
                prompt=given.prompt,
                engine=engine,
                accelerator=accelerator,
                **common,
            )
            if point.key in seen:
                duplicates += 1
                continue
            seen.add(point.key)
            points.append(point)
    return Plan(points, duplicates)


def with_batch(point: Point, batch: int) -> Point:
    return replace(point, batch_size=batch)


@dataclass
class Workload:
    """A point's inputs, made: the pictures, the prompt and the number of new tokens."""

    images: list[Image.Image]
    prompt: str
    new_tokens: int
    image_source: str = "synthetic"

    @property
    def batch_size(self) -> int:
        return len(self.images)


def build_workload(point: Point) -> Workload:
    """The pictures of one point, made when it is measured (never all of a run's up front)."""
    from workloads.images import folder_images, synthetic_images

    if point.images is not None:
        pictures = folder_images(Path(point.images), point.batch_size)
        return Workload(pictures, point.prompt, point.new_tokens, point.images)
    pictures = synthetic_images(list(point.image_sizes), point.batch_size, point.seed)
    return Workload(pictures, point.prompt, point.new_tokens, "synthetic")


def check_params(points: list[Point], worker_gpu: bool | None = None) -> None:
    """Each point's parameters against its model's shape (e.g. a layer beyond the tower's depth), from
    the model's configuration alone: refused before any model is built. Raises ValueError.
    worker_gpu: the points run on Ray workers with (True) or without (False) a GPU, not here."""
    from hired.methods import METHODS
    from hired.shape import shape_of
    from hired.spec import method_params
    from workloads.device import resolve_device, resolve_model_name
    from workloads.models import model_config

    shapes: dict[tuple, object] = {}
    for point in points:
        where = (point.model, point.device)
        if where not in shapes:
            shapes[where] = shape_of(
                model_config(resolve_model_name(point.model, resolve_device(point.device, worker_gpu)))
            )
        method_params(METHODS[point.method], shapes[where], point.params, point.seed)
