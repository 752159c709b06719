"""`hired-bench eval`: task accuracy of methods (and the full-token baseline) through lmms-eval."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import err, fail, out, warn_untested_versions, write_failed
from profiler.cli.run import DEFAULT_OUTPUT
from profiler.results.store import WriteFailed, check_output, new_run_id
from workloads.errors import InputError
from workloads.point import Inputs, budget_label

NOT_INSTALLED = (
    "lmms-eval is not installed: pip install 'hired-bench[eval]' (docs/accuracy.md says how on a CPU)"
)


@options.command(without=("memory_cap",))
def evaluate(
    tasks: Annotated[
        str, typer.Option(help="lmms-eval task names, comma-separated (e.g. textvqa_val,docvqa_val).")
    ],
    setup: options.ModelOptions,
    choice: options.MethodOptions,
    seed: options.Seed = 0,
    limit: Annotated[
        int | None, typer.Option(help="Questions per task (the first N); all of them when left out.")
    ] = None,
    batch: Annotated[int, typer.Option(help="Questions answered per batch.")] = 1,
    include_path: Annotated[
        Path | None, typer.Option(help="A folder of your own lmms-eval task files (YAML).")
    ] = None,
    allow_download: Annotated[
        bool,
        typer.Option(help="Let datasets download from the Hugging Face Hub; otherwise the cache only."),
    ] = False,
    output: options.Output = DEFAULT_OUTPUT,
    force: options.Force = False,
) -> None:
    """Task accuracy of METHOD at BUDGET and of the full-token baseline, through lmms-eval, with this
    suite's own selection code; one "accuracy" record per task metric."""
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    try:
        plan = check_eval(names, setup, choice, seed, limit, batch, include_path, output)
        from profiler.accuracy import evaluate as accuracy

        if not allow_download:
            accuracy.stay_offline()  # before lmms-eval imports datasets and the Hub client
        options.check_to_measure(plan.points, force)
        warn_untested_versions()
        accuracy.quiet()
        err.print(f"checking {len(names)} task(s) and their datasets…", highlight=False)
        manager = accuracy.task_manager(names, include_path)
        accuracy.check_datasets(names, manager, allow_download)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None

    def on_point(point) -> None:
        err.print(
            f"[bold]{point.model}[/]: {point.method} @ {point.label} on {', '.join(names)}", highlight=False
        )

    records = []
    try:
        for record in accuracy.run_eval(
            plan.points, names, manager, limit, batch, output, new_run_id(), on_point=on_point
        ):
            records.append(record)
    except WriteFailed as exc:
        raise write_failed(exc, [exc.record]) from None
    out.print(accuracy_table(records))
    if any(r["status"] != "ok" for r in records):
        raise typer.Exit(code=1)


def check_eval(names, setup, choice, seed: int, limit, batch: int, include_path, output: Path):
    """The planned points (InputError for anything wrong), before lmms-eval loads."""
    if not names:
        raise InputError("--tasks is empty")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    setup.checked_cap_gib()
    if include_path is not None and not include_path.is_dir():
        raise InputError(f"--include-path: not a folder: {include_path}")
    measure = options.MeasureOptions(warmup=0, repeats=1, seed=seed)
    plan = options.plan_command(setup, choice, Inputs(), batch, measure)
    check_output(output)
    if importlib.util.find_spec("lmms_eval") is None:
        raise InputError(NOT_INSTALLED)
    return plan


def accuracy_table(records: list[dict]):
    """One row per task metric and method; greyed where the weights are random."""
    from rich.markup import escape
    from rich.table import Table

    from profiler.results.views import MEANINGLESS

    table = Table(title="task accuracy (lmms-eval)", title_justify="left", caption_justify="left")
    for name in ("task", "metric", "method", "budget", "value", "± stderr", "questions", "kept"):
        table.add_column(name, justify="left" if name in ("task", "metric", "method") else "right")
    notes = []
    for r in records:
        c, m = r["config"], r["metrics"] or {}
        budget = budget_label(c["budget"])
        if r["status"] != "ok":
            notes.append(r["error"])
            table.add_row(", ".join(c["tasks"]), "", c["method"], budget, f"[red]ERROR[/] ({len(notes)})")
            continue
        cells = [
            f"{m['value']:.3f}",
            "n/a" if m["stderr"] is None else f"{m['stderr']:.3f}",
            str(m["samples"] or "n/a"),
            "n/a" if m["achieved_budget"] is None else f"{m['achieved_budget']:.0%}",
        ]
        if c["weights"] == "random":
            cells = [f"[dim]{cell}[/]" for cell in cells]
        table.add_row(m["task"], m["metric"], c["method"], budget, *cells)
    captions = [f"({i}) {escape(note)}" for i, note in enumerate(notes, 1)]
    if any(r["config"]["weights"] == "random" for r in records):
        captions.append(f"[dim]greyed: {MEANINGLESS}[/]")
    table.caption = "\n".join(captions) or None
    return table
