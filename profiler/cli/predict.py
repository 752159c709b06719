"""`hired-bench predict`: peak memory and the largest batch on any card, from the configuration alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from profiler.cli import options
from profiler.cli.common import err, fail, out, write_failed
from profiler.results.store import WriteFailed, append_record, check_output, make_prediction
from workloads.errors import InputError


@options.command(
    without=("weights", "device", "memory_cap", "images"),
    model="llava-next-7b",
    dtype="float16",
    method="all",
    budget="0.1,0.2,0.4",
)
def predict(
    gpu_memory: Annotated[str, typer.Option(help="Memory of the card to predict for, e.g. 24GiB.")],
    setup: options.ModelOptions,
    choice: options.MethodOptions,
    inputs: options.InputOptions,
    stack: options.Stack = "auto",
    overhead: Annotated[
        str,
        typer.Option(help="Memory that is not PyTorch's: the CUDA context (use 0 for a --memory-cap run)."),
    ] = "0.5GiB",  # profiler.capacity.model.CUDA_CONTEXT_GIB
    output: Annotated[
        Path | None, typer.Option(help="Also append the predictions (JSON Lines) here.")
    ] = None,
) -> None:
    """Predicted peak memory and the largest batch that fits on a card, from the configuration alone."""
    try:
        memory_gib, overhead_gib = card_memory(gpu_memory, overhead, stack)
        dtype = prediction_dtype(setup.dtype)
        plan = options.plan_command(setup, choice, inputs.build())
        if output is not None:
            check_output(output)
        from profiler.capacity.model import predictions

        with err.status("reading the model's shape…"):
            options.check_plan(plan.points)
            rows = predictions(plan.points, dtype, memory_gib - overhead_gib, stack)
            papers = paper_rows(plan.points, dtype, memory_gib - overhead_gib, rows)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    stacks = " and ".join(dict.fromkeys(r["stack"] for r in rows))
    title = (
        f"{setup.model} ({dtype}) on a {memory_gib:.0f} GiB card ({overhead_gib:.1f} GiB not PyTorch's), "
        f"{inputs.new_tokens} new tokens, {stacks} stack"
    )
    models = list(dict.fromkeys(r["model"] for r in rows))
    out.print(predictions_table(rows, title) if len(models) == 1 else side_by_side(rows, models, title))
    out.print(
        "peaks in GiB of PyTorch-allocated memory (weights + KV cache + the largest phase's activations); "
        "a model, not a measurement: compare with oom-boundary on a real card",
        highlight=False,
    )
    if papers:
        out.print(table4_table(papers))
        out.print(TABLE4_NOTE, highlight=False)
    if output is not None:
        write_predictions(output, rows)


def card_memory(gpu_memory: str, overhead: str, stack: str) -> tuple[float, float]:
    """(the card's GiB, GiB that are not PyTorch's), checked."""
    from profiler.capacity.model import STACKS
    from profiler.results.schema import parse_gib

    if stack not in (*STACKS, "auto"):
        raise ValueError(f"unknown --stack {stack!r} (use auto, {', '.join(STACKS)})")
    memory_gib, overhead_gib = parse_gib(gpu_memory), parse_gib(overhead)
    if memory_gib <= overhead_gib:
        raise ValueError(
            f"--gpu-memory {gpu_memory} leaves nothing for PyTorch after the {overhead} --overhead"
        )
    return memory_gib, overhead_gib


def prediction_dtype(dtype: str) -> str:
    from profiler.capacity.model import BYTES

    dtype = "float16" if dtype == "auto" else dtype  # a prediction is for a GPU
    if dtype not in BYTES:
        raise InputError(f"unknown --dtype {dtype!r} (use {', '.join(BYTES)})")
    return dtype


def write_predictions(output: Path, rows: list[dict]) -> None:
    lines = [make_prediction(r) for r in rows]
    for i, line in enumerate(lines):
        try:
            append_record(output, line)
        except WriteFailed as exc:
            raise write_failed(exc, lines[i:]) from None


def predictions_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("method", "budget", "tokens/image", "peak b=1", "b=2", "b=4", "b=8", "largest batch"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        peaks = r["peak_gib_by_batch"]
        table.add_row(
            r["method"],
            r["budget_label"],
            str(r["tokens_per_image"] or "adaptive"),
            *("n/a" if peaks is None else f"{peaks[str(b)]:.1f}" for b in (1, 2, 4, 8)),
            _largest(r),
        )
    return table


def side_by_side(rows: list[dict], models: list[str], title: str) -> Table:
    """Several models: per method and budget, each model's peak at batch 1 and largest batch."""
    table = Table(title=title, title_justify="left")
    table.add_column("method")
    table.add_column("budget", justify="right")
    for name in models:
        table.add_column(f"{name}\npeak b=1", justify="right")
        table.add_column(f"{name}\nlargest batch", justify="right")
    by_point: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_point.setdefault((r["method"], r["budget_label"], str(r["method_params"])), {})[r["model"]] = r
    for (method, budget, _), mine in by_point.items():
        cells = []
        for name in models:
            r = mine.get(name)
            peaks = (r or {}).get("peak_gib_by_batch")
            cells += ["n/a" if not peaks else f"{peaks['1']:.1f}", "n/a" if r is None else _largest(r)]
        table.add_row(method, budget, *cells)
    return table


