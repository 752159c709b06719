"""The `hired-bench` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hired.methods import METHODS, method_params
from profiler.console import results_table
from profiler.records import append_record, check_writable, new_run_id
from workloads.errors import InputError
from workloads.images import folder_images, parse_size, synthetic_images
from workloads.presets import PRESETS, WEIGHTS

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

DEFAULT_PROMPT = "What is shown in this image?"
DEFAULT_OUTPUT = Path("results/results.jsonl")


@app.callback()
def _root() -> None:
    """Benchmark LLaVA-Next with and without visual-token dropping."""


def fail(message: str) -> typer.Exit:
    """Bad input: one line on stderr, exit code 2."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def check_inputs(budget: float, batch: int, new_tokens: int, warmup: int, repeats: int, method: str) -> None:
    if not 0.0 < budget <= 1.0:
        raise InputError(f"--budget must be in (0, 1] (a fraction of the visual tokens kept), got {budget}")
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if new_tokens < 1:
        raise InputError(f"--new-tokens must be at least 1, got {new_tokens}")
    if warmup < 0 or repeats < 1:
        raise InputError(f"--warmup must be >= 0 and --repeats >= 1, got {warmup} and {repeats}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")


def load_images(image_size: list[str], images: Path | None, batch: int, seed: int):
    if images is not None:
        return folder_images(images, batch), str(images)
    sizes = [parse_size(s) for s in image_size]
    return synthetic_images(sizes, batch, seed), "synthetic"


@app.command()
def run(
    model: Annotated[
        str,
        typer.Option(
            help="Preset (" + ", ".join(PRESETS) + "), a local model folder or a cached Hugging Face id. "
            "auto = llava-next-7b on a GPU, tiny on CPU."
        ),
    ] = "auto",
    method: Annotated[
        str,
        typer.Option(help="Token-dropping method: " + ", ".join(METHODS) + ". Always measured with none."),
    ] = "hired",
    budget: Annotated[
        float, typer.Option(help="Fraction of visual tokens kept per image, in (0, 1]; 1.0 = no dropping.")
    ] = 0.2,
    batch: Annotated[int, typer.Option(help="Images (samples) per request.")] = 4,
    weights: Annotated[
        str,
        typer.Option(
            help="auto: pretrained if found locally, else random; pretrained; random (real shapes)."
        ),
    ] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    image_size: Annotated[
        list[str] | None,
        typer.Option(help="Synthetic image size WIDTHxHEIGHT in pixels; repeat to mix sizes in a batch."),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of real images (used in name order, cycled to fill the batch)."),
    ] = None,
    prompt: Annotated[str, typer.Option(help="Question asked about each image.")] = DEFAULT_PROMPT,
    new_tokens: Annotated[
        int, typer.Option(help="New tokens generated per sample (exactly; EOS ignored).")
    ] = 15,
    warmup: Annotated[int, typer.Option(help="Unmeasured warm-up requests per point.")] = 2,
    repeats: Annotated[int, typer.Option(help="Measured requests per point (medians reported).")] = 5,
    alpha: Annotated[
        float | None, typer.Option(help="HiRED: share of the budget for the full image (default 0.5).")
    ] = None,
    l_init: Annotated[
        int | None,
        typer.Option(help="HiRED: vision layer whose CLS attention splits the budget (default 0)."),
    ] = None,
    l_final: Annotated[
        int | None,
        typer.Option(
            help="HiRED: vision layer whose CLS attention picks tokens "
            "(default: the projector's input layer, 22 on CLIP ViT-L)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random weights and synthetic images.")] = 0,
    output: Annotated[
        Path, typer.Option(help="JSON Lines file the records are appended to.")
    ] = DEFAULT_OUTPUT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records as JSON lines, not a table.")
    ] = False,
    save_outputs: Annotated[
        bool, typer.Option(help="Keep each sample's generated token ids in its record.")
    ] = False,
) -> None:
    """Measure METHOD at BUDGET and the full-token baseline on the same inputs; print a table with ratios."""
    try:
        check_inputs(budget, batch, new_tokens, warmup, repeats, method)
        if weights not in WEIGHTS:
            raise InputError(f"unknown --weights {weights!r} (use {', '.join(WEIGHTS)})")
        pictures, source = load_images(image_size or ["600x600"], images, batch, seed)
        check_writable(output)
        # torch and transformers load here, after the checks that need neither (about 5 s)
        from hired.glue import vision_shape
        from profiler.hardware import fingerprint
        from profiler.memory import Nvml, gib
        from profiler.runner import Point, Runner, Workload
        from workloads.models import load_model, resolve_device

        dev = resolve_device(device)
        nvml, nvml_reason = Nvml.open(dev)
        baseline_gib = gib(nvml.device_used_bytes()) if nvml else None
        with err.status("building the model…"):
            lm = load_model(model, weights, dtype, device, seed)
        overrides = {"alpha": alpha, "l_init": l_init, "l_final": l_final}
        try:
            params = method_params(METHODS[method], vision_shape(lm.model), overrides)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
    except InputError as exc:
        raise fail(str(exc)) from None

    dtype_name = str(lm.dtype).removeprefix("torch.")
    err.print(
        f"model: [bold]{lm.name}[/] · {lm.weights} weights · {dtype_name} on {lm.device}", highlight=False
    )
    for note in lm.notes:
        err.print(f"  {note}", highlight=False)
    points = [Point("none", 1.0)] + ([Point(method, budget, params)] if method != "none" else [])
    workload = Workload(pictures, prompt, new_tokens, source)
    run_id = new_run_id()
    records = []
    with _progress() as progress:
        task = progress.add_task("measuring", total=len(points) * (warmup + repeats))
        runner = Runner(
            lm,
            run_id,
            fingerprint(lm.device, nvml),
            warmup=warmup,
            repeats=repeats,
            seed=seed,
            save_outputs=save_outputs,
            nvml=nvml,
            nvml_reason=nvml_reason,
            baseline_device_gib=baseline_gib,
            on_request=lambda: progress.advance(task),
        )
        for point in points:
            progress.update(task, description=f"{point.method} @ {point.budget:.0%}")
            record = runner.measure(workload, point)
            append_record(output, record)
            records.append(record)
    if as_json:
        for record in records:
            print(json.dumps(record))
    else:
        setup = f"{lm.weights} weights, {dtype_name}, {lm.device}"
        title = f"{lm.name} ({setup}), batch {batch}, {new_tokens} new tokens"
        out.print(results_table(records, title))
        out.print(
            f"medians of {repeats} measured requests after {warmup} warm-up · peak mem = torch max allocated "
            f"(n/a without CUDA)\nthe baseline's kept tokens include LLaVA-Next's newline tokens · "
            f"records appended to {output}",
            highlight=False,
        )
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(code=1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def main() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: every point measured so far is in the results file", highlight=False)
        sys.exit(130)
