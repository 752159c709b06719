"""Every option two commands share, defined once (its name, type and help), and the parsing behind it.

Commands declare `model: options.Model = "auto"`; the default is the command's, the meaning is one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from workloads import presets
from workloads.errors import InputError
from workloads.images import folder_images, parse_size
from workloads.point import Inputs, MethodEntry, check_option
from workloads.presets import PRESETS

Model = Annotated[
    str,
    typer.Option(
        help="Preset (" + ", ".join(PRESETS) + "), a local model folder or a cached Hugging Face id; "
        "comma-separated for several, one after another. auto = llava-next-7b on a GPU, tiny on CPU."
    ),
]
Method = Annotated[
    str,
    typer.Option(
        help="Token-dropping method (hired-bench methods lists them), several comma-separated, or all "
        "(every method defined at the budget). The baseline (none, every visual token) is always measured."
    ),
]
Budget = Annotated[
    str,
    typer.Option(
        help="Fraction of visual tokens kept per image, in (0, 1]; 1.0 = no dropping; 'adaptive' = the "
        "method's own count (prumerge, prumerge+). Comma-separated for several, e.g. 0.1,0.2,0.4."
    ),
]
Fidelity = Annotated[
    str,
    typer.Option(
        help="paper: the papers' definitions with exact budgets; reference: the released code's "
        "behaviour (hired; prumerge and prumerge+ adaptive), to compare with published numbers."
    ),
]
Param = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A method parameter NAME=VALUE, repeatable (e.g. --param alpha=0.3 --param l_final=20); "
        "VALUE may be comma-separated to measure each. hired-bench methods lists every parameter.",
    ),
]
Weights = Annotated[
    str,
    typer.Option(help="auto: pretrained if found locally, else random; pretrained; random (real shapes)."),
]
Stack = Annotated[
    str,
    typer.Option(
        help="The software stack to predict for: modern (transformers 5, as this suite runs), released "
        "(transformers 4.42 with the HiRED patch, as the HiRED paper measured), or auto (released for "
        "--fidelity reference, modern for paper)."
    ),
]
Dtype = Annotated[
    str, typer.Option(help="auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32.")
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
ImageSize = Annotated[
    list[str] | None,
    typer.Option(help="Synthetic image size WIDTHxHEIGHT in pixels; repeat to mix sizes in a batch."),
]
Images = Annotated[
    Path | None,
    typer.Option(help="Folder of real images (used in name order, cycled to fill the batch)."),
]
Prompt = Annotated[str, typer.Option(help="Question asked about each image.")]
NewTokens = Annotated[int, typer.Option(help="New tokens generated per sample (exactly; EOS ignored).")]
Warmup = Annotated[int, typer.Option(help="Unmeasured warm-up requests per point.")]
Repeats = Annotated[int, typer.Option(help="Measured requests per point (medians reported).")]
Seed = Annotated[int, typer.Option(help="Seed for random weights, synthetic images and the random method.")]
Output = Annotated[Path, typer.Option(help="JSON Lines file the records are appended to.")]
MemoryCap = Annotated[
    str | None,
    typer.Option(
        help="Emulate a smaller GPU: cap PyTorch's memory, e.g. 24GiB (GiB, GB, MiB; no unit = GiB)."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Engine = Annotated[
    str,
    typer.Option(
        help="eager: transformers' generate as is; compiled: a static KV cache and torch.compile (CUDA "
        "graphs on a GPU), compiled once per point outside the timed requests. Comma-separated for both."
    ),
]
MinDuration = Annotated[
    float,
    typer.Option(
        help="Measure until both --repeats requests and this many seconds are reached (MLPerf-style)."
    ),
]
Agreement = Annotated[
    bool,
    typer.Option(
        help="Per point, one more (untimed) request compared with the baseline's outputs on the same "
        "inputs: first-token match, matching prefix, first-token KL (metrics.agreement)."
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        help="Run even where the memory model says the model does not fit, or a CPU would take hours."
    ),
]
Yes = Annotated[
    bool,
    typer.Option(
        "--yes",
        help="Start a plan estimated above an hour without asking (asked on a terminal; refused elsewhere).",
    ),
]


def parse_budget(text: str) -> float | None:
    """'0.2' -> 0.2; 'adaptive' -> None (the method's own count)."""
    if text.strip().lower() == "adaptive":
        return None
    try:
        budget = float(text)
    except ValueError:
        raise InputError(f"--budget must be a fraction in (0, 1] or 'adaptive', got {text!r}") from None
    if not 0.0 < budget <= 1.0:
        raise InputError(f"--budget must be in (0, 1] (a fraction of the visual tokens kept), got {budget:g}")
    return budget


def parse_budgets(text: str) -> list[float | None]:
    """'0.1,0.2,adaptive' -> [0.1, 0.2, None]."""
    return [parse_budget(part) for part in text.split(",")]


def parse_params(items: list[str] | None) -> dict[str, tuple[str, ...]]:
    """['alpha=0.3', 'l_final=20,21'] -> {'alpha': ('0.3',), 'l_final': ('20', '21')}; typed by the method."""
    params: dict[str, tuple[str, ...]] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not value.strip():
            raise InputError(f"--param must look like NAME=VALUE (e.g. alpha=0.3), got {item!r}")
        params[name] = params.get(name, ()) + tuple(v.strip() for v in value.split(","))
    return params


def method_entries(method: str, budget: str, fidelity: str, param: list[str] | None) -> list[MethodEntry]:
    """One entry per method named ('fastv,dart' is two), each with every budget and parameter."""
    budgets, params = tuple(parse_budgets(budget)), parse_params(param)
    names = [name.strip() for name in method.split(",")]
    if len(names) > 1 and params:
        raise InputError("--param goes with one --method at a time (or all)")
    return [MethodEntry(name, budgets, fidelity, params) for name in names]


def plan_command(
    method: str,
    budget: str,
    fidelity: str,
    param: list[str] | None,
    model: str,
    inputs: Inputs,
    batch: int = 1,
    baseline: bool = True,
    engine: str = "eager",
    **common,
):
    """The points of one command's options (one input set, one batch size; models and engines may be
    comma-separated lists)."""
    from workloads.plan import plan_points

    if why := check_option("min_duration", common.get("min_duration", 0.0)):
        raise InputError(f"--min-duration {why}")
    return plan_points(
        method_entries(method, budget, fidelity, param),
        models=[name.strip() for name in model.split(",")],
        inputs=[inputs],
        batch_sizes=[batch],
        fidelity=fidelity,
        baseline=baseline,
        engines=tuple(name.strip() for name in engine.split(",")),
        **common,
    )


def check_seed(seed: int) -> None:
    if why := check_option("seed", seed):
        raise InputError(f"--seed {why}")


def check_counts(batch: int, new_tokens: int, warmup: int, repeats: int) -> None:
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if new_tokens < 1:
        raise InputError(f"--new-tokens must be at least 1, got {new_tokens}")
    for name, value in (("warmup", warmup), ("repeats", repeats)):
        if why := check_option(name, value):
            raise InputError(f"--{name} {why}")


def check_weights(weights: str) -> None:
    presets.check_weights(weights, "--weights")


def make_inputs(
    image_size: list[str] | None, images: Path | None, prompt: str, new_tokens: int, batch: int = 1
) -> Inputs:
    """The requests' inputs; a folder's pictures are opened here once, so a bad one is refused now."""
    check_prompt(prompt)
    if images is not None and image_size:
        raise InputError(
            "--images and --image-size exclude each other: pictures from a folder keep their sizes"
        )
    if images is not None:
        folder_images(images, batch)
        return Inputs(None, str(images), new_tokens, prompt)
    sizes = tuple(parse_size(s) for s in image_size or ["600x600"])
    return Inputs(sizes, None, new_tokens, prompt)


def check_prompt(prompt: str) -> None:
    """The prompt is the question: the image placeholder is the template's, once."""
    if "<image>" in prompt:
        raise InputError("--prompt must not contain <image>: the chat template places the image itself")
    if not prompt.strip():
        raise InputError("--prompt is empty")


def parse_cap(text: str | None) -> float | None:
    if text is None:
        return None
    from profiler.results.schema import parse_gib

    try:
        return parse_gib(text)
    except ValueError as exc:
        raise InputError(f"--memory-cap: {exc}") from None


def check_artifact(path: Path | None, suffix: str) -> None:
    """An output file such as a flamegraph: the right kind, in a folder that exists."""
    if path is None:
        return
    if path.suffix.lower() != suffix:
        raise InputError(f"{path.name}: expected a {suffix} file")
    if path.is_dir():
        raise InputError(f"{path} is a folder: name a file")
    if not path.parent.is_dir():
        raise InputError(f"folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(f"folder is not writable: {path.parent}")


def check_plan(points: list, where: str = "", worker_gpu: bool | None = None) -> None:
    """Every model the points need can be built here (device, dtype, name, weights) and every point's
    parameters fit its model's shape (layer ranges): refused before any model is built. With
    worker_gpu (Ray workers with or without a GPU) what does not depend on the workers' nodes."""
    from profiler.instruments.torch_memory import check_cap_device, memory_cap_fraction
    from profiler.results.schema import parse_gib
    from workloads.device import resolve_device
    from workloads.models import check_model
    from workloads.plan import check_params

    try:
        for group in dict.fromkeys(p.model_group for p in points):
            model, weights, dtype, device, cap = group
            check_model(model, weights, dtype, device, worker_gpu)
            if cap is None:
                continue
            if worker_gpu is None:
                memory_cap_fraction(resolve_device(device), parse_gib(cap))
            else:  # the workers' cards are not this machine's: the cap is checked against them there
                parse_gib(cap)
                check_cap_device(resolve_device(device, worker_gpu))
    except (InputError, ValueError) as exc:
        raise InputError(f"{where}{exc}") from None
    try:
        check_params(points, worker_gpu)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def check_to_measure(points: list, force: bool, where: str = "", generates: bool = True) -> None:
    """check_plan, then profiler.capacity.guards (memory, CPU time, context, token counts, inputs)."""
    from profiler.capacity.guards import check_model_fits

    check_plan(points, where)
    check_model_fits(points, force, generates)
