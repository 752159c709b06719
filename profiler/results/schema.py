"""The result record's schema (docs/metrics.md): the kinds, statuses and version every writer
stamps; a record's `config` as a dataclass (PointConfig, which the writers build it with); the types of
every kind's fields, declared as data; and `problem`, the one check readers make before they use a record.

A spec is a name from SCALARS ("number", "whole", "size", "fraction", "pair", "text", ...), "any" or
"stats"; a tuple (any of those); a dict (an object whose fields may each be absent or null unless their
name ends in "!"; unknown fields allowed: newer writers add them); a one-item list (a list of that, no
null items); or MAP(spec) (an object of any keys, each value that spec). A record whose field has
another type is skipped and counted with the field's path, never read into a traceback.
"""

from __future__ import annotations

import re
from dataclasses import Field, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1  # what every writer stamps (profiler.results.store); a reader refuses a newer one
STATUSES = ("ok", "oom", "error")
KINDS = ("point", "oom_boundary", "prediction", "accuracy", "instrument_check", "serving")
VERDICTS = ("pass", "fail", "n/a", "error")  # an instrument check's outcome (profiler.bench.checks)
SIZE_LIMIT = 1 << 20  # "size": batch sizes, token counts, pixels; anything larger is no measurement made here
DEPTH_LIMIT = 32  # nesting inside a free-form field (method_params); real values are flat


class MAP:
    def __init__(self, spec):
        self.spec = spec


STATS = "stats"
SIZES = ["pair"]  # [[width, height], ...]


