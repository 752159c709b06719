"""Sweep files: a grid of points in TOML, validated with errors that name the bad key.

    description = "what the grid is for"
    models = ["llava-next-7b"]          # presets, folders or cached Hugging Face ids
    batch_sizes = [1, 2, 4, 8]
    image_sizes = ["600x600"]           # one entry per point; "600x600,1000x300" mixes sizes in a batch
    new_tokens = [15, 64]
    [[methods]]
    name = "hired"
    budgets = [0.1, 0.2, 0.4]          # or "adaptive" for prumerge / prumerge+
    alpha = 0.5                         # any of the method's parameters

Optional top-level keys: weights, dtype, device, fidelity, prompt, warmup, repeats, seed,
memory_cap, output. The baseline (`none`) is measured whether listed or not.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workloads.errors import InputError
from workloads.images import parse_size
from workloads.presets import DEFAULT_PROMPT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {
    "description": str,
    "models": list,
    "weights": str,
    "dtype": str,
    "device": str,
    "fidelity": str,
    "prompt": str,
    "batch_sizes": list,
    "image_sizes": list,
    "new_tokens": list,
    "warmup": int,
    "repeats": int,
    "seed": int,
    "memory_cap": str,
    "output": str,
    "methods": list,
}
REQUIRED = ("models", "batch_sizes", "methods")
METHOD_KEYS = {"name", "budgets", "fidelity", "alpha", "l_init", "l_final", "layer", "neighbours"}


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep, as written (auto values unresolved), which makes its key stable."""

    model: str
    weights: str
    dtype: str
    device: str
    memory_cap: str | None
    method: str
    budget: float | None  # None: adaptive
    fidelity: str
    params: dict = field(hash=False)
    batch_size: int = 1
    image_sizes: tuple[tuple[int, int], ...] = ((600, 600),)
    new_tokens: int = 15
    prompt: str = DEFAULT_PROMPT
    warmup: int = 2
    repeats: int = 5
    seed: int = 0

    @property
    def key(self) -> str:
        """Stable identity of the point: what --resume matches records against."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def model_group(self) -> tuple:
        """Points with the same group share one loaded model."""
        return (self.model, self.weights, self.dtype, self.device, self.memory_cap)


@dataclass
class Sweep:
    name: str
    description: str
    output: Path
    points: list[SweepPoint]


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


def _positive_ints(source: str, key: str, values) -> list[int]:
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise _fail(source, key, f"must be a non-empty list of whole numbers >= 1, got {values!r}")
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


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file; every problem is an InputError naming the file and key."""
    from hired.methods import FIDELITIES, METHODS, VisionShape, check_point

    source = path.name
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"sweep file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from None
    _unknown(source, "", data, TOP_KEYS)
    for key in REQUIRED:
        if key not in data:
            raise _fail(source, key, "missing (required)")
    for key, kind in TOP_KEYS.items():
        if key in data and not isinstance(data[key], kind):
            raise _fail(source, key, f"must be a {kind.__name__}, got {type(data[key]).__name__}")
    models = data["models"]
    if not models or not all(isinstance(m, str) and m for m in models):
        raise _fail(source, "models", "must be a non-empty list of model names")
    batch_sizes = _positive_ints(source, "batch_sizes", data["batch_sizes"])
    new_tokens = _positive_ints(source, "new_tokens", data.get("new_tokens", [15]))
    image_sizes = _image_sizes(source, data.get("image_sizes", ["600x600"]))
    for key in ("warmup", "repeats", "seed"):
        if key in data and data[key] < (1 if key == "repeats" else 0):
            raise _fail(source, key, f"out of range: {data[key]}")
    fidelity = data.get("fidelity", "paper")
    if fidelity not in FIDELITIES:
        raise _fail(source, "fidelity", f"must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")

    grid = [("none", 1.0, fidelity, {})]  # the baseline is always measured
    for i, entry in enumerate(data["methods"]):
        if not isinstance(entry, dict):
            raise _fail(source, f"methods[{i}]", "each method is a table ([[methods]] with name = ...)")
        _unknown(source, f"methods[{i}].", entry, METHOD_KEYS)
        if entry.get("name") not in METHODS:
            raise _fail(
                source, f"methods[{i}].name", f"unknown method {entry.get('name')!r} ({', '.join(METHODS)})"
            )
    for i, entry in enumerate(data["methods"]):
        name = entry["name"]
        if name == "none":
            continue
        method_fidelity = entry.get("fidelity", fidelity)
        budgets = _budgets(source, f"methods[{i}].budgets", entry.get("budgets", []))
        if not budgets:
            raise _fail(source, f"methods[{i}].budgets", f"{name} needs at least one budget")
        params = {k: v for k, v in entry.items() if k not in ("name", "budgets", "fidelity")}
        known = METHODS[name].defaults(VisionShape(depth=24, feature_layer=22))
        for key in params:
            if key not in known:
                raise _fail(
                    source,
                    f"methods[{i}].{key}",
                    f"{name} takes no such parameter ({', '.join(known) or 'none'})",
                )
        for b in budgets:
            try:
                check_point(METHODS[name], b, method_fidelity)
            except ValueError as exc:
                raise _fail(source, f"methods[{i}]", str(exc)) from None
        grid += [(name, b, method_fidelity, params) for b in budgets]

    common = {
        "weights": data.get("weights", "auto"),
        "dtype": data.get("dtype", "auto"),
        "device": data.get("device", "auto"),
        "memory_cap": data.get("memory_cap"),
        "prompt": data.get("prompt", DEFAULT_PROMPT),
        "warmup": data.get("warmup", 2),
        "repeats": data.get("repeats", 5),
        "seed": data.get("seed", 0),
    }
    # order: one model at a time (built once); within it workload by workload, batch sizes ascending
    # (memory grows monotonically), every method at a batch size before the next size
    points = [
        SweepPoint(
            model=model,
            method=name,
            budget=budget,
            fidelity=fid,
            params=params,
            batch_size=batch,
            image_sizes=sizes,
            new_tokens=tokens,
            **common,
        )
        for model in models
        for tokens in new_tokens
        for sizes in image_sizes
        for batch in batch_sizes
        for name, budget, fid, params in grid
    ]
    output = Path(data.get("output", f"results/{path.stem}.jsonl"))
    return Sweep(path.stem, data.get("description", ""), output, points)
