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
from workloads.presets import DEFAULT_PROMPT

BASELINE_NOTE = {
    "paper": "the baseline is stock LLaVA-Next: its kept tokens include the newline tokens",
    "reference": "the baseline is the HiRED code's full path: every candidate token, no newline tokens",
}
DEFAULT_OUTPUT = Path("results/results.jsonl")


def run(
    model: options.Model = "auto",
    method: options.Method = "hired",
    budget: options.Budget = "0.2",
    fidelity: options.Fidelity = "paper",
    param: options.Param = None,
    batch: Annotated[int, typer.Option(help="Images (samples) per request.")] = 4,
    weights: options.Weights = "auto",
    dtype: options.Dtype = "auto",
    device: options.Device = "auto",
    image_size: options.ImageSize = None,
    images: options.Images = None,
    prompt: options.Prompt = DEFAULT_PROMPT,
    new_tokens: options.NewTokens = 15,
    warmup: options.Warmup = 2,
    repeats: options.Repeats = 5,
    seed: options.Seed = 0,
    output: options.Output = DEFAULT_OUTPUT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records as JSON lines, not a table.")
    ] = False,
    save_outputs: Annotated[
        bool, typer.Option(help="Keep each sample's generated token ids in its record.")
    ] = False,
    memory_cap: options.MemoryCap = None,
    py_spy: Annotated[
        Path | None,
        typer.Option("--py-spy", help="Write a py-spy flamegraph (SVG) of the host side of the run."),
    ] = None,
    engine: options.Engine = "eager",
    min_duration: options.MinDuration = 0.0,
    force: options.Force = False,
    agreement: options.Agreement = True,
    torch_trace: Annotated[
        Path | None,
        typer.Option(
            help="Write a torch profiler Chrome trace (JSON) of one more request per point: OUT.METHOD.json."
        ),
    ] = None,
    yes: options.Yes = False,
) -> None:
    """Measure METHOD at BUDGET and the full-token baseline on the same inputs; print a table with ratios."""
    from profiler.capacity.guards import confirm_long_run

    try:
        options.check_counts(batch, new_tokens, warmup, repeats)
        options.check_seed(seed)
        options.check_weights(weights)
        cap_gib = options.parse_cap(memory_cap)
        for path, suffix in ((py_spy, ".svg"), (torch_trace, ".json")):
            options.check_artifact(path, suffix)
        inputs = options.make_inputs(image_size, images, prompt, new_tokens, batch)
        plan = options.plan_command(
            method,
            budget,
            fidelity,
            param,
            model,
            inputs,
            batch,
            engine=engine,
            min_duration=min_duration,
            weights=weights,
            dtype=dtype,
            device=device,
            memory_cap=memory_cap,
            warmup=warmup,
            repeats=repeats,
            seed=seed,
        )
        check_output(output)
        # torch and transformers load from here on (seconds), after the checks that need neither
        options.check_to_measure(plan.points, force)
        confirm_long_run(plan.points, yes, agreement)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None

    records, runners = measure(
        plan.points,
        output,
        py_spy=py_spy,
        save_outputs=save_outputs,
        torch_trace=torch_trace,
        agreement=agreement,
    )
    if as_json:
        for record in records:
            print(json.dumps(record))
    elif runners:
        lm = runners[0].lm
        setup = f"{lm.weights} weights, {str(lm.dtype).removeprefix('torch.')}, {lm.device}"
        cap = f", memory cap {cap_gib:.1f} GiB" if cap_gib else ""
        title = f"{lm.name} ({setup}{cap}), batch {batch}, {new_tokens} new tokens"
        out.print(results_table(records, title))
        out.print(
            f"medians of {repeats} measured requests after {warmup} warm-up · peak mem = torch max "
            "allocated (on a CPU: the process's peak RSS)\nagreement with the baseline's outputs: share of "
            "first tokens equal · mean share of leading tokens equal · mean first-token KL in nats\n"
            f"{BASELINE_NOTE[fidelity]} "
            f"· records appended to {output}",
            highlight=False,
            markup=False,
        )
    print_warnings(records)
    from profiler.measure.runner import trace_path

    for path in [py_spy] + ([trace_path(torch_trace, p) for p in plan.points] if torch_trace else []):
        if path is not None and path.exists():
            say(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(code=1)
