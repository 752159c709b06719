"""Sweep files: a grid of points in TOML, validated with errors that name the bad key.

    description = "what the grid is for"
    models = ["llava-next-7b"]          # presets, folders or cached Hugging Face ids
    batch_sizes = [1, 2, 4, 8]
    image_sizes = ["600x600"]           # one entry per point; "600x600,1000x300" mixes sizes in a batch
    new_tokens = [15, 64]
    [[methods]]
    name = "hired"
    budgets = [0.1, 0.2, 0.4]          # or "adaptive" for prumerge / prumerge+
    alpha = 0.5                         # any of the method's parameters; a list is an axis of the grid

Optional top-level keys: weights, dtype, device, fidelity, prompt, warmup, repeats, min_duration,
seed, memory_cap, engines, accelerators (Ray GPU types: the grid once per type, with --ray), output, and
`serving = { rates = [1, 4, inf], requests = 32 }` (optional: concurrency, slo_ttft_ms), which makes the
grid a serving grid: each method and budget served by vLLM (`hired-bench serve-bench`) at each rate.
The baseline (`none`) is measured whether listed or not;
`name = "all"` is every method defined at the budgets. Identical points are planned once.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import InputError
from workloads.images import parse_size
from workloads.plan import expand, plan_points
from workloads.point import (
    DEFAULTS,
    OPTIONS,
    TOML_KEYS,
    Inputs,
    MethodEntry,
    Point,
    check_option,
    check_prompt,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCALAR_TYPES = {str: str, int: int, float: (int, float)}
# the file's keys: a point option's sweep key (workloads.point) holds a list where it is an axis of the grid
TOP_KEYS = {
    "description": str,
    **{
        f.metadata["toml"]: list
        if f.metadata["axis"]
        else SCALAR_TYPES[str if f.default is None else type(f.default)]
        for f in OPTIONS.values()
        if f.metadata["toml"]
    },
    "output": str,
    "methods": list,
    "serving": dict,  # a serving grid (hired-bench serve-bench): rates, requests, concurrency, slo_ttft_ms
}
SERVING_KEYS = {"rates": list, "requests": int, "concurrency": int, "slo_ttft_ms": (int, float)}
REQUIRED = ("models", "batch_sizes", "methods")
ENTRY_KEYS = {"name", "budgets", "fidelity"}  # plus the method's own parameters (hired.spec)


@dataclass
class Sweep:
    name: str
    description: str
    output: Path
    points: list[Point]
    duplicates: int = 0  # identical points the file asks for more than once (measured once)
    serving: dict | None = None  # a serving grid's load: rates, requests, concurrency, slo_ttft_ms


def _fail(source: str, key: str, message: str) -> InputError:
    return InputError(f"{source}: {key}: {message}")


def _unknown(source: str, where: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            suggestion = (
                f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(sorted(allowed))})"
            )
            raise _fail(source, f"{where}{key}", f"unknown key{suggestion}")


def _whole_numbers(source: str, key: str, values) -> list[int]:
    """A list axis of whole numbers, each within its point option's bounds (workloads.point)."""
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise _fail(source, key, f"must be a non-empty list of whole numbers, got {values!r}")
    for value in values:
        if why := check_option(TOML_KEYS[key], value):
            raise _fail(source, key, f"out of range: {why}")
    return list(values)


def _budgets(source: str, key: str, values) -> list[float | None]:
    values = values if isinstance(values, list) else [values]
    out = []
    for v in values:
        if v == "adaptive":
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1:
            out.append(float(v))
        else:
            raise _fail(source, key, f'budgets are fractions in (0, 1] or "adaptive", got {v!r}')
    return out


def _image_sizes(source: str, values) -> list[tuple[tuple[int, int], ...]]:
    out = []
    for v in values:
        if not isinstance(v, str):
            raise _fail(source, "image_sizes", f'entries are strings like "600x600", got {v!r}')
        try:
            out.append(tuple(parse_size(part) for part in v.split(",")))
        except InputError as exc:
            raise _fail(source, "image_sizes", str(exc)) from None
    return out


def _entry(source: str, i: int, entry) -> MethodEntry:
    """One [[methods]] table: name, budgets, fidelity and any of the method's declared parameters."""
    from hired.methods import METHODS

    where = f"methods[{i}]"
    if not isinstance(entry, dict):
        raise _fail(source, where, "each method is a table ([[methods]] with name = ...)")
    name = entry.get("name")
    if name != "all" and name not in METHODS:
        raise _fail(source, f"{where}.name", f"unknown method {name!r} ({', '.join(METHODS)}, all)")
    chosen = list(METHODS.values()) if name == "all" else [METHODS[name]]
    declared = {p.name for m in chosen for p in m.params}
    for key in entry:
        if key in ENTRY_KEYS or key in declared:
            continue
        if any(key in {p.name for p in m.params} for m in METHODS.values()):  # another method's parameter
            raise _fail(source, f"{where}.{key}", f"{name} takes no such parameter; {chosen[0].signature()}")
        _unknown(source, f"{where}.", [key], ENTRY_KEYS | declared)
    fidelity = entry.get("fidelity", "paper")
    budgets = _budgets(source, f"{where}.budgets", entry.get("budgets", []))
    if not budgets and name != "none":
        raise _fail(source, f"{where}.budgets", f"{name} needs at least one budget")
    params = {}
    for key in sorted(set(entry) - ENTRY_KEYS):
        values = entry[key] if isinstance(entry[key], list) else [entry[key]]  # a list is an axis of the grid
        if not values:
            raise _fail(source, f"{where}.{key}", "an empty list of values")
        try:
            for method in chosen:
                if key in {p.name for p in method.params}:
                    [method.param(key).check(v, None) for v in values]
        except ValueError as exc:
            raise _fail(source, f"{where}.{key}", str(exc)) from None
        params[key] = tuple(values)
    result = MethodEntry(name, tuple(budgets), fidelity, params)
    try:
        expand(result)
    except ValueError as exc:
        raise _fail(source, where, str(exc)) from None
    return result


