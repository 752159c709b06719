"""Measuring planned points here (a sweep, or `run`'s): one model load per model group
(orchestrate.groups), each point recorded as soon as it is measured, failures recorded and passed
over, --resume running exactly the points that have no record."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from profiler.measure.settings import MeasureSettings
from profiler.orchestrate.groups import ModelGroups, Observer
from profiler.results.schema import PointConfig, cap_gib
from profiler.results.store import append_record, error_message, make_record, read_records
from workloads.point import Point


def pending_points(points: list[Point], output: Path, resume: bool) -> list[Point]:
    """The points still to measure: all of them, or with --resume those without a record in `output`."""
    if not resume or not output.exists():
        return list(points)
    done = {r.get("config", {}).get("point_key") for r in read_records(output)}
    return [p for p in points if p.key not in done]


def planned_config(point: Point, sweep: str | None) -> dict:
    """A record's config for a point that never reached a model (a failed load, a dead process)."""
    return PointConfig.from_point(point, sweep=sweep).to_dict()


def open_group_runner(first: Point, run_id: str, observer: Observer | None = None):
    """The runner (its model built) for the model group of `first`; vLLM's starts its engines per point."""
    if first.engine == "vllm":
        from profiler.measure.vllm_runner import open_vllm_runner as opener
    else:
        from profiler.measure.session import open_runner as opener

    runner = opener(
        model=first.model,
        weights=first.weights,
        dtype=first.dtype,
        device=first.device,
        seed=first.seed,
        run_id=run_id,
        memory_cap_gib=cap_gib(first.memory_cap),
    )
    runner.on_request = (observer or Observer()).request
    return runner


def failed_load(point: Point, sweep: str | None, run_id: str, exc: Exception) -> dict:
    """The record of a point whose model could not be built."""
    status = "oom" if "out of memory" in str(exc).lower() else "error"
    return make_record(run_id, status, planned_config(point, sweep), {}, None, error=error_message(exc))


def measure_point(runner, point: Point, sweep: str | None, policy: MeasureSettings) -> dict:
    """One point on a loaded model, as a record tagged with the point's key (and the sweep's name)."""
    record = runner.measure_point(point, policy)
    if sweep is not None:
        record["config"]["sweep"] = sweep
    return record


def run_points(
    points: list[Point],
    output: Path,
    sweep: str | None,
    run_id: str,
    policy: MeasureSettings,
    observer: Observer | None = None,
) -> Iterator[dict]:
    """Measure points in order (one model build per model group), appending each record before yielding
    it. (orchestrate.isolated runs each in a process of its own instead.)"""
    observer = observer or Observer()
    groups = ModelGroups(lambda first: open_group_runner(first, run_id, observer), observer)
    with closing(groups):
        for point in points:
            runner, error = groups.enter(point)
            if error is not None:
                record = failed_load(point, sweep, run_id, error)
            else:
                record = measure_point(runner, point, sweep, policy)
            append_record(output, record)
            yield record