class _Absent:
    """A config key a record does not carry: another kind's, or one added after it was written."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
# the record kinds whose config carries a key ("point" stands for oom_boundary too)
POINT = ("point",)
ACCURACY = ("accuracy",)
BOTH = ("point", "accuracy")


def key(spec=None, kinds: tuple = BOTH, null: bool = True) -> Field:
    """A config key. spec: the type readers check (None: not checked); kinds: the record kinds whose config
    carries it (PointConfig.from_point fills it for them where a point says what it is); null: False for a
    key written only with a value (None leaves it out)."""
    return field(default=ABSENT, metadata={"spec": spec, "kinds": kinds, "null": null})


@dataclass
class PointConfig:
    """A record's `config` (point, oom_boundary and accuracy records): what was measured. The fields are the
    JSON's keys in the order they are written; a field left ABSENT is a key the record does not carry."""

    # every default is ABSENT, one immutable value (hence the noqa: RUF009); key() attaches the metadata
    model: str = key("text")  # the resolved name once a model is loaded, else as asked
    weights: str = key("text")  # "pretrained" | "random" once loaded
    dtype: str = key("text")
    device: str = key("text")
    method: str = key("text")
    budget: float | str = key(("fraction", "text"))  # a fraction kept, or "adaptive"
    fidelity: str = key("text")
    method_params: dict = key(MAP("any"))  # noqa: RUF009  (defaults filled in once a model is loaded)
    tasks: list[str] = key(["text"], ACCURACY)  # noqa: RUF009  (the lmms-eval tasks asked)
    limit: int | None = key("size", ACCURACY)  # samples per task (None: all)
    batch_size: int | None = key("size")  # None on an oom_boundary record (the batch is what was searched)
    image_sizes: list[list[int]] | None = key(SIZES, POINT)  # noqa: RUF009  ([width, height] per sample)
    image_source: str = key("text", POINT)  # "synthetic" or the folder
    prompt: str = key("text", POINT)
    # per sample, text + visual tokens: known once a request ran
    prompt_tokens: list[int] | None = key(["size"], POINT)  # noqa: RUF009
    new_tokens: int = key("size", POINT)
    warmup: int = key("size", POINT)
    repeats: int = key("size", POINT)
    memory_cap_gib: float | None = key("number", POINT)
    seed: int = key("whole")
    engine: str = key("text", POINT)  # "eager" | "compiled" | "vllm"
    min_duration_s: float = key("number", POINT)
    accelerator: str | None = key(None, POINT)  # the GPU type a point asked for on a Ray cluster
    lmms_eval_version: str | None = key(None, ACCURACY)
    point_key: str = key("text")  # workloads.point.Point.key: what --resume matches
    boundary_search: bool = key(None, POINT, null=False)  # on each probe of an oom-boundary search
    sweep: str | None = key(None, POINT, null=False)  # the sweep file's name
    task: str | None = key("text", ACCURACY, null=False)  # an accuracy record's task
    # the vllm engine's start options (hf_overrides with the method, KV and batching settings, its version)
    engine_options: dict | None = key(MAP("any"), (*POINT, "serving"), null=False)  # noqa: RUF009
    # a serving record's load (hired-bench serve-bench): the request rate (requests/s; "inf": all at once),
    # the requests sent at it, the client's concurrency limit (null: none), the TTFT SLO of goodput
    request_rate: float | str = key(("number", "text"), ("serving",), null=False)
    requests: int = key("size", ("serving",), null=False)
    concurrency: int | None = key("size", ("serving",), null=False)
    slo_ttft_ms: float | None = key("number", ("serving",), null=False)
    serving_key: str = key("text", ("serving",), null=False)  # the (point, load) --resume matches
    extra: dict = field(default_factory=dict)  # keys this suite does not know (a newer writer's), in order

    @classmethod
    def from_point(cls, point, kind: str = "point", lm=None, workload=None, **resolved) -> PointConfig:
        """The config of a planned point (workloads.point.Point) for a record of `kind` ("point" for
        oom_boundary too, or "accuracy"), as asked; what only a loaded model knows replaces it: `lm` (a
        workloads.models.LoadedModel: the resolved name, weights, dtype and device), `workload` (the inputs
        built: batch size, picture sizes, source, prompt, new tokens) and `resolved` (any field by name)."""
        asked = {
            "model": point.model,
            "weights": point.weights,
            "dtype": point.dtype,
            "device": point.device,
            "method": point.method,
            "budget": "adaptive" if point.budget is None else point.budget,
            "fidelity": point.fidelity,
            "method_params": point.params,
            "batch_size": point.batch_size,
            "image_sizes": None if point.image_sizes is None else [list(s) for s in point.image_sizes],
            "image_source": point.images or "synthetic",
            "prompt": point.prompt,
            "prompt_tokens": None,
            "new_tokens": point.new_tokens,
            "warmup": point.warmup,
            "repeats": point.repeats,
            # what was asked: a cap that failed to apply is the record's error
            "memory_cap_gib": cap_gib(point.memory_cap),
            "seed": point.seed,
            "engine": point.engine,
            "min_duration_s": point.min_duration,
            "accelerator": point.accelerator,
            "point_key": point.key,
        }
        if lm is not None:
            asked.update(
                model=lm.name,
                weights=lm.weights,
                dtype=str(lm.dtype).removeprefix("torch."),
                device=str(lm.device),
            )
        if workload is not None:
            asked.update(
                batch_size=workload.batch_size,
                image_sizes=[list(image.size) for image in workload.images],
                image_source=workload.image_source,
                prompt=workload.prompt,
                new_tokens=workload.new_tokens,
            )
        carried = {
            f.name: asked[f.name] for f in CONFIG_FIELDS if kind in f.metadata["kinds"] and f.name in asked
        }
        return cls(**{**carried, **resolved})

    @classmethod
    def from_dict(cls, config: dict) -> PointConfig:
        """A config as written by any version of this suite: from_dict(c).to_dict() == c, key order too."""
        known = {k: v for k, v in config.items() if k in CONFIG_NAMES}
        return cls(**known, extra={k: v for k, v in config.items() if k not in CONFIG_NAMES})

    def to_dict(self) -> dict:
        """The JSON object a record carries: the keys it carries in field order, then the unknown ones."""
        out = {}
        for f in CONFIG_FIELDS:
            value = getattr(self, f.name)
            if value is not ABSENT and (value is not None or f.metadata["null"]):
                out[f.name] = value
        return {**out, **self.extra}


