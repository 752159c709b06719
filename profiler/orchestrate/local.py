"""Measuring planned points (a sweep, or `run`'s): one model load per model group, each point
recorded as soon as it is measured, failures recorded and passed over, --resume running exactly
the points that have no record.

Also the entry point of an isolated point (`--isolate`): python -m profiler.orchestrate.local --point JSON ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

from profiler.instruments.processes import die_with_parent
from profiler.results.schema import PointConfig
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


def _cap_gib(point: Point) -> float | None:
    from profiler.results.schema import parse_gib

    return None if point.memory_cap is None else parse_gib(point.memory_cap)


def open_group_runner(first: Point, run_id: str, **runner_options):
    """The runner (its model built) for the model group of `first`."""
    from profiler.measure.session import open_runner

    return open_runner(
        model=first.model,
        weights=first.weights,
        dtype=first.dtype,
        device=first.device,
        seed=first.seed,
        run_id=run_id,
        warmup=first.warmup,
        repeats=first.repeats,
        memory_cap_gib=_cap_gib(first),
        **runner_options,
    )


def failed_load(point: Point, sweep: str | None, run_id: str, exc: Exception) -> dict:
    """The record of a point whose model could not be built."""
    status = "oom" if "out of memory" in str(exc).lower() else "error"
    return make_record(run_id, status, planned_config(point, sweep), {}, None, error=error_message(exc))


def measure_point(runner, point: Point, sweep: str | None) -> dict:
    """One point on a loaded model, as a record tagged with the point's key (and the sweep's name)."""
    record = runner.measure_point(point)
    if sweep is not None:
        record["config"]["sweep"] = sweep
    return record


def run_points(
    points: list[Point],
    output: Path,
    sweep: str | None,
    run_id: str,
    isolate: bool = False,
    on_point: Callable[[Point], None] = lambda p: None,
    on_request: Callable[[], None] = lambda: None,
    on_model: Callable[[object], None] = lambda runner: None,
    on_load: Callable[[Point], None] = lambda point: None,
    **runner_options,
) -> Iterator[dict]:
    """Measure points in order, appending each record before yielding it.

    runner_options go to profiler.measure.session.open_runner (save_outputs, torch_trace); on_load is told
    before a model is built, on_model gets each runner once it is.
    """
    for _, group in groupby(points, key=lambda p: p.model_group):
        group = list(group)
        if isolate:
            for point in group:
                on_point(point)
                yield run_isolated(point, output, sweep, run_id, runner_options.get("agreement", True))
            continue
        first = group[0]
        on_load(first)
        try:
            runner = open_group_runner(first, run_id, **runner_options)
        except Exception as exc:  # the model did not load (over the cap, not found): every point says so
            for point in group:
                on_point(point)
                record = failed_load(point, sweep, run_id, exc)
                append_record(output, record)
                yield record
            continue
        runner.on_request = on_request
        with closing(runner):
            on_model(runner)
            for point in group:
                on_point(point)
                record = measure_point(runner, point, sweep)
                append_record(output, record)
                yield record


def run_isolated(point: Point, output: Path, sweep: str | None, run_id: str, agreement: bool = True) -> dict:
    """The point in a process of its own (full isolation: allocator, CUDA context, crashes)."""
    command = [
        sys.executable,
        "-m",
        "profiler.orchestrate.local",
        "--point",
        json.dumps(asdict(point)),
        "--output",
        str(output),
        "--sweep",
        sweep or "",
        "--run-id",
        run_id,
        *([] if agreement else ["--no-agreement"]),
    ]
    code = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent
    )
    mine = [r for r in read_records(output) if r.get("config", {}).get("point_key") == point.key]
    if mine and code.returncode == 0:
        return mine[-1]
    last = (code.stderr or "").strip().splitlines()[-1:] or [""]
    message = f"isolated point process ended with code {code.returncode}: {last[0]}".strip()
    record = make_record(run_id, "error", planned_config(point, sweep), {}, None, error=message)
    append_record(output, record)
    return record


def _main() -> int:
    """Measure one point in this process and append its record (used by --isolate)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--point", required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--no-agreement", action="store_true")
    args = parser.parse_args()
    spec = json.loads(args.point)
    if spec["image_sizes"] is not None:
        spec["image_sizes"] = tuple(tuple(s) for s in spec["image_sizes"])
    point = Point(**spec)
    for _ in run_points(
        [point], args.output, args.sweep or None, args.run_id, agreement=not args.no_agreement
    ):
        pass
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(_main())
