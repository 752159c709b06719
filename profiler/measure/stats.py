"""Summary statistics of repeated measurements, as stored in every result record."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float | None]) -> dict | None:
    """{median, mean, stdev, min, max, p90, p99, values}; None when nothing was measured.

    stdev is the sample standard deviation (n - 1), None for a single value.
    """
    measured = [float(v) for v in values if v is not None]
    if not measured:
        return None
    return {
        "median": statistics.median(measured),
        "mean": statistics.fmean(measured),
        "stdev": statistics.stdev(measured) if len(measured) > 1 else None,
        "min": min(measured),
        "max": max(measured),
        "p90": percentile(measured, 90),
        "p99": percentile(measured, 99),
        "values": measured,
    }


def coefficient_of_variation(stats: dict | None) -> float | None:
    """stdev / mean of a stats object, None where undefined."""
    if not stats or stats["stdev"] is None or not stats["mean"]:
        return None
    return stats["stdev"] / stats["mean"]
