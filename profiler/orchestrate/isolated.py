"""One point in a process of its own (`--isolate`: allocator, CUDA context and crashes all its own):
python -m profiler.orchestrate.isolated --point JSON --output FILE ..."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from profiler.instruments.processes import die_with_parent
from profiler.measure.settings import MeasureSettings
from profiler.orchestrate.groups import Observer
from profiler.orchestrate.local import planned_config, run_points
from profiler.results.store import append_record, make_record, read_records
from workloads.point import Point


def run_isolated(point: Point, output: Path, sweep: str | None, run_id: str, policy: MeasureSettings) -> dict:
    """The point in a process of its own; its record, or an error record saying how the process ended."""
    command = [
        sys.executable,
        "-m",
        "profiler.orchestrate.isolated",
        "--point",
        json.dumps(asdict(point)),
        "--output",
        str(output),
        "--sweep",
        sweep or "",
        "--run-id",
        run_id,
        *([] if policy.agreement else ["--no-agreement"]),
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


def run_isolated_points(
    points: list[Point],
    output: Path,
    sweep: str | None,
    run_id: str,
    policy: MeasureSettings,
    observer: Observer | None = None,
) -> Iterator[dict]:
    """run_points' contract, one process per point."""
    for point in points:
        (observer or Observer()).point(point)
        yield run_isolated(point, output, sweep, run_id, policy)


def _main() -> int:
    """Measure one point in this process and append its record."""
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
    policy = MeasureSettings(agreement=not args.no_agreement)
    for _ in run_points([Point(**spec)], args.output, args.sweep or None, args.run_id, policy):
        pass
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(_main())
