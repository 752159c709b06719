"""What every command shares: the Typer app, the consoles, the one-line failure, the progress bar."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
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


def fail(message: str) -> typer.Exit:
    """Bad input: one line on stderr, exit code 2."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


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
        err.print(f"  {note}", highlight=False)
    if runner.sampler is None:
        err.print(f"  GPU memory and energy: not measured ({runner.nvml_reason})", highlight=False)


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
    sweep: str | None = None,
    isolate: bool = False,
    py_spy: Path | None = None,
    **runner_options,
) -> tuple[list[dict], list]:
    """Measure planned points with one progress bar, each record appended as soon as it exists.

    Returns (records, the runners used); a py-spy flamegraph covers the measuring when asked for.
    """
    from profiler.pyspy import PySpyError, start_py_spy, stop_py_spy
    from profiler.records import new_run_id
    from profiler.sweep import run_points

    records, runners, spies = [], [], []

    def on_model(runner) -> None:
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

            def on_point(point) -> None:
                done[0] = 0
                bar.update(
                    task, description=f"{point.model} {point.method} @ {point.label} batch {point.batch_size}"
                )

            def on_request() -> None:
                done[0] += 1
                bar.advance(task)

            for record in run_points(
                points,
                output,
                sweep,
                new_run_id(),
                isolate,
                on_point=on_point,
                on_request=on_request,
                on_model=on_model,
                on_load=lambda point: bar.update(task, description=f"building {point.model}…"),
                **runner_options,
            ):
                # a failed or isolated point did not report all its requests: count the rest as done
                bar.advance(task, record["config"]["warmup"] + record["config"]["repeats"] - done[0])
                records.append(record)
    finally:
        for spy in spies:
            stop_py_spy(spy)
    return records, runners
