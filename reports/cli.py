"""`hired-bench report` and `hired-bench compare`, added to profiler's command line.

This module is the console entry point: it imports profiler's CLI and adds the report commands,
so imports keep flowing profiler -> reports, never back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import app, err, fail, say
from profiler.cli import main as profiler_main


def _load(results: list[Path], out: Path):
    from reports.data import load_results

    check_out(out)
    try:
        loaded = load_results(results)
    except FileNotFoundError as exc:
        raise fail(f"results not found: {exc}") from None
    if not loaded.files:
        raise fail(f"no .jsonl result files in {', '.join(map(str, results))}")
    kinds = (
        loaded.points,
        loaded.boundaries,
        loaded.predictions,
        loaded.accuracy,
        loaded.checks,
        loaded.serving,
    )
    if not any(kinds):
        reasons = ", ".join(sorted({why for _, why in loaded.skipped}))
        skipped = f" ({loaded.skipped_lines} line(s) skipped: {reasons})" if loaded.skipped else ""
        raise fail(f"no usable result records in {', '.join(map(str, loaded.files))}{skipped}")
    for (path, why), n in sorted(loaded.skipped.items()):
        say(f"skipped {n} line(s) of {path}: {why}")
    return loaded


def serving_count(loaded) -> str:
    return f" and {len(loaded.serving)} serving records" if loaded.serving else ""


def cannot_write(out: Path, exc: OSError) -> typer.Exit:
    """The disk refused the report (full, read-only): one line, exit 1; the results files are untouched."""
    return fail(f"cannot write the report to {out}: {exc.strerror or exc}", code=1)


def check_out(out: Path) -> None:
    """The report's folder: a folder (or creatable), writable."""
    from profiler.results.store import why_not_creatable

    if problem := why_not_creatable(out):
        raise fail(f"--out {out}: {problem}")


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Result files (.jsonl) or folders holding them.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and figures/.")] = Path(
        "reports/out"
    ),
) -> None:
    """A Markdown and a self-contained HTML report, with PNG and SVG figures, from result files."""
    from reports.sections import build_report

    loaded = _load(results, out)
    with err.status("drawing…"):
        try:
            markdown, page = build_report(loaded, out)
        except OSError as exc:
            raise cannot_write(out, exc) from None
    figures = sorted((out / "figures").glob("*.png"))
    say(
        f"{len(loaded.points)} points{serving_count(loaded)} from {len(loaded.files)} file(s) -> {markdown}, "
        f"{page} and {len(figures)} figures (PNG + SVG) in {out / 'figures'}"
    )


@app.command()
def compare(
    results: Annotated[
        list[Path], typer.Argument(help="Result files from different machines (GPU or memory cap).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the comparison report.")] = Path(
        "reports/out/compare"
    ),
) -> None:
    """The same workloads measured on several machines, side by side (keyed by GPU name and memory cap)."""
    from reports.data import machine
    from reports.sections import build_compare

    loaded = _load(results, out)
    machines = sorted({machine(r) for r in [*loaded.points, *loaded.serving]})
    if len(machines) < 2:
        raise fail(f"compare needs results from two machines or more; found {', '.join(machines) or 'none'}")
    try:
        written = build_compare(loaded, out)
    except OSError as exc:
        raise cannot_write(out, exc) from None
    if written is None:
        raise fail(f"no workload was measured on more than one of: {', '.join(machines)}")
    from rich.console import Console

    from reports.document import Table
    from reports.sections.compare import compare_section

    console = Console(width=200)
    section = compare_section(loaded, out / "figures")
    for part in section.parts:
        if isinstance(part, Table):
            from rich.table import Table as RichTable

            table = RichTable(title=part.caption, title_justify="left")
            for column in part.columns:
                table.add_column(column)
            for row in part.rows:
                table.add_row(*row)
            console.print(table)
    say(f"{written[0]} and {written[1]}")


def main() -> None:
    profiler_main()
