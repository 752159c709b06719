"""What every command shares: the Typer app, the consoles, the one-line failure, the progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(
    help="Benchmark LLaVA-Next with and without visual-token dropping (HiRED, ...): "
    "time to first token, tokens/s and peak GPU memory.",
    epilog="Example: hired-bench run --budget 0.2 --batch 4  (HiRED keeping 20% of the visual tokens, "
    "4 images per request, against the full-token baseline)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal [brackets]
    context_settings={"max_content_width": 120},
)
# rich falls back to 80 columns when not on a terminal; logs and pipes get room for the whole table
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Benchmark LLaVA-Next with and without visual-token dropping."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """One error line on stderr; exit code 2 (bad input) unless told (1: the disk refused a write)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # [eval] is text
    return typer.Exit(code=code)


def say(text: str) -> None:
    """A plain line on stderr: paths and messages are text, never rich markup (a folder named [eval])."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def progress(unit: str = "requests") -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def describe(runner) -> None:
    """What is measured, said plainly: model, weights, dtype, device, and how memory is read."""
    lm = runner.lm
    dtype_name = str(lm.dtype).removeprefix("torch.")
    err.print(
        f"model: [bold]{lm.name}[/] · {lm.weights} weights · {dtype_name} on {lm.device}", highlight=False
    )
    for note in lm.notes:
        say(f"  {note}")
    if runner.sampler is None:
        say(f"  GPU memory and energy: not measured ({runner.nvml_reason})")


def print_warnings(records: list[dict]) -> None:
    for record in records:
        for warning in (record.get("metrics") or {}).get("warnings", []):
            err.print(
                f"[yellow]warning[/] ({record['config']['method']}): {warning}",
                highlight=False,
                soft_wrap=True,
            )


def measure(
    points: list,
    output: Path,
    policy,
    sweep: str | None = None,
    isolate: bool = False,
    py_spy: Path | None = None,
) -> tuple[list[dict], list]:
    """Measure planned points with one progress bar, each record appended as soon as it exists.

    Returns (records, the runners used); a py-spy flamegraph covers the measuring when asked for.
    """
    from profiler.instruments.pyspy import PySpyError, start_py_spy, stop_py_spy
    from profiler.orchestrate.groups import Observer
    from profiler.orchestrate.isolated import run_isolated_points
    from profiler.orchestrate.local import run_points
    from profiler.results.store import WriteFailed, new_run_id

    records, runners, spies, started = [], [], [], []
    warn_untested_versions()

    def opened(runner) -> None:
        describe(runner)
        runners.append(runner)
        if py_spy is not None and not spies:
            try:
                spies.append(start_py_spy(py_spy))
            except PySpyError as exc:
                raise fail(str(exc)) from None

    try:
        with progress() as bar:
            task = bar.add_task("building the model…", total=sum(p.warmup + p.repeats for p in points))
            done = [0]

            def point(point) -> None:
                done[0] = 0
                started.append(time.perf_counter())
                bar.update(
                    task, description=f"{point.model} {point.method} @ {point.label} batch {point.batch_size}"
                )

            def request() -> None:
                done[0] += 1
                bar.advance(task)

            def loading(point) -> None:
                bar.update(task, description=f"building {point.model}…")

            observer = Observer(loading=loading, opened=opened, point=point, request=request)
            run = run_isolated_points if isolate else run_points
            for record in run(points, output, sweep, new_run_id(), policy, observer=observer):
                # a failed or isolated point did not report all its requests: count the rest as done
                bar.advance(task, record["config"]["warmup"] + record["config"]["repeats"] - done[0])
                records.append(record)
                if len(records) == 1 and len(points) > 1 and sweep is not None:
                    say_eta(time.perf_counter() - started[0], points)
    except WriteFailed as exc:
        raise write_failed(exc, [exc.record]) from None
    finally:
        for spy in spies:
            stop_py_spy(spy)
    return records, runners


def warn_untested_versions() -> None:
    """Once per measuring command: a torch or transformers the tests have not proven may break a method."""
    from profiler.instruments.hardware import untested_versions

    for line in untested_versions():
        err.print(
            f"[yellow]warning[/]: {escape(line)}: the methods' hooks are tested only inside it "
            "(hired-bench env)",
            highlight=False,
            soft_wrap=True,
        )


def say_eta(first_s: float, points: list) -> None:
    """After the first point: how long the rest should take, scaled by their requests."""
    first = points[0].warmup + points[0].repeats
    rest = sum(p.warmup + p.repeats for p in points[1:])
    eta = first_s / max(first, 1) * rest
    when = f"{eta / 60:.0f} min" if eta >= 120 else f"{eta:.0f} s"
    err.print(
        f"first point took {first_s:.1f} s; about {when} for the other {len(points) - 1} "
        "(larger batches take longer)",
        highlight=False,
    )


def write_failed(exc, unwritten: list[dict]) -> typer.Exit:
    """A results file that refuses a write: the records not written go to stdout, one line says why."""
    for record in unwritten:
        print(json.dumps(record))
    config = exc.record.get("config") or {}
    what = f"{config.get('method', exc.record.get('kind', 'a record'))} at batch {config.get('batch_size')}"
    return fail(
        f"cannot write to {exc.path} ({exc.reason}) while recording {what}: every earlier record is "
        f"intact; {len(unwritten)} unwritten record(s) printed on stdout",
        code=1,
    )
