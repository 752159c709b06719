"""`hired-bench sweep FILE`: the grid of a sweep file, point by point, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import err, fail, measure, out
from profiler.console import results_table
from profiler.records import check_writable
from workloads.errors import InputError


def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (TOML), e.g. workloads/smoke.toml.")],
    resume: Annotated[
        bool, typer.Option(help="Run only the points that have no record in the output yet.")
    ] = False,
    isolate: Annotated[
        bool,
        typer.Option(help="Run every point in its own process (full isolation; loads the model each time)."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="JSON Lines file for the records (default: the file's `output`).")
    ] = None,
) -> None:
    """Measure the grid in FILE: methods x budgets x batch sizes x image sizes x models, point by point."""
    from profiler.sweep import pending_points, repair_tail
    from workloads.sweep import load_sweep

    try:
        spec = load_sweep(file)
        output = output or spec.output
        check_writable(output)
        options.check_plan(spec.points, f"{file.name}: models: ")
    except InputError as exc:
        raise fail(str(exc)) from None
    if cut := repair_tail(output):
        err.print(f"removed a half-written last record ({cut} bytes) from {output}", highlight=False)
    todo = pending_points(spec.points, output, resume)
    done = len(spec.points) - len(todo)
    err.print(
        f"sweep {spec.name}: {len(spec.points)} points"
        + (f" ({spec.duplicates} duplicates dropped)" if spec.duplicates else "")
        + (f", {done} already recorded, {len(todo)} to run" if resume else "")
        + f" -> {output}",
        highlight=False,
    )
    records, _ = measure(todo, output, sweep=spec.name, isolate=isolate)
    print_sweep(records)
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "oom", "error")}
    err.print(
        f"{len(records)} points measured: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error "
        f"· records in {output}",
        highlight=False,
    )
    if counts["error"]:
        raise typer.Exit(code=1)


def print_sweep(records: list[dict]) -> None:
    """One table per workload and batch size, each against its own baseline."""

    def group(r):
        c = r["config"]
        return (c["model"], c["new_tokens"], str(c["image_sizes"][:1]), c["batch_size"])

    for key in sorted({group(r) for r in records}, key=lambda k: (k[0], k[1], k[2], k[3])):
        rows = [r for r in records if group(r) == key]
        c = rows[0]["config"]
        title = f"{c['model']} ({c['weights']}), batch {c['batch_size']}, {c['new_tokens']} new tokens"
        out.print(results_table(rows, title))
