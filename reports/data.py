"""Reading result files for reports: records sorted by kind, and the keys that group them."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hired.methods import METHODS
from profiler.results.schema import problem
from profiler.results.store import iter_lines
from profiler.results.views import peak_memory_gib
from workloads.plan import MAX_POINTS

METHOD_ORDER = list(METHODS)  # the registry's order: baseline, HiRED, the field's methods, baselines


@dataclass
class Results:
    points: list[dict] = field(default_factory=list)  # measured points, every status
    boundaries: list[dict] = field(default_factory=list)  # "kind": "oom_boundary"
    predictions: list[dict] = field(default_factory=list)  # "kind": "prediction"
    accuracy: list[dict] = field(default_factory=list)  # "kind": "accuracy" (lmms-eval task metrics)
    checks: list[dict] = field(default_factory=list)  # "kind": "instrument_check" (profiler.bench.checks)
    serving: list[dict] = field(default_factory=list)  # "kind": "serving" (serve-bench, one per rate)
    files: list[Path] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # (file, reason) -> lines not used
    duplicates: int = 0  # identical records read more than once (a file named twice, a folder and a file)
    superseded: int = 0  # older records of a point measured again on the same machine (not reported)

    @property
    def skipped_lines(self) -> int:
        return sum(self.skipped.values())

    @property
    def suite_versions(self) -> Counter:
        return Counter(r.get("suite_version") or "unknown" for r in [*self.points, *self.serving])


def result_files(paths: list[Path]) -> list[Path]:
    """The JSON Lines files named, or found below the folders named (sorted), each once."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(path)
    return list({f.resolve(): f for f in files}.values())


def _slim(record: dict) -> dict:
    """Drop the raw per-request values (reports read the statistics): memory stays bounded."""
    for value in (record.get("metrics") or {}).values():
        if isinstance(value, dict):
            value.pop("values", None)
            for inner in value.values():
                if isinstance(inner, dict):
                    inner.pop("values", None)
    record.pop("outputs", None)
    return record


def load_results(paths: list[Path]) -> Results:
    """Every usable record of the files (streamed line by line); the rest skipped and counted by reason.

    Memory stays bounded: a point measured again (same point key, same machine) keeps its newest record
    (the others are counted as superseded), identical lines are kept once, and past MAX_POINTS records
    a report holds no more (counted, never silently)."""
    results = Results()
    kept: dict[tuple, tuple[bytes, dict]] = {}  # identity -> (digest of the line, record)
    for path in result_files(paths):
        results.files.append(path)
        try:
            for record, why, raw in iter_lines(path):
                why = why or problem(record)
                if why:
                    results.skipped[(str(path), why)] += 1
                    continue
                digest = hashlib.sha1(raw).digest()
                key = identity(record, digest)
                if key in kept:
                    old_digest, old = kept[key]
                    if old_digest == digest:
                        results.duplicates += 1
                        continue
                    results.superseded += 1
                    if (record.get("created_at") or "") < (old.get("created_at") or ""):
                        continue  # the one kept is newer
                elif len(kept) >= MAX_POINTS:
                    results.skipped[(str(path), f"beyond the {MAX_POINTS:,} records one report holds")] += 1
                    continue
                if record.get("hardware") is None:
                    record["hardware"] = {}
                kept[key] = (digest, _slim(record))
        except OSError as exc:
            results.skipped[(str(path), f"unreadable: {exc.strerror or exc}")] += 1
    target = {
        "oom_boundary": results.boundaries,
        "prediction": results.predictions,
        "accuracy": results.accuracy,
        "instrument_check": results.checks,
        "serving": results.serving,
    }
    for _, record in kept.values():
        target.get(record.get("kind", "point"), results.points).append(record)
    return results


def identity(record: dict, digest: bytes) -> tuple:
    """What makes two records the same measurement: a point's key on one machine; else the line itself."""
    config = record.get("config") or {}
    key = config.get("point_key")
    if record.get("kind", "point") == "point" and isinstance(key, str):
        return ("point", key, machine(record))
    if record.get("kind") == "serving" and isinstance(config.get("serving_key"), str):
        return ("serving", config["serving_key"], machine(record))
    return ("line", digest)


def machine(record: dict) -> str:
    """The hardware a record was measured on: GPU name (or CPU), and the memory cap if any."""
    hw = record.get("hardware") or {}
    if hw.get("gpu_name"):
        name = hw["gpu_name"]
    else:  # no fingerprint at all: a point that failed before a model was built, on a machine unknown
        name = f"CPU ({hw['cpu']})" if hw.get("cpu") else "unknown machine"
    cap = (record.get("config") or {}).get("memory_cap_gib")
    return f"{name}, cap {cap:g} GiB" if cap else name


def image_label(config: dict) -> str:
    sizes = config.get("image_sizes") or []
    unique = list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    return "+".join(unique) or "?"


def workload(record: dict) -> tuple:
    """What must match for points to be compared: model, weights, dtype, fidelity, images, tokens, engine,
    machine."""
    c = record["config"]
    return (
        c.get("model"),
        c.get("weights"),
        c.get("dtype"),
        c.get("fidelity"),
        image_label(c),
        c.get("new_tokens"),
        c.get("engine", "eager"),
        machine(record),
    )


def workload_title(key: tuple) -> str:
    model, weights, dtype, fidelity, images, tokens, engine, where = key
    ref = ", reference fidelity" if fidelity == "reference" else ""
    engine = f", {engine} engine" if engine != "eager" else ""
    return (
        f"{model} ({weights} weights, {dtype}{ref}{engine}) · {images} images · {tokens} new tokens · {where}"
    )


def spread(record: dict, metric: str) -> float | None:
    stats = (record.get("metrics") or {}).get(metric)
    return stats.get("stdev") if isinstance(stats, dict) else None


def peak_memory(record: dict) -> tuple[float | None, str | None]:
    """(GiB, which figure) a record's peak memory is compared by (profiler.results.views.peak_memory_gib)."""
    return peak_memory_gib(record.get("metrics"))


def method_rank(method: str) -> int:
    """A method's place in the registry's order; a method the registry lacks comes after all of them."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def method_key(record: dict) -> tuple:
    c = record["config"]
    budget = c.get("budget")
    return (method_rank(c["method"]), c["method"], 2.0 if isinstance(budget, str) else budget)
