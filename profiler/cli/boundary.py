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
from workloads.presets import DEFAULT_PROMPT


def oom_boundary(
    model: options.Model = "auto",
    method: options.Method = "all",
    budget: options.Budget = "0.2",
    fidelity: options.Fidelity = "paper",
    param: options.Param = None,
    weights: options.Weights = "auto",
    dtype: options.Dtype = "auto",
    device: options.Device = "auto",
    image_size: options.ImageSize = None,
    prompt: options.Prompt = DEFAULT_PROMPT,
    new_tokens: options.NewTokens = 15,
    memory_cap: options.MemoryCap = None,
    max_batch: Annotated[int, typer.Option(help="Largest batch size tried.")] = 256,
    warmup: options.Warmup = 0,
    repeats: options.Repeats = 1,
    seed: options.Seed = 0,
    output: options.Output = Path("results/oom-boundary.jsonl"),
    engine: options.Engine = "eager",
    force: options.Force = False,
) -> None:
    """The largest batch that fits, per method x budget: galloping (1, 2, 4, ...) then binary search.

    Every probe is an ordinary point record; one `oom_boundary` record per method and budget
    holds the result and, on a GPU, the memory model's prediction for the same memory.
    """
    try:
        options.check_counts(1, new_tokens, warmup, repeats)
        options.check_seed(seed)
        if max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {max_batch}")
        cap_gib = options.parse_cap(memory_cap)
        plan = options.plan_command(
            method,
            budget,
            fidelity,
            param,
            model,
            options.make_inputs(image_size, None, prompt, new_tokens),
            engine=engine,
            weights=weights,
            dtype=dtype,
            device=device,
            memory_cap=memory_cap,
            warmup=warmup,
            repeats=repeats,
            seed=seed,
        )
        check_output(output)
        require_gpu(device)
        options.check_to_measure(plan.points, force)
        warn_untested_versions()
        from profiler.measure.session import open_runner

        with err.status("building the model…"):
            runner = open_runner(
                model=model,
                weights=weights,
                dtype=dtype,
                device=device,
                seed=seed,
                run_id=new_run_id(),
                warmup=warmup,
                repeats=repeats,
                memory_cap_gib=cap_gib,
                agreement=False,  # a search for the largest batch: outputs are not its question
            )
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    from profiler.capacity.boundary import find_boundaries
    from profiler.results.store import WriteFailed

    with closing(runner), progress() as bar:
        describe(runner)
        task = bar.add_task("probing", total=None)
        try:
            rows = find_boundaries(
                runner,
                plan.points,
                max_batch,
                output,
                cap_gib,
                lambda text: bar.update(task, description=text),
            )
        except WriteFailed as exc:
            raise write_failed(exc, [exc.record]) from None
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
    out.print(table)
    say(f"probes and boundaries appended to {output}")


def require_gpu(device: str) -> None:
    """Out-of-memory boundaries are a GPU's: a CPU swaps and slows long before it fails."""
    from workloads.device import resolve_device

    if resolve_device(device).type != "cuda":
        raise InputError(
            "oom-boundary looks for the batch where a GPU runs out of memory; without a GPU there is none "
            "to find: use hired-bench predict --gpu-memory SIZE (any card, no GPU needed)"
        )
