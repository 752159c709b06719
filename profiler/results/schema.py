"""The types of a result record's fields, per kind, declared once as data: what readers check before they
use a record (docs/metrics.md, the record schema).

A spec is a name from SCALARS ("number", "whole", "size", "fraction", "pair", "text", ...), "any" or
"stats"; a tuple (any of those); a dict (an object whose fields may each be absent or null unless their
name ends in "!"; unknown fields allowed: newer writers add them); a one-item list (a list of that, no
null items); or MAP(spec) (an object of any keys, each value that spec). A record whose field has
another type is skipped and counted with the field's path, never read into a traceback.
"""

from __future__ import annotations

import re

SIZE_LIMIT = 1 << 20  # "size": batch sizes, token counts, pixels; anything larger is no measurement made here
DEPTH_LIMIT = 32  # nesting inside a free-form field (method_params); real values are flat


class MAP:
    def __init__(self, spec):
        self.spec = spec


STATS = "stats"
SIZES = ["pair"]  # [[width, height], ...]
CONFIG = {
    "model": "text",
    "weights": "text",
    "dtype": "text",
    "device": "text",
    "method": "text",
    "budget": ("fraction", "text"),  # a fraction kept, or "adaptive"
    "fidelity": "text",
    "method_params": MAP("any"),
    "batch_size": "size",
    "image_sizes": SIZES,
    "image_source": "text",
    "prompt": "text",
    "prompt_tokens": ["size"],
    "new_tokens": "size",
    "warmup": "size",
    "repeats": "size",
    "memory_cap_gib": "number",
    "seed": "whole",
    "engine": "text",
    "min_duration_s": "number",
    "point_key": "text",
}
HARDWARE = {
    "gpu_name": "text",
    "gpu_memory_gib": "number",
    "driver": "text",
    "cuda": "text",
    "cpu": "text",
    "cpu_count": "size",
    "ram_gib": "number",
    "torch": "text",
    "transformers": "text",
    "python": "text",
    "platform": "text",
}
POINT_METRICS = {
    "ttft_s": STATS,
    "tpot_s": STATS,
    "e2e_s": STATS,
    "decode_tokens_per_s": STATS,
    "e2e_tokens_per_s": STATS,
    "prefill_tokens_per_s": STATS,
    "itl_s": STATS,
    "phases_s": MAP(STATS),
    "peak_memory_gib": MAP("number"),
    "energy_j": {"per_request": STATS, "per_token": STATS},
    "energy_method": "text",
    "nvml_sample_hz": STATS,
    "visual_tokens": {
        "full": ["size"],
        "kept": ["size"],
        "achieved_budget": ["number"],
        "token_layer_share": ["number"],
    },
    "warnings": ["text"],
    "unavailable": MAP("text"),
    "requests": "size",
    "compile_s": "number",
    "agreement": {"first_token!": "fraction0", "prefix!": STATS, "kl_first!": STATS},
}
COMMON = {
    "schema_version": "whole",
    "kind": "text",
    "run_id": "text",
    "created_at": "text",
    "suite_version": "text",
    "status": "text",
    "error": "text",
    "hardware": HARDWARE,
}
KIND_SPECS = {
    "point": {**COMMON, "config": CONFIG, "outputs": [["whole"]], "metrics": POINT_METRICS},
    "oom_boundary": {
        **COMMON,
        "config": CONFIG,
        "metrics": {
            "oom_boundary": {
                "largest_fitting": "size",
                "smallest_failing": "size",
                "probes": ["size"],
                "stopped_by": "text",
                "predicted_largest": "size",
            }
        },
    },
    "prediction": {
        **COMMON,
        **{k: CONFIG[k] for k in ("model", "dtype", "method", "budget", "fidelity", "method_params")},
        "budget_label": "text",
        "stack": "text",  # profiler.capacity.model.STACKS; absent before the released stack was modelled
        "image_sizes": SIZES,
        "new_tokens": "size",
        "memory_gib": "number",
        "tokens_per_image": "size",
        "peak_gib_by_batch": MAP("number"),
        "largest_batch": "size",
    },
    "accuracy": {
        **COMMON,
        "config": {**CONFIG, "limit": "size", "task": "text", "tasks": ["text"]},
        "metrics": {
            "task": "text",
            "metric": "text",
            "value": "number",
            "stderr": "number",
            "samples": "size",
            "achieved_budget": "number",
        },
    },
    "instrument_check": {
        **COMMON,
        "check": "text",
        "what": "text",
        "unit": "text",
        "tolerance": "number",
        "difference": "number",
        "measured": "number",
        "reference": "number",
        "verdict": "text",
        "note": "text",
        "config": MAP("any"),
    },
}
# what a reader cannot do without, per kind (checked before the types: the message names the field)
# what readers cannot do without (never null), per kind; checked before the types, the message names it
POINT_KEYS = ("config.model", "config.weights", "config.dtype", "config.method", "config.budget")
REQUIRED = {
    "point": (*POINT_KEYS, "config.fidelity", "config.batch_size", "config.new_tokens"),
    "oom_boundary": (*POINT_KEYS, "config.fidelity", "metrics.oom_boundary.largest_fitting"),
    "prediction": ("model", "dtype", "method", "budget", "budget_label", "memory_gib"),
    "accuracy": ("config.model", "config.weights", "config.method", "config.budget"),
    "instrument_check": ("check", "verdict"),
}


