"""`hired-bench run`: a method against the full-token baseline on the same inputs, in one table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import fail, measure, out, print_warnings, say
from profiler.cli.tables import results_table
from profiler.results.store import check_output
from workloads.errors import InputError

BASELINE_NOTE = {
    "paper": "the baseline is stock LLaVA-Next: its kept tokens include the newline tokens",
    "reference": "the baseline is the HiRED code's full path: every candidate token, no newline tokens",
}
DEFAULT_OUTPUT = Path("results/results.jsonl")


@options.command(batch=4)
def run(
    setup: options.ModelOptions,
    choice: options.MethodOptions,
    inputs: options.InputOptions,
    policy: options.MeasureOptions,
    batch: options.Batch = 4,
    output: options.Output = DEFAULT_OUTPUT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records as JSON lines, not a table.")
    ] = False,
    py_spy: Annotated[
        Path | None,
        typer.Option("--py-spy", help="Write a py-spy flamegraph (SVG) of the host side of the run."),
    ] = None,
    force: options.Force = False,
    yes: options.Yes = False,
) -> None:
    """Measure METHOD at BUDGET and the full-token baseline on the same inputs; print a table with ratios."""
    from profiler.capacity.guards import confirm_long_run

    try:
        cap_gib = setup.checked_cap_gib()
        options.check_artifact(py_spy, ".svg")
        plan = options.plan_command(setup, choice, inputs.build(batch), batch, policy)
        check_output(output)
        # torch and transformers load from here on (seconds), after the checks that need neither
        options.check_to_measure(plan.points, force)
        confirm_long_run(plan.points, yes, policy.agreement)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    records, runners = measure(plan.points, output, policy.settings(), py_spy=py_spy)
    if as_json:
        for record in records:
            print(json.dumps(record))
    elif runners:
        print_table(records, runners[0].lm, cap_gib, batch, inputs, policy, choice.fidelity, output)
    print_warnings(records)
    say_written([py_spy, *(policy.settings().trace_path(p) for p in plan.points)])
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(code=1)


def print_table(records, lm, cap_gib, batch: int, inputs, policy, fidelity: str, output: Path) -> None:
    """The side-by-side table and what its columns mean."""
    setup = f"{lm.weights} weights, {str(lm.dtype).removeprefix('torch.')}, {lm.device}"
    cap = f", memory cap {cap_gib:.1f} GiB" if cap_gib else ""
    title = f"{lm.name} ({setup}{cap}), batch {batch}, {inputs.new_tokens} new tokens"
    out.print(results_table(records, title))
    out.print(
        f"medians of {policy.repeats} measured requests after {policy.warmup} warm-up · peak mem = torch max "
        "allocated (on a CPU: the process's peak RSS)\nagreement with the baseline's outputs: share of "
        "first tokens equal · mean share of leading tokens equal · mean first-token KL in nats\n"
        f"{BASELINE_NOTE[fidelity]} "
        f"· records appended to {output}",
        highlight=False,
        markup=False,
    )


def say_written(paths: list[Path | None]) -> None:
    for path in paths:
        if path is not None and path.exists():
            say(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
