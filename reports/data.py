"""Reading result files for reports: records sorted by kind, and the keys that group them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from profiler.metrics import peak_memory_gib
from profiler.records import read_records_counted

METHOD_ORDER = ["none", "hired", "prumerge", "prumerge+", "random", "pool"]


@dataclass
class Results:
    points: list[dict] = field(default_factory=list)  # measured points, every status
    boundaries: list[dict] = field(default_factory=list)  # "kind": "oom_boundary"
    predictions: list[dict] = field(default_factory=list)  # "kind": "prediction"
    files: list[Path] = field(default_factory=list)
    skipped_lines: int = 0  # lines that were not records (a run killed mid-write)

    @property
    def suite_versions(self) -> Counter:
        return Counter(r.get("suite_version", "unknown") for r in self.points)


def result_files(paths: list[Path]) -> list[Path]:
    """The JSON Lines files named, or found below the folders named (sorted)."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(path)
    return files


def load_results(paths: list[Path]) -> Results:
    results = Results()
    for path in result_files(paths):
        records, skipped = read_records_counted(path)
        results.files.append(path)
        results.skipped_lines += skipped
        for record in records:
            kind = record.get("kind", "point")
            if kind == "oom_boundary":
                results.boundaries.append(record)
            elif kind == "prediction":
                results.predictions.append(record)
            elif "config" in record and "status" in record:
                results.points.append(record)
            else:
                results.skipped_lines += 1
    return results


def machine(record: dict) -> str:
    """The hardware a record was measured on: GPU name (or CPU), and the memory cap if any."""
    hw = record.get("hardware") or {}
    name = hw.get("gpu_name") or f"CPU ({hw.get('cpu') or 'unknown'})"
    cap = (record.get("config") or {}).get("memory_cap_gib")
    return f"{name}, cap {cap:g} GiB" if cap else name


def budget_label(budget) -> str:
    if isinstance(budget, str):
        return budget
    return f"{budget:.0%}" if budget is not None else "n/a"


def image_label(config: dict) -> str:
    sizes = config.get("image_sizes") or []
    unique = list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    return "+".join(unique) or "?"


def workload(record: dict) -> tuple:
    """What must match for points to be compared: model, weights, dtype, fidelity, images, tokens, machine."""
    c = record["config"]
    return (
        c.get("model"),
        c.get("weights"),
        c.get("dtype"),
        c.get("fidelity"),
        image_label(c),
        c.get("new_tokens"),
        machine(record),
    )


def workload_title(key: tuple) -> str:
    model, weights, dtype, fidelity, images, tokens, where = key
    ref = ", reference fidelity" if fidelity == "reference" else ""
    return f"{model} ({weights} weights, {dtype}{ref}) · {images} images · {tokens} new tokens · {where}"


def median(record: dict, metric: str) -> float | None:
    stats = (record.get("metrics") or {}).get(metric)
    return stats.get("median") if isinstance(stats, dict) else None


def spread(record: dict, metric: str) -> float | None:
    stats = (record.get("metrics") or {}).get(metric)
    return stats.get("stdev") if isinstance(stats, dict) else None


def peak_memory(record: dict) -> tuple[float | None, str | None]:
    """(GiB, which figure) a record's peak memory is compared by (defined in profiler.metrics)."""
    return peak_memory_gib(record.get("metrics"))


def method_key(record: dict) -> tuple:
    c = record["config"]
    budget = c.get("budget")
    order = METHOD_ORDER.index(c["method"]) if c["method"] in METHOD_ORDER else len(METHOD_ORDER)
    return (order, c["method"], 2.0 if isinstance(budget, str) else budget)
