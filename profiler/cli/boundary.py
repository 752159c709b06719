"""`hired-bench oom-boundary`: the largest batch that fits, per method and budget."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from profiler.cli import options
from profiler.cli.common import (
    describe,
    err,
    fail,
    out,
    progress,
    say,
    warn_untested_versions,
    write_failed,
)
from profiler.results.store import check_output, new_run_id
from workloads.errors import InputError


@options.command(
    without=("images", "agreement", "save_outputs", "torch_trace", "min_duration"),
    method="all",
    warmup=0,
    repeats=1,
)
def oom_boundary(
    setup: options.ModelOptions,
    choice: options.MethodOptions,
    inputs: options.InputOptions,
    policy: options.MeasureOptions,
    max_batch: Annotated[int, typer.Option(help="Largest batch size tried.")] = 256,
    output: options.Output = Path("results/oom-boundary.jsonl"),
    force: options.Force = False,
) -> None:
    """The largest batch that fits, per method x budget: galloping (1, 2, 4, ...) then binary search.

    Every probe is an ordinary point record; one `oom_boundary` record per method and budget
    holds the result and, on a GPU, the memory model's prediction for the same memory.
    """
    try:
        if max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {max_batch}")
        if "vllm" in policy.engine.split(","):  # vLLM queues what does not fit: no batch runs out of memory
            raise InputError(
                "oom-boundary searches transformers' engines; vLLM schedules what fits in its KV cache and "
                "queues the rest: see metrics.kv_cache.max_concurrency of `run --engine vllm`"
            )
        cap_gib = setup.checked_cap_gib()
        plan = options.plan_command(setup, choice, inputs.build(), measure=policy)
        check_output(output)
        require_gpu(setup.device)
        options.check_to_measure(plan.points, force)
        warn_untested_versions()
        from profiler.orchestrate.local import open_group_runner

        with err.status("building the model…"):
            runner = open_group_runner(plan.points[0], new_run_id())
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    from profiler.capacity.boundary import find_boundaries
    from profiler.results.store import WriteFailed

    with closing(runner), progress() as bar:
        describe(runner)
        task = bar.add_task("probing", total=None)

        def status(text: str) -> None:
            bar.update(task, description=text)

        try:
            rows = find_boundaries(runner, plan.points, max_batch, output, cap_gib, status)
        except WriteFailed as exc:
            raise write_failed(exc, [exc.record]) from None
    out.print(boundary_table(rows, cap_gib, max_batch))
    say(f"probes and boundaries appended to {output}")


def boundary_table(rows: list[dict], cap_gib: float | None, max_batch: int) -> Table:
    table = Table(
        title=f"largest batch that fits ({'cap ' + f'{cap_gib:.1f} GiB' if cap_gib else 'whole card'})",
        title_justify="left",
    )
    for name in ("method", "budget", "fits", "first OOM", "probes", "predicted"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        failing = r["smallest_failing"]
        table.add_row(
            r["method"],
            r["budget_label"],
            str(r["largest_fitting"]),
            "none up to " + str(max_batch) if failing is None else str(failing),
            str(len(r["probes"])),
            "n/a" if r["predicted_largest"] is None else str(r["predicted_largest"]),
        )
        if r["stopped_by"]:
            table.add_row("", "", f"[red]stopped[/]: {escape(r['stopped_by'])}", "", "", "")
    return table


def require_gpu(device: str) -> None:
    """Out-of-memory boundaries are a GPU's: a CPU swaps and slows long before it fails."""
    from workloads.device import resolve_device

    if resolve_device(device).type != "cuda":
        raise InputError(
            "oom-boundary looks for the batch where a GPU runs out of memory; without a GPU there is none "
            "to find: use hired-bench predict --gpu-memory SIZE (any card, no GPU needed)"
        )
