"""Every option two commands share, defined once (its name, type and help), and the parsing behind it.

Commands declare `model: options.Model = "auto"`; the default is the command's, the meaning is one.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, fields
from inspect import Parameter
from pathlib import Path
from typing import Annotated, get_type_hints

import typer

from workloads import presets
from workloads.errors import InputError
from workloads.images import folder_images, parse_size
from workloads.point import DEFAULTS, OPTIONS, Inputs, MethodEntry, check_option


def point_option(name: str, cli_type) -> object:
    """A point option's Typer annotation; its help is the one workloads.point declares."""
    return Annotated[cli_type, typer.Option(help=OPTIONS[name].metadata["help"])]


Model = point_option("model", str)
Method = point_option("method", str)
Budget = point_option("budget", str)
Fidelity = point_option("fidelity", str)
Param = Annotated[list[str] | None, typer.Option("--param", help=OPTIONS["params"].metadata["help"])]
Weights = point_option("weights", str)
Stack = Annotated[
    str,
    typer.Option(
        help="The software stack to predict for: modern (transformers 5, as this suite runs), released "
        "(transformers 4.42 with the HiRED patch, as the HiRED paper measured), or auto (released for "
        "--fidelity reference, modern for paper)."
    ),
]
Dtype = point_option("dtype", str)
Device = point_option("device", str)
ImageSize = point_option("image_sizes", list[str] | None)
Images = point_option("images", Path | None)
Prompt = point_option("prompt", str)
NewTokens = point_option("new_tokens", int)
Batch = point_option("batch_size", int)
Warmup = point_option("warmup", int)
Repeats = point_option("repeats", int)
Seed = point_option("seed", int)
Output = Annotated[Path, typer.Option(help="JSON Lines file the records are appended to.")]
MemoryCap = point_option("memory_cap", str | None)
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Engine = point_option("engine", str)
MinDuration = point_option("min_duration", float)
Agreement = Annotated[
    bool,
    typer.Option(
        help="Per point, one more (untimed) request compared with the baseline's outputs on the same "
        "inputs: first-token match, matching prefix, first-token KL (metrics.agreement)."
    ),
]
SaveOutputs = Annotated[bool, typer.Option(help="Keep each sample's generated token ids in its record.")]
TorchTrace = Annotated[
    Path | None,
    typer.Option(
        help="Write a torch profiler Chrome trace (JSON) of one more request per point: OUT.METHOD.json."
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


@dataclass
class ModelOptions:
    """Which model, built how: a point's model group."""

    model: Model = DEFAULTS["model"]
    weights: Weights = DEFAULTS["weights"]
    dtype: Dtype = DEFAULTS["dtype"]
    device: Device = DEFAULTS["device"]
    memory_cap: MemoryCap = DEFAULTS["memory_cap"]

    def checked_cap_gib(self) -> float | None:
        """The memory cap in GiB, after the weights are checked (InputError otherwise)."""
        check_weights(self.weights)
        return parse_cap(self.memory_cap)

    def point_fields(self) -> dict:
        return {
            "weights": self.weights,
            "dtype": self.dtype,
            "device": self.device,
            "memory_cap": self.memory_cap,
        }


@dataclass
class MethodOptions:
    """What is measured against the baseline: methods, budgets, fidelity, parameters."""

    method: Method = "hired"
    budget: Budget = "0.2"
    fidelity: Fidelity = DEFAULTS["fidelity"]
    param: Param = None

    def entries(self) -> list[MethodEntry]:
        return method_entries(self.method, self.budget, self.fidelity, self.param)


@dataclass
class InputOptions:
    """What each request is asked: pictures (synthetic sizes or a folder), prompt, new tokens."""

    image_size: ImageSize = None
    images: Images = DEFAULTS["images"]
    prompt: Prompt = DEFAULTS["prompt"]
    new_tokens: NewTokens = DEFAULTS["new_tokens"]

    def build(self, batch: int = 1) -> Inputs:
        check_point_options(new_tokens=self.new_tokens)
        return make_inputs(self.image_size, self.images, self.prompt, self.new_tokens, batch)


@dataclass
class MeasureOptions:
    """How each point is measured: warm-up, repeats, seed, engine, duration (point fields), and the run's
    policy (agreement, saved outputs, a torch trace) that profiler.measure.settings carries."""

    warmup: Warmup = DEFAULTS["warmup"]
    repeats: Repeats = DEFAULTS["repeats"]
    seed: Seed = DEFAULTS["seed"]
    engine: Engine = DEFAULTS["engine"]
    min_duration: MinDuration = DEFAULTS["min_duration"]
    agreement: Agreement = True
    save_outputs: SaveOutputs = False
    torch_trace: TorchTrace = None

    def point_fields(self) -> dict:
        check_point_options(
            warmup=self.warmup, repeats=self.repeats, seed=self.seed, min_duration=self.min_duration
        )
        check_artifact(self.torch_trace, ".json")
        return {
            "warmup": self.warmup,
            "repeats": self.repeats,
            "seed": self.seed,
            "min_duration": self.min_duration,
        }

    def settings(self):
        from profiler.measure.settings import MeasureSettings

        return MeasureSettings(
            agreement=self.agreement, save_outputs=self.save_outputs, torch_trace=self.torch_trace
        )


GROUPS = (ModelOptions, MethodOptions, InputOptions, MeasureOptions)


def command(without: tuple[str, ...] = (), **defaults):
    """A command whose option groups (parameters annotated with a group) become their fields' options.

    Typer sees one option per field (its help and type from the group, its default from `defaults` or the
    group); the command receives the groups built. `without`: fields the command does not offer (their
    defaults apply)."""

    def wrap(main):
        hints = get_type_hints(main, include_extras=True)
        signature, kinds = [], {}
        for param in inspect.signature(main).parameters.values():
            group = hints[param.name]
            if group not in GROUPS:
                signature.append(param.replace(annotation=group, kind=Parameter.KEYWORD_ONLY))
                continue
            kinds[param.name] = group
            group_hints = get_type_hints(group, include_extras=True)
            for f in fields(group):
                if f.name not in without:
                    default = defaults.get(f.name, f.default)
                    signature.append(
                        Parameter(
                            f.name, Parameter.KEYWORD_ONLY, default=default, annotation=group_hints[f.name]
                        )
                    )

        @functools.wraps(main)
        def run(**values):
            for name, group in kinds.items():
                own = {f.name: values.pop(f.name, defaults.get(f.name, f.default)) for f in fields(group)}
                values[name] = group(**own)
            return main(**values)

        run.__signature__ = inspect.Signature(signature)
        run.__annotations__ = {p.name: p.annotation for p in signature}
        del run.__wrapped__  # Typer reads the signature above, not main's
        return run

    return wrap


def check_point_options(**values) -> None:
    """Point options' bounds (workloads.point), in the command line's words: '--batch must be ...'."""
    for name, value in values.items():
        if why := check_option(name, value):
            flag = OPTIONS[name].metadata["flag"] or name.replace("_", "-")
            raise InputError(f"--{flag} {why}")


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
    setup: ModelOptions,
    choice: MethodOptions,
    inputs: Inputs,
    batch: int = 1,
    measure: MeasureOptions | None = None,
    baseline: bool = True,
):
    """The points of one command's options (one input set, one batch size; models and engines may be
    comma-separated lists)."""
    from workloads.plan import plan_points

    check_point_options(batch_size=batch)
    measure = measure or MeasureOptions()
    return plan_points(
        choice.entries(),
        models=[name.strip() for name in setup.model.split(",")],
        inputs=[inputs],
        batch_sizes=[batch],
        fidelity=choice.fidelity,
        baseline=baseline,
        engines=tuple(name.strip() for name in measure.engine.split(",")),
        **setup.point_fields(),
        **measure.point_fields(),
    )


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
    sizes = tuple(parse_size(s) for s in image_size) if image_size else DEFAULTS["image_sizes"]
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