SHIPPED = Path(__file__).parent  # paper.toml, smoke.toml, ...: installed with the package


def shipped_sweeps() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def find_sweep(name: str | Path) -> Path:
    """A sweep file by path, or a shipped one by name from anywhere (`smoke`, `paper.toml`)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{path.stem}.toml"
    if path.parent == Path(".") and path.suffix in ("", ".toml") and shipped.is_file():
        return shipped
    raise InputError(f"sweep file not found: {name} (shipped sweeps, by name: {', '.join(shipped_sweeps())})")


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file; every problem is an InputError naming the file and key."""
    from hired.spec import FIDELITIES

    path = find_sweep(path)
    source = path.name
    try:
        data = tomllib.loads(path.read_text())
    except RecursionError:
        raise InputError(f"{path}: not valid TOML (nested too deep)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from None
    _unknown(source, "", data, TOP_KEYS)
    for key in REQUIRED:
        if key not in data:
            raise _fail(source, key, "missing (required)")
    for key, kind in TOP_KEYS.items():
        if key in data and not isinstance(data[key], kind):
            name = "number" if isinstance(kind, tuple) else kind.__name__
            raise _fail(source, key, f"must be a {name}, got {type(data[key]).__name__}")
    models = data["models"]
    if not models or not all(isinstance(m, str) and m for m in models):
        raise _fail(source, "models", "must be a non-empty list of model names")
    batch_sizes = _whole_numbers(source, "batch_sizes", data["batch_sizes"])
    new_tokens = _whole_numbers(source, "new_tokens", data.get("new_tokens", [DEFAULTS["new_tokens"]]))
    image_sizes = _image_sizes(
        source, data.get("image_sizes", [",".join(f"{w}x{h}" for w, h in DEFAULTS["image_sizes"])])
    )
    # a scalar point option: its sweep key, or the point's default
    common = {
        f.name: data.get(f.metadata["toml"], f.default)
        for f in OPTIONS.values()
        if f.metadata["toml"] and not f.metadata["axis"]
    }
    for name, value in common.items():
        if why := check_option(name, value):
            raise _fail(source, OPTIONS[name].metadata["toml"], f"out of range: {why}")
    if why := check_prompt(common["prompt"]):
        raise _fail(source, "prompt", why)
    fidelity = common.pop("fidelity")
    if fidelity not in FIDELITIES:
        raise _fail(source, "fidelity", f"must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    entries = [
        _entry(source, i, {"fidelity": fidelity, **entry} if isinstance(entry, dict) else entry)
        for i, entry in enumerate(data["methods"])
    ]
    prompt = common.pop("prompt")
    engines = data.get("engines", [DEFAULTS["engine"]])
    if not engines or not all(isinstance(e, str) for e in engines):
        raise _fail(
            source, "engines", f'must be a non-empty list such as ["eager", "compiled"], got {engines!r}'
        )
    serving = _serving(source, data["serving"]) if "serving" in data else None
    if serving is not None:
        if "engines" in data and data["engines"] != ["vllm"]:
            raise _fail(source, "engines", "a serving grid runs on the vllm engine: leave engines out")
        engines = ["vllm"]
    accelerators = data.get("accelerators", [None])
    if "accelerators" in data and not (
        accelerators and all(isinstance(a, str) and a.strip() for a in accelerators)
    ):
        example = '["A100", "H100"]'
        raise _fail(source, "accelerators", f"must be a non-empty list of GPU types such as {example}")
    try:
        plan = plan_points(
            entries,
            models=models,
            inputs=[Inputs(sizes, None, tokens, prompt) for tokens in new_tokens for sizes in image_sizes],
            batch_sizes=batch_sizes,
            fidelity=fidelity,
            engines=tuple(engines),
            accelerators=tuple(accelerators),
            **{**common, "min_duration": float(common["min_duration"])},
        )
    except ValueError as exc:  # an engine a method cannot run on, a method a model cannot run
        raise InputError(f"{source}: {exc}") from None
    output = Path(data.get("output", f"results/{path.stem}.jsonl"))
    return Sweep(path.stem, data.get("description", ""), output, plan.points, plan.duplicates, serving)


def _serving(source: str, table) -> dict:
    """A serving grid's load, checked: rates above 0 (inf: all at once), at least one request."""
    _unknown(source, "serving.", table, SERVING_KEYS)
    for key, kind in SERVING_KEYS.items():
        if key in table and (not isinstance(table[key], kind) or isinstance(table[key], bool)):
            raise _fail(source, f"serving.{key}", f"must be a {getattr(kind, '__name__', 'number')}")
    rates = table.get("rates")
    if not rates or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
        raise _fail(
            source, "serving.rates", f"must be a non-empty list of rates above 0 (or inf), got {rates!r}"
        )
    requests = table.get("requests", 32)
    if requests < 1:
        raise _fail(source, "serving.requests", f"must be at least 1, got {requests}")
    if table.get("concurrency", 1) < 1:
        raise _fail(source, "serving.concurrency", f"must be at least 1, got {table['concurrency']}")
    if table.get("slo_ttft_ms", 1) <= 0:
        raise _fail(source, "serving.slo_ttft_ms", f"must be above 0, got {table['slo_ttft_ms']}")
    return {
        "rates": tuple(dict.fromkeys(float(r) for r in rates)),
        "requests": requests,
        "concurrency": table.get("concurrency"),
        "slo_ttft_ms": table.get("slo_ttft_ms"),
    }
