"""What several report sections share: ratios against a baseline, the baseline's name, whether weights
are random, and what each peak-memory figure is, in words."""

from __future__ import annotations

from hired.spec import BASELINE
from profiler.results.views import median
from reports.data import peak_memory

# what each peak-memory figure is, in words (profiler.results.views.PEAK_MEMORY_ORDER picks one per point)
PEAK_FIGURES = {
    "torch_allocated": "torch's max allocated",
    "nvml_process": "NVML's peak for the process",
    "nvml_device": "NVML's peak for the whole card",
    "host_rss": "the measuring process's peak resident set size on the host (no GPU: weights included)",
}


def is_baseline(record: dict) -> bool:
    return record["config"]["method"] == BASELINE


def random_weights(rows: list[dict]) -> bool:
    return any(r["config"].get("weights") == "random" for r in rows)


def ratios(record: dict, base: dict | None) -> tuple[float | None, float | None, float | None]:
    """(TTFT speed-up, e2e tokens/s ratio, share of peak memory saved) against a baseline."""
    if base is None or record["status"] != "ok":
        return None, None, None
    ttft, b_ttft = median(record, "ttft_s"), median(base, "ttft_s")
    e2e, b_e2e = median(record, "e2e_tokens_per_s"), median(base, "e2e_tokens_per_s")
    mem, b_mem = peak_memory(record)[0], peak_memory(base)[0]
    return (
        b_ttft / ttft if ttft and b_ttft else None,
        e2e / b_e2e if e2e and b_e2e else None,
        1 - mem / b_mem if mem and b_mem else None,
    )
