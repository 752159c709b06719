"""`hired-bench serve-bench`: each method under load in vLLM's OpenAI-compatible server, at request rates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import fail, out, say
from profiler.results.store import check_output
from workloads.errors import InputError

DEFAULT_OUTPUT = Path("results/serving.jsonl")


def parse_rates(text: str) -> tuple[float, ...]:
    """'1,2,4,inf' -> (1.0, 2.0, 4.0, inf): requests per second, each above 0 (inf: every request at once)."""
    rates = []
    for part in text.split(","):
        try:
            rate = float(part)
        except ValueError:
            raise InputError(f"--rate must be requests per second (or inf), got {part.strip()!r}") from None
        if math.isnan(rate) or rate <= 0:
            raise InputError(f"--rate must be above 0 requests per second (or inf), got {part.strip()!r}")
        rates.append(rate)
    return tuple(dict.fromkeys(rates))


@options.command(without=("memory_cap",))
def serve_bench(
    setup: options.ModelOptions,
    choice: options.MethodOptions,
    inputs: options.InputOptions,
    rate: Annotated[
        str, typer.Option(help="Request rates, requests per second, comma-separated (inf: all at once).")
    ] = "1,2,4,inf",
    requests: Annotated[int, typer.Option(help="Requests sent at each rate (pictures cycled).")] = 32,
    concurrency: Annotated[
        int | None,
        typer.Option(help="At most this many requests in flight (the client waits); none by default."),
    ] = None,
    slo_ttft_ms: Annotated[
        float | None,
        typer.Option(help="TTFT service-level objective, ms: goodput counts the requests within it."),
    ] = None,
    seed: options.Seed = 0,
    output: options.Output = DEFAULT_OUTPUT,
    resume: Annotated[bool, typer.Option(help="Skip the (method, budget, rate) points OUTPUT has.")] = False,
    ready_timeout: Annotated[float, typer.Option(help="Seconds a server may take to become ready.")] = 600.0,
) -> None:
    """Serve each METHOD at each BUDGET (and the baseline) with vLLM's server and the suite's plugin, drive
    it with vLLM's benchmark client at each --rate, and record TTFT, TPOT, ITL and latency percentiles,
    throughput and goodput per rate (one `serving` record each; docs/engines.md)."""
    try:
        setup.checked_cap_gib()
        load_rates = parse_rates(rate)
        if requests < 1:
            raise InputError(f"--requests must be at least 1, got {requests}")
        if concurrency is not None and concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, got {concurrency}")
        if slo_ttft_ms is not None and not slo_ttft_ms > 0:
            raise InputError(f"--slo-ttft-ms must be above 0, got {slo_ttft_ms}")
        if not ready_timeout > 0:
            raise InputError(f"--ready-timeout must be above 0 seconds, got {ready_timeout}")
        measure = options.MeasureOptions(engine="vllm", seed=seed)
        plan = options.plan_command(setup, choice, inputs.build(1), 1, measure)
        check_output(output)
        options.check_plan(plan.points)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    from profiler.serving.bench import Load

    serve(
        plan.points, Load(load_rates, requests, concurrency, slo_ttft_ms, seed), output, resume, ready_timeout
    )


def serve(points: list, load, output: Path, resume: bool, ready_timeout: float = 600.0) -> list[dict]:
    """The planned points (one model) under `load`, each rate's record appended; prints the table."""
    from profiler.cli.tables import serving_table
    from profiler.results.store import new_run_id
    from profiler.serving.bench import pending, run_serving

    if len({p.model_group for p in points}) > 1:
        raise fail("serve-bench serves one model at a time (one --model, weights, dtype and device)")
    todo = pending(points, load, output, resume)
    if not todo:
        say(f"nothing to do: {output} has every point")
        return []
    folder, hardware, dtype, device = _served(points[0])
    for note in folder.notes:
        say(f"  {note}")
    run_id = new_run_id()
    records = list(
        run_serving(todo, load, output, run_id, folder, hardware, dtype, device, say, ready_timeout)
    )
    title = f"{folder.name} ({folder.weights} weights, {dtype}, {device}) under load"
    out.print(serving_table(records, title))
    say(f"records appended to {output}")
    return records


def _served(point):
    """The model folder, hardware fingerprint, dtype and device the server runs (no model is built here)."""
    from profiler.instruments.hardware import fingerprint
    from profiler.instruments.nvml import Nvml
    from workloads.device import resolve_device, resolve_dtype, resolve_model_name
    from workloads.folder import model_folder

    device = resolve_device(point.device)
    name = resolve_model_name(point.model, device, engine="vllm")
    folder = model_folder(name, point.weights)
    if point.model == "auto":
        folder.notes.insert(
            0, f"model auto -> {name} ({'a GPU' if device.type == 'cuda' else 'no GPU found, CPU'})"
        )
    nvml, _ = Nvml.open(device)
    dtype = str(resolve_dtype(point.dtype, device)).removeprefix("torch.")
    return folder, fingerprint(device, nvml), dtype, str(device)