CONFIG_FIELDS = [f for f in fields(PointConfig) if f.name != "extra"]
CONFIG_NAMES = frozenset(f.name for f in CONFIG_FIELDS)
# the types readers check, derived from PointConfig: every point key with a spec; accuracy configs add theirs
CONFIG = {
    f.name: f.metadata["spec"]
    for f in CONFIG_FIELDS
    if f.metadata["spec"] is not None and "point" in f.metadata["kinds"]
}
SERVING_CONFIG = {
    **CONFIG,
    **{
        f.name: f.metadata["spec"]
        for f in CONFIG_FIELDS
        if f.metadata["spec"] and f.metadata["kinds"] == ("serving",)
    },
}
ACCURACY_CONFIG = {
    **CONFIG,
    **{
        f.name: f.metadata["spec"]
        for f in CONFIG_FIELDS
        if f.metadata["spec"] is not None and f.metadata["kinds"] == ACCURACY
    },
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
    # the vllm engine's (docs/engines.md): its start-up, and the KV-cache blocks its scheduler held
    "engine_start_s": "number",
    "kv_cache": {
        "block_size": "size",
        "blocks": ["size"],
        "num_blocks": "size",
        "sequence_tokens": "size",
        "max_concurrency": "number",
    },
    # kl_first is null on the vllm engine (no full first-token distribution)
    "agreement": {"first_token!": "fraction0", "prefix!": STATS, "kl_first": STATS},
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
        "config": ACCURACY_CONFIG,
        "metrics": {
            "task": "text",
            "metric": "text",
            "value": "number",
            "stderr": "number",
            "samples": "size",
            "achieved_budget": "number",
        },
    },
    # one per (method, budget, rate) of serve-bench (docs/metrics.md, Serving)
    "serving": {
        **COMMON,
        "config": SERVING_CONFIG,
        "metrics": {
            "duration_s": "number",
            "completed_requests": "size",
            "failed_requests": "size",
            "request_throughput_per_s": "number",
            "output_tokens_per_s": "number",
            "goodput_requests_per_s": "number",
            "slo_ttft_ms": "number",
            "ttft_s": STATS,
            "tpot_s": STATS,
            "itl_s": STATS,
            "e2e_s": STATS,
            "output_tokens": STATS,
            "max_concurrent_requests": "size",
            "errors": ["text"],
            "server_start_s": "number",
            "kv_cache": {
                "block_size": "size",
                "num_blocks": "size",
                "sequence_tokens": "size",
                "max_concurrency": "number",
                "peak_usage": "fraction0",
            },
            "visual_tokens": {"full": ["size"], "kept": ["size"]},
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
    "serving": (*POINT_KEYS, "config.fidelity", "config.request_rate"),
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


def problem(record: dict) -> str | None:
    """Why a parsed line is not a record this suite can use, or None when it is: its version and kind, the
    types of its fields (record_problem), then what the types cannot say (status, budget, batch size)."""
    version = record.get("schema_version")
    if not is_whole(version):
        return "no schema_version"
    if version > SCHEMA_VERSION:
        return f"schema version {version} is newer than this suite's {SCHEMA_VERSION}"
    kind = record.get("kind", "point")
    if kind not in KINDS:
        return f"unknown kind {kind!r}" if isinstance(kind, str) else "kind is not text"
    if why := record_problem(record, kind):
        return why
    if kind == "instrument_check":
        return None if record["verdict"] in VERDICTS else f"unknown verdict {record['verdict']!r}"
    if kind == "prediction":
        return None
    if kind == "serving" and not is_rate(record["config"]["request_rate"]):
        return "config.request_rate is not a rate (requests/s above 0, or inf)"
    budget = record["config"]["budget"]
    if isinstance(budget, str) and budget != "adaptive":
        return "config.budget is not a number"
    if kind != "oom_boundary" and record.get("status") not in STATUSES:
        return "unknown status"
    if kind == "accuracy":
        return _accuracy_problem(record, record.get("metrics"))
    if kind == "point" and record["config"]["batch_size"] < 1:
        return "config.batch_size is below 1"
    if kind == "point" and record["status"] == "ok" and not record.get("metrics"):
        return "an ok record with null metrics"
    return None


def is_rate(value) -> bool:
    return value == "inf" or (is_number(value) and value > 0)


def _accuracy_problem(record: dict, metrics) -> str | None:
    if record["status"] != "ok":
        return None
    ok = (
        isinstance(metrics, dict)
        and isinstance(metrics.get("task"), str)
        and isinstance(metrics.get("metric"), str)
        and is_number(metrics.get("value"))
    )
    return None if ok else "an accuracy record without task, metric or value"


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


def cap_gib(memory_cap: str | None) -> float | None:
    """A point's memory cap (workloads.point.Point.memory_cap) in GiB; None where it has none."""
    return None if memory_cap is None else parse_gib(memory_cap)