def _largest(row: dict) -> str:
    return "n/a" if row["largest_batch"] is None else str(row["largest_batch"])


TABLE4_NOTE = (
    "released: transformers 4.42 with the HiRED patch, one request; + held output: the same while the "
    "previous request's output (its KV cache) is still referenced, as in the release's script, which "
    "keeps `output` from one run to the next; modern: transformers 5 as this suite runs. Batch 1 "
    "matches the first, batch 2 and 4 the second: the paper's cells mix the two."
)


def paper_rows(points: list, dtype: str, memory_gib: float, rows: list[dict]) -> list[dict]:
    """The HiRED Table 4 side by side, when the released stack is predicted for the paper's model in
    float16 (the paper's setting); the picture is the first point's (the paper's: 600 x 600)."""
    from profiler.capacity.model import table4
    from workloads.models import model_config, prompt_text_tokens
    from workloads.paper import PAPER_MODELS

    chosen = [(p, r) for p, r in zip(points, rows, strict=True) if r["stack"] == "released"]
    if dtype != "float16" or not chosen or chosen[0][0].model not in PAPER_MODELS:
        return []
    point = chosen[0][0]
    text = prompt_text_tokens(point.model, point.prompt)
    return table4(model_config(point.model), dtype, text, point, memory_gib)


def table4_table(rows: list[dict]) -> Table:
    table = Table(
        title="Beside the HiRED paper's Table 4 (peak GiB, torch max allocated; difference to the paper)",
        title_justify="left",
    )
    for name in ("batch", "setting", "paper", "released", "+ held output", "modern"):
        table.add_column(name, justify="right")
    for r in rows:
        paper = r["paper_gib"]
        setting = "full" if r["setting"] == "full" else f"HiRED {r['setting']:.0%}"
        table.add_row(
            str(r["batch"]),
            setting,
            "OOM" if paper is None else f"{paper:.2f}",
            *(
                _beside(r[k], paper, r["memory_gib"])
                for k in ("released_gib", "released_held_gib", "modern_gib")
            ),
        )
    return table


def _beside(gib: float, paper: float | None, memory_gib: float) -> str:
    """A predicted cell: OOM above the card, else GiB and its difference to the paper's figure."""
    if gib > memory_gib:
        return f"OOM ({gib:.2f})"
    return f"{gib:.2f}" if paper is None else f"{gib:.2f} ({(gib - paper) / paper:+.1%})"