def type_problem(value, spec, path: str = "") -> str | None:
    """Why `value` does not fit `spec` (naming the field), or None. A null field fits every spec."""
    if value is None:
        return None
    if spec == "any":  # any value, but not one nested so deep that printing it would recurse too far
        return f"{path} is nested deeper than {DEPTH_LIMIT}" if _deeper(value, DEPTH_LIMIT) else None
    if isinstance(spec, tuple):
        fits = any(type_problem(value, s, path) is None for s in spec)
        return None if fits else f"{path} is not {' or '.join(map(_name, spec))}"
    if isinstance(spec, dict | MAP):
        if not isinstance(value, dict):
            return f"{path or 'record'} is not an object"
        if isinstance(spec, MAP):
            fields = [(key, item, spec.spec, False) for key, item in value.items()]
        else:
            fields = [(k.rstrip("!"), value.get(k.rstrip("!")), s, k.endswith("!")) for k, s in spec.items()]
        for key, item, inner, required in fields:
            where = f"{path}.{key}" if path else str(key)
            if item is None and required:
                return f"{where} is missing"
            if why := type_problem(item, inner, where):
                return why
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{path} is not a list"
        for i, item in enumerate(value):
            if item is None:  # a field may be null; an item of a list is a value
                return f"{path}[{i}] is null"
            if why := type_problem(item, spec[0], f"{path}[{i}]"):
                return why
        return None
    if spec == STATS:
        if not isinstance(value, dict) or not all(is_number(value.get(k)) for k in ("median", "mean")):
            return f"{path} is not a stats object"
        for key, item in value.items():
            inner = {"values": ["number"], "stdev": "nonneg"}.get(key, "number")
            if why := type_problem(item, inner, f"{path}.{key}"):
                return why
        return None
    return None if SCALARS[spec][0](value) else f"{path} is not {_name(spec)}"


def record_problem(record: dict, kind: str) -> str | None:
    """Why a record of `kind` cannot be read: a required field missing, or a field of the wrong type."""
    for path in REQUIRED[kind]:
        value = record
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return f"no {path}"
    return type_problem(record, KIND_SPECS[kind])


def _deeper(value, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` deep (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            stack.extend((inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return False


def is_number(value) -> bool:
    """A JSON number that is a number here: not a boolean, finite (and not near float's edge)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# name -> (test, what the test accepts, in words)
SCALARS = {
    "number": (is_number, "a number"),
    "whole": (is_whole, "a whole number"),
    "nonneg": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    "fraction0": (lambda v: is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "size": (lambda v: is_whole(v) and 0 <= v <= SIZE_LIMIT, f"a whole number in 0..{SIZE_LIMIT}"),
    "pair": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(is_whole(x) and 0 < x <= SIZE_LIMIT for x in v),
        "[width, height]",
    ),
    "text": (lambda v: isinstance(v, str), "text"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
}


def _name(spec) -> str:
    if isinstance(spec, str):
        return SCALARS[spec][1] if spec in SCALARS else spec
    return "a list" if isinstance(spec, list) else "an object"


GIB = 2**30


def gib(value: int | None) -> float | None:
    return None if value is None else value / GIB


def parse_gib(text: str) -> float:
    """'24GiB', '24GB', '24G', '800MiB' or a plain number of GiB -> GiB."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    units = {"": 1.0, "g": 1.0, "gib": 1.0, "gb": 1e9 / GIB, "mib": 1 / 1024, "m": 1 / 1024, "mb": 1e6 / GIB}
    if not match or match[2].lower() not in units:
        raise ValueError(f"memory size must look like 24GiB, 24GB or 800MiB, got {text!r}")
    return float(match[1]) * units[match[2].lower()]
