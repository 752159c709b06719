"""How a point is measured, apart from what is measured (MLPerf loadgen's TestSettings): the runner gets
one of these per point and keeps none of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from workloads.point import DEFAULTS, Point


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = DEFAULTS["warmup"]  # unmeasured requests first
    repeats: int = DEFAULTS["repeats"]  # measured requests, at least
    min_duration: float = DEFAULTS["min_duration"]  # and measured for at least this many seconds
    seed: int = DEFAULTS["seed"]  # the random method's, and torch's before the first request
    agreement: bool = True  # one more (untimed) request per point, compared with the baseline's outputs
    save_outputs: bool = False  # each sample's generated token ids in the record
    torch_trace: Path | None = None  # a Chrome trace of one more request per point (OUT.METHOD.json)

    def for_point(self, point: Point) -> MeasureSettings:
        """The run's policy with the point's own counts (a point's warm-up, repeats, duration and seed are
        part of what it asks, and of its key)."""
        return replace(
            self, warmup=point.warmup, repeats=point.repeats, min_duration=point.min_duration, seed=point.seed
        )

    def trace_path(self, point: Point) -> Path | None:
        """out.json -> out.hired.json: one Chrome trace per point; None when no trace is asked for."""
        base = self.torch_trace
        return None if base is None else base.with_name(f"{base.stem}.{point.method}{base.suffix}")
