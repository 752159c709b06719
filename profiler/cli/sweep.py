"""`hired-bench sweep FILE`: the grid of a sweep file, point by point, resumable."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import fail, measure, out, progress, say, write_failed
from profiler.cli.tables import results_table
from profiler.measure.settings import MeasureSettings
from profiler.results.store import WriteFailed, check_output, new_run_id
from workloads.errors import InputError


def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (TOML), or a shipped one by name: smoke, paper.")],
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
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Print the plan (points, predicted peak memory, predicted OOMs) and measure nothing."
        ),
    ] = False,
    force: options.Force = False,
    agreement: options.Agreement = True,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on a Ray cluster (extra [ray]): auto (the running cluster; --ray alone), local "
            "(start one here) or a cluster address. One worker per GPU, or per --ray-cpus-per-point CPUs.",
        ),
    ] = None,
    ray_cpus_per_point: Annotated[
        int, typer.Option(help="CPUs each Ray worker takes (on a cluster without GPUs: one worker per N).")
    ] = 1,
    yes: options.Yes = False,
) -> None:
    """Measure the grid in FILE: methods x budgets x batch sizes x image sizes x models, point by point."""
    from workloads.sweep import load_sweep

    try:
        spec = load_sweep(file)
        output = output or spec.output
        check_output(output)
        if dry_run:
            worker_gpu = True if any(p.accelerator for p in spec.points) else None  # typed: on Ray GPUs
            options.check_plan(spec.points, f"{spec.name}.toml: models: ", worker_gpu)
            print_plan(spec, worker_gpu)
            return
        if spec.serving is not None:
            return serve_sweep(spec, output, resume, ray)
        todo = check_sweep(spec, output, resume, isolate, force, agreement, ray, ray_cpus_per_point, yes)
    except InputError as exc:
        raise fail(str(exc)) from None
    done = len(spec.points) - len(todo)
    say(
        f"sweep {spec.name}: {len(spec.points)} points"
        + (f" ({spec.duplicates} duplicates dropped)" if spec.duplicates else "")
        + (f", {done} already recorded, {len(todo)} to run" if resume else "")
        + f" -> {output}"
    )
    if ray is not None:
        records = measure_on_ray(todo, output, spec.name, ray, ray_cpus_per_point, agreement) if todo else []
    else:
        policy = MeasureSettings(agreement=agreement)
        records, _ = measure(todo, output, policy, sweep=spec.name, isolate=isolate)
    print_sweep(records)
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "oom", "error")}
    say(
        f"{len(records)} points measured: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error "
        f"· records in {output}"
    )
    if counts["error"]:
        raise typer.Exit(code=1)


def serve_sweep(spec, output: Path, resume: bool, ray) -> None:
    """A serving grid: its methods and budgets served by vLLM at each rate (serve-bench), one model."""
    from dataclasses import replace

    from profiler.cli.serve_bench import serve
    from profiler.serving.bench import Load

    if ray is not None:
        raise InputError(f"{spec.name}.toml: serving: a serving grid runs here, not on Ray")
    options.check_plan(spec.points, f"{spec.name}.toml: models: ")
    points = list({replace(p, batch_size=1).key: replace(p, batch_size=1) for p in spec.points}.values())
    serving = spec.serving
    load = Load(
        serving["rates"], serving["requests"], serving["concurrency"], serving["slo_ttft_ms"], points[0].seed
    )
    say(f"sweep {spec.name}: serving {len(points)} settings at {len(load.rates)} rates -> {output}")
    records = serve(points, load, output, resume)
    if any(r["status"] != "ok" for r in records):
        raise typer.Exit(code=1)


def check_sweep(
    spec, output: Path, resume: bool, isolate: bool, force: bool, agreement: bool, ray, cpus, yes
):
    """The points still to measure, once everything that can be refused here is checked."""
    from profiler.capacity.guards import confirm_long_run
    from profiler.orchestrate.local import pending_points

    if ray is not None:
        check_ray(isolate, cpus)  # the plan is checked once the cluster is known
    elif any(p.accelerator for p in spec.points):
        raise InputError(f"{spec.name}.toml: accelerators: GPU types are a Ray cluster's; add --ray")
    else:
        options.check_to_measure(spec.points, force, f"{spec.name}.toml: models: ")
    todo = pending_points(spec.points, output, resume)
    if ray is None:  # on Ray the workers' GPUs set the pace: no estimate from here
        confirm_long_run(todo, yes, agreement)
    return todo


def check_ray(isolate: bool, cpus_per_point: int) -> None:
    if isolate:
        raise InputError("--isolate and --ray exclude each other: every Ray worker is a process of its own")
    if cpus_per_point < 1:
        raise InputError(f"--ray-cpus-per-point must be at least 1, got {cpus_per_point}")
    if importlib.util.find_spec("ray") is None:
        raise InputError("Ray is not installed: pip install 'hired-bench[ray]'")


def measure_on_ray(todo: list, output: Path, name: str, address: str, cpus: int, agreement: bool) -> list:
    """The points on a Ray cluster (joined, or started for `local` and stopped after), one progress bar."""
    import ray

    from profiler.orchestrate.ray import check_accelerators, cluster, connect, plan_workers, run_on_ray

    try:
        started = connect(address)
    except InputError as exc:
        raise fail(str(exc)) from None
    try:
        found = cluster()
        try:
            check_accelerators(todo, found)
            counts, use_gpus = plan_workers(todo, found, cpus)
            # what does not depend on the workers' nodes; each worker checks the rest (memory, weights)
            options.check_plan(todo, f"{name}.toml: models: ", worker_gpu=use_gpus)
        except InputError as exc:
            raise fail(str(exc)) from None
        gpus = ", ".join(f"{n} {kind or 'GPU'}" for kind, n in found.gpus.items()) or "no GPUs"
        say(
            f"Ray cluster ({address}): {gpus}, {found.cpus:g} CPUs; {sum(counts.values())} workers, each "
            + ("on one GPU" if use_gpus else f"on {cpus} CPU(s)")
        )
        records = []
        with progress("points") as bar:
            task = bar.add_task(f"sweep {name} on Ray", total=len(todo))
            for record in run_on_ray(
                todo, output, name, new_run_id(), found, cpus, agreement,
                on_wait=lambda message: say(f"waiting: {message}"),
            ):  # fmt: skip
                records.append(record)
                bar.advance(task)
        order = {point.key: i for i, point in enumerate(todo)}  # the plan's order, not the finishing one
        return sorted(records, key=lambda r: order.get(r["config"]["point_key"], len(order)))
    except WriteFailed as exc:
        raise write_failed(exc, [exc.record]) from None
    finally:
        if started:
            ray.shutdown()


PLAN_ROWS = 200  # --dry-run shows this many points; a terminal holds no more, the summary counts them all


def print_plan(spec, worker_gpu: bool | None = None) -> None:
    """--dry-run: every point with its predicted peak memory and whether it would run out of memory."""
    from rich.table import Table

    from profiler.capacity.guards import check_model_fits
    from profiler.capacity.model import plan_predictions

    rows = plan_predictions(spec.points, worker_gpu)
    table = Table(
        title=f"sweep {spec.name}: {len(spec.points)} points (nothing measured)", title_justify="left"
    )
    typed = worker_gpu is not None  # a grid per GPU type, on Ray
    columns = ["GPU"] * typed + ["model", "method", "budget", "params", "batch", "images", "new tokens"]
    for name in [*columns, "peak GiB", "fits"]:
        table.add_column(
            name, justify="left" if name in ("GPU", "model", "method", "params", "images") else "right"
        )
    for point, row in zip(spec.points[:PLAN_ROWS], rows, strict=False):
        table.add_row(
            *[point.accelerator or ""] * typed,
            row["model"],  # `auto` resolved where the point runs
            point.method,
            point.label,
            " ".join(f"{k}={v}" for k, v in point.params.items()) or "–",
            str(point.batch_size),
            "+".join(f"{w}x{h}" for w, h in point.image_sizes or []) or str(point.images),
            str(point.new_tokens),
            "n/a" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}",
            row["fits"],
        )
    if len(spec.points) > PLAN_ROWS:
        fits = Counter(row["fits"] for row in rows)
        table.caption = f"the first {PLAN_ROWS} of {len(spec.points):,} points; fits over all: " + ", ".join(
            f"{n:,} {what}" for what, n in fits.items()
        )
    out.print(table)
    requests = sum(p.warmup + p.repeats for p in spec.points)
    out.print(
        f"{requests} requests in all; {spec.duplicates} duplicate points dropped; peaks are the memory "
        "model's (weights + the largest phase, PyTorch-allocated), against the memory_cap or this GPU",
        highlight=False,
    )
    if typed:
        out.print("each GPU type's points run on Ray workers with that GPU (--ray)", highlight=False)
        return
    try:
        check_model_fits(spec.points, force=False)
    except InputError as exc:
        out.print(f"running it here would be refused: {exc}", highlight=False, markup=False)


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
