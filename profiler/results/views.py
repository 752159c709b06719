"""What a results table shows, whoever draws it (the console's `run` table, the report): a record's
baseline, its method label and telling parameters, its agreement and its peak memory, read from records
alone."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from hired.spec import BASELINE


def varying_params(records: list[dict]) -> list[str]:
    """Per record, 'alpha=0.3 ...' for each method parameter whose value differs among the records of
    its method (so two points of one method are told apart), else ''."""
    values: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        for name, value in (r["config"].get("method_params") or {}).items():
            values[r["config"]["method"]][name].add(json.dumps(value))
    return [
        " ".join(
            f"{name}={json.dumps((r['config'].get('method_params') or {}).get(name))}"
            for name, seen in sorted(values[r["config"]["method"]].items())
            if len(seen) > 1
        )
        for r in records
    ]


def fmt(value: float | None, spec: str = ".3g", scale: float = 1.0) -> str:
    """A number as tables write it, 'n/a' for none (an unscaled whole number stays whole)."""
    return "n/a" if value is None else format(value if scale == 1 else value * scale, spec)


def ratio_text(value: float | None, base: float | None, invert: bool = False) -> str:
    if value is None or base is None or value == 0 or base == 0:
        return "n/a"
    return f"{(base / value) if invert else (value / base):.2f}×"


def tokens_text(visual: dict) -> str:
    kept, full = visual["kept"], visual["full"]
    share = sum(kept) / sum(full)
    percent = f"{share:.1%}" if share < 0.1 else f"{share:.0%}"
    if len(set(kept)) == 1 and len(set(full)) == 1:
        return f"{kept[0]}/{full[0]} ({percent})"
    return f"Σ {sum(kept)}/{sum(full)} ({percent})"


AGREEMENT_HEADER = "agreement\n1st · prefix · KL"
MEANINGLESS = "random weights: the outputs, and so agreement and accuracy, carry no meaning"


def agreement_text(record: dict) -> str:
    """'1st-token share · mean matching prefix · mean first-token KL (nats)', or 'n/a'."""
    found = (record.get("metrics") or {}).get("agreement")
    if not found:
        return "n/a"
    kl = found.get("kl_first")
    kl_text = "n/a" if kl is None else f"{kl['mean']:.3f}"
    return f"{found['first_token']:.2f} · {found['prefix']['mean']:.2f} · {kl_text}"


def baselines(rows: list[dict]) -> Callable[[dict], dict | None]:
    """record -> the baseline it is compared with: the ok `none` point of its own run with its model,
    batch size, fidelity and engine, else of any run with those. Indexed once: a report of 20,000 points
    looks each up in constant time."""
    first: dict[tuple, dict] = {}  # (model, batch, fidelity, engine) -> the first baseline
    own: dict[tuple, dict] = {}  # the same and the run id -> the run's first baseline

    def key(record: dict) -> tuple:
        c = record["config"]
        return (c.get("model"), c.get("batch_size"), c.get("fidelity"), c.get("engine", "eager"))

    for r in rows:
        if r["config"]["method"] == BASELINE and r["status"] == "ok":
            first.setdefault(key(r), r)
            own.setdefault((*key(r), r.get("run_id")), r)

    def baseline_of(record: dict) -> dict | None:
        return own.get((*key(record), record.get("run_id"))) or first.get(key(record))

    return baseline_of


def method_label(record: dict, params: str = "") -> str:
    """A point's method as tables show it: the baseline marked, the parameters telling it apart."""
    c = record["config"]
    return c["method"] + (" (baseline)" if c["method"] == BASELINE else "") + (f" {params}" if params else "")


# The one memory figure tables and plots compare: torch max allocated (what the HiRED paper reports),
# else NVML's process peak, else NVML's device peak, else (a CPU) the process's host peak RSS.
PEAK_MEMORY_ORDER = ("torch_allocated", "nvml_process", "nvml_device", "host_rss")


def peak_memory_gib(metrics: dict | None) -> tuple[float | None, str | None]:
    """(GiB, which figure) of a record's metrics; (None, None) where no peak was measured."""
    peaks = (metrics or {}).get("peak_memory_gib") or {}
    for key in PEAK_MEMORY_ORDER:
        if peaks.get(key) is not None:
            return peaks[key], key
    return None, None


def median(record: dict, metric: str) -> float | None:
    """The median of a record's stats object `metric`; None where the record has none."""
    stats = (record.get("metrics") or {}).get(metric)
    return stats.get("median") if isinstance(stats, dict) else None
