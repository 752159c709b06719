"""The `hired-bench` command line."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hired.methods import FIDELITIES, METHODS, check_point, method_params
from profiler.console import results_table
from profiler.records import append_record, check_writable, new_run_id
from workloads.errors import InputError
from workloads.images import folder_images, load_image, parse_size, synthetic_images
from workloads.presets import DEFAULT_PROMPT, PRESETS, WEIGHTS

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

BASELINE_NOTE = {
    "paper": "the baseline is stock LLaVA-Next: its kept tokens include the newline tokens",
    "reference": "the baseline is the HiRED code's full path: every candidate token, no newline tokens",
}
DEFAULT_OUTPUT = Path("results/results.jsonl")


@app.callback()
def _root() -> None:
    """Benchmark LLaVA-Next with and without visual-token dropping."""


def fail(message: str) -> typer.Exit:
    """Bad input: one line on stderr, exit code 2."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


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


def method_names(method: str, budget: float | None, fidelity: str) -> list[str]:
    """Methods measured against the baseline; 'all' = every method defined for this budget and fidelity."""
    if fidelity not in FIDELITIES:
        raise InputError(f"unknown --fidelity {fidelity!r} (use {', '.join(FIDELITIES)})")
    if method == "all":
        names = [n for n, m in METHODS.items() if n != "none" and _defined(m, budget, fidelity)]
        if not names:
            raise InputError(f"no method is defined for budget {budget or 'adaptive'} in {fidelity} fidelity")
        return names
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)}, all)")
    try:
        check_point(METHODS[method], budget, fidelity)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return [] if method == "none" else [method]


def _defined(method, budget: float | None, fidelity: str) -> bool:
    try:
        check_point(method, budget, fidelity)
    except ValueError:
        return False
    return True


def method_budget_pairs(method: str, budgets: list[float | None], fidelity: str) -> list[tuple]:
    """The baseline once, then (name, budget) for every method defined at each budget."""
    return [("none", 1.0)] + [(name, b) for b in budgets for name in method_names(method, b, fidelity)]


def plan_points(pairs: list[tuple], fidelity: str, shape, overrides: dict, seed: int) -> list:
    """One Point per (method, budget), with its checked parameters; `none` is the baseline."""
    from profiler.runner import Point

    given = {k: v for k, v in overrides.items() if v is not None}
    points, used = [], set()
    for name, budget in pairs:
        if name == "none":
            points.append(Point("none", 1.0, {}, fidelity))
            continue
        method = METHODS[name]
        defaults = method.defaults(shape)
        mine = {k: v for k, v in given.items() if k in defaults} | (
            {"seed": seed} if "seed" in defaults else {}
        )
        used |= set(mine)
        try:
            points.append(Point(name, budget, method_params(method, shape, mine), fidelity))
        except ValueError as exc:
            raise InputError(str(exc)) from None
    unused = sorted(set(given) - used)
    if unused:
        names = sorted({n for n, _ in pairs if n != "none"}) or ["none"]
        raise InputError(f"option(s) {', '.join(unused)} not taken by method(s): {', '.join(names)}")
    return points


def check_inputs(batch: int, new_tokens: int, warmup: int, repeats: int) -> None:
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if new_tokens < 1:
        raise InputError(f"--new-tokens must be at least 1, got {new_tokens}")
    if warmup < 0 or repeats < 1:
        raise InputError(f"--warmup must be >= 0 and --repeats >= 1, got {warmup} and {repeats}")


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
        typer.Option(
            help="Token-dropping method: " + ", ".join(METHODS) + ", or all. Always measured with none."
        ),
    ] = "hired",
    budget: Annotated[
        str,
        typer.Option(
            help="Fraction of visual tokens kept per image, in (0, 1]; 1.0 = no dropping; "
            "'adaptive' = the method's own count (prumerge, prumerge+)."
        ),
    ] = "0.2",
    fidelity: Annotated[
        str,
        typer.Option(
            help="paper: the papers' definitions with exact budgets; reference: the released code's "
            "behaviour (hired; prumerge and prumerge+ adaptive), to compare with published numbers."
        ),
    ] = "paper",
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
    memory_cap: Annotated[
        str | None,
        typer.Option(
            help="Emulate a smaller GPU: cap PyTorch's memory, e.g. 24GiB (GiB, GB, MiB; no unit = GiB)."
        ),
    ] = None,
    py_spy: Annotated[
        Path | None,
        typer.Option("--py-spy", help="Write a py-spy flamegraph (SVG) of the host side of the run."),
    ] = None,
    torch_trace: Annotated[
        Path | None,
        typer.Option(
            help="Write a torch profiler Chrome trace (JSON) of one more request per point: OUT.METHOD.json."
        ),
    ] = None,
) -> None:
    """Measure METHOD at BUDGET and the full-token baseline on the same inputs; print a table with ratios."""
    try:
        check_inputs(batch, new_tokens, warmup, repeats)
        budget_value = parse_budget(budget)
        pairs = method_budget_pairs(method, [budget_value], fidelity)
        if weights not in WEIGHTS:
            raise InputError(f"unknown --weights {weights!r} (use {', '.join(WEIGHTS)})")
        cap_gib = parse_cap(memory_cap)
        for path, suffix in ((py_spy, ".svg"), (torch_trace, ".json")):
            check_artifact(path, suffix)
        pictures, source = load_images(image_size or ["600x600"], images, batch, seed)
        check_writable(output)
        # torch and transformers load here, after the checks that need neither (about 5 s)
        from hired.glue import vision_shape
        from profiler.runner import Workload, trace_path
        from profiler.session import open_runner

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
                save_outputs=save_outputs,
                memory_cap_gib=cap_gib,
                torch_trace=torch_trace,
            )
        overrides = {"alpha": alpha, "l_init": l_init, "l_final": l_final}
        points = plan_points(pairs, fidelity, vision_shape(runner.lm.model), overrides, seed)
    except InputError as exc:
        raise fail(str(exc)) from None

    with closing(runner):
        describe(runner)
        workload = Workload(pictures, prompt, new_tokens, source)
        records = measure_points(runner, workload, points, output, py_spy)
    if as_json:
        for record in records:
            print(json.dumps(record))
    else:
        lm = runner.lm
        setup = f"{lm.weights} weights, {str(lm.dtype).removeprefix('torch.')}, {lm.device}"
        cap = f", memory cap {cap_gib:.1f} GiB" if cap_gib else ""
        title = f"{lm.name} ({setup}{cap}), batch {batch}, {new_tokens} new tokens"
        out.print(results_table(records, title))
        out.print(
            f"medians of {repeats} measured requests after {warmup} warm-up · peak mem = torch max allocated "
            f"(n/a without CUDA)\n{BASELINE_NOTE[fidelity]} · records appended to {output}",
            highlight=False,
        )
    print_warnings(records)
    for path in [py_spy] + ([trace_path(torch_trace, p) for p in points] if torch_trace else []):
        if path is not None and path.exists():
            err.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False)
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(code=1)


def parse_cap(text: str | None) -> float | None:
    if text is None:
        return None
    from profiler.memory import parse_gib

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
    if not path.parent.is_dir():
        raise InputError(f"folder does not exist: {path.parent}")


def describe(runner) -> None:
    """What is measured, said plainly: model, weights, dtype, device, and how memory is read."""
    lm = runner.lm
    dtype_name = str(lm.dtype).removeprefix("torch.")
    err.print(
        f"model: [bold]{lm.name}[/] · {lm.weights} weights · {dtype_name} on {lm.device}", highlight=False
    )
    for note in lm.notes:
        err.print(f"  {note}", highlight=False)
    if runner.sampler is None:
        err.print(f"  GPU memory and energy: not measured ({runner.nvml_reason})", highlight=False)


def measure_points(runner, workload, points: list, output: Path, py_spy: Path | None = None) -> list[dict]:
    """Measure each point with a progress bar, appending each record as soon as it exists."""
    from profiler.pyspy import PySpyError, start_py_spy, stop_py_spy

    spy = None
    if py_spy is not None:
        try:
            spy = start_py_spy(py_spy)
        except PySpyError as exc:
            raise fail(str(exc)) from None
    records = []
    try:
        with _progress() as progress:
            task = progress.add_task("measuring", total=len(points) * (runner.warmup + runner.repeats))
            runner.on_request = lambda: progress.advance(task)
            for point in points:
                progress.update(task, description=f"{point.method} @ {point.label}")
                record = runner.measure(workload, point)
                append_record(output, record)
                records.append(record)
    finally:
        if spy is not None:
            stop_py_spy(spy)
    return records


def print_warnings(records: list[dict]) -> None:
    for record in records:
        for warning in (record.get("metrics") or {}).get("warnings", []):
            err.print(
                f"[yellow]warning[/] ({record['config']['method']}): {warning}",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def env(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N: the device to describe.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The hardware and software fingerprint stored in every record, and what can be measured here."""
    from profiler.hardware import fingerprint
    from profiler.memory import Nvml, NvmlUnavailable, SamplerProcess
    from workloads.models import resolve_device

    try:
        dev = resolve_device(device)
    except InputError as exc:
        raise fail(str(exc)) from None
    nvml, reason = Nvml.open(dev)
    info = fingerprint(dev, nvml)
    measurable = {"device": str(dev), "nvml": "ok" if nvml else reason, "energy_counter": None}
    if nvml is not None:
        try:
            with SamplerProcess(nvml.uuid) as sampler:
                measurable["energy_counter"] = (
                    "ok" if sampler.energy_supported else "not supported by this GPU"
                )
        except NvmlUnavailable as exc:
            measurable["nvml"] = f"sampler: {exc}"
    if as_json:
        print(json.dumps({"hardware": info, "measurable": measurable}))
        return
    from rich.table import Table

    table = Table(title="hired-bench env", show_header=False, title_justify="left")
    for key, value in {**info, **measurable}.items():
        table.add_row(key, "n/a" if value is None else str(value))
    out.print(table)


@app.command("show-selection")
def show_selection(
    image: Annotated[Path, typer.Option(help="The picture to draw (any format Pillow reads).")],
    method: Annotated[str, typer.Option(help="Method: " + ", ".join(METHODS) + ".")] = "hired",
    budget: Annotated[
        str,
        typer.Option(help="Fraction of visual tokens kept, in (0, 1], or 'adaptive' (prumerge, prumerge+)."),
    ] = "0.2",
    out: Annotated[Path, typer.Option(help="Image file to write (.png, .svg or .pdf).")] = Path(
        "selection.png"
    ),
    fidelity: Annotated[str, typer.Option(help="paper or reference (see run --help).")] = "paper",
    model: Annotated[
        str, typer.Option(help="As for run: preset, folder or cached id; auto by device.")
    ] = "auto",
    weights: Annotated[str, typer.Option(help="auto, pretrained or random.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float16, bfloat16, float32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    alpha: Annotated[
        float | None, typer.Option(help="HiRED: full-image share of the budget (default 0.5).")
    ] = None,
    l_init: Annotated[int | None, typer.Option(help="HiRED: budget-split layer (default 0).")] = None,
    l_final: Annotated[int | None, typer.Option(help="HiRED: token-choice layer (default 22).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for random weights and the random baseline.")] = 0,
) -> None:
    """Draw every partition of IMAGE (full image + sub-images) with the tokens METHOD keeps outlined."""
    try:
        if method == "all":
            raise InputError("show-selection draws one method at a time")
        budget_value = parse_budget(budget)
        pairs = method_budget_pairs(method, [budget_value], fidelity)[-1:]  # the method itself
        if out.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise InputError(f"--out must end in .png, .svg or .pdf, got {out.name!r}")
        if not out.parent.is_dir():
            raise InputError(f"folder for --out does not exist: {out.parent}")
        picture = load_image(image)
        from hired.capture import encode_images
        from hired.draw import draw_selection, partition_pictures
        from hired.glue import vision_shape
        from hired.layout import image_layout
        from workloads.models import load_model

        with err.status("building the model…"):
            lm = load_model(model, weights, dtype, device, seed)
        overrides = {"alpha": alpha, "l_init": l_init, "l_final": l_final}
        (point,) = plan_points(pairs, fidelity, vision_shape(lm.model), overrides, seed)
    except InputError as exc:
        raise fail(str(exc)) from None

    chosen = METHODS[point.method]
    pixels = lm.image_processor([picture], return_tensors="pt")
    layout = image_layout(tuple(pixels["image_sizes"][0].tolist()), lm.model.config)
    vision = encode_images(
        lm.model, pixels["pixel_values"].to(lm.device), [layout], chosen.layers(point.params)
    )
    try:
        (selection,) = chosen.select(vision, point.budget, point.fidelity, point.params)
    except ValueError as exc:
        raise fail(f"{point.method} cannot select here: {exc}") from None
    processor = lm.image_processor
    pictures = partition_pictures(
        pixels["pixel_values"][0, : layout.partitions], processor.image_mean, processor.image_std
    )
    kept = selection.tokens.shape[0]
    title = (
        f"{point.method} ({point.fidelity}) at {point.label}: {kept} of {layout.n_full} visual tokens "
        f"({kept / layout.n_full:.1%}) · {lm.name}, {lm.weights} weights"
    )
    summaries = kept - len(selection.kept) if selection.kept is not None else 0
    if summaries:
        title += f"\noutlined: the kept tokens; plus {summaries} summary tokens of the dropped ones"
    elif selection.kept is None:
        title += "\nevery token is averaged into a coarser grid; none is dropped outright"
    note = None
    if lm.weights == "random":
        note = (
            "random weights: the attention, so the choice of tokens, is meaningless; only the counts are real"
        )
    figure = draw_selection(pictures, layout, selection, title, note)
    figure.savefig(out, dpi=110)
    err.print(f"{title}\nwrote {out}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (TOML), e.g. workloads/smoke.toml.")],
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
) -> None:
    """Measure the grid in FILE: methods x budgets x batch sizes x image sizes x models, point by point."""
    from profiler.sweep import pending_points, repair_tail, run_points
    from workloads.sweep import load_sweep

    try:
        spec = load_sweep(file)
        output = output or spec.output
        check_writable(output)
        from workloads.models import model_problem

        for model, weights in dict.fromkeys((p.model, p.weights) for p in spec.points):
            if problem := model_problem(model, weights):
                raise InputError(f"{file.name}: models: {problem}")
    except InputError as exc:
        raise fail(str(exc)) from None
    if cut := repair_tail(output):
        err.print(f"removed a half-written last record ({cut} bytes) from {output}", highlight=False)
    todo = pending_points(spec.points, output, resume)
    done = len(spec.points) - len(todo)
    err.print(
        f"sweep {spec.name}: {len(spec.points)} points"
        + (f", {done} already recorded, {len(todo)} to run" if resume else "")
        + f" -> {output}",
        highlight=False,
    )
    records, advanced = [], [0]
    with _progress() as progress:
        task = progress.add_task("starting", total=sum(p.warmup + p.repeats for p in todo))

        def on_point(point) -> None:
            advanced[0] = 0
            label = "adaptive" if point.budget is None else f"{point.budget:.0%}"
            progress.update(
                task, description=f"{point.model} {point.method} @ {label} batch {point.batch_size}"
            )

        def on_request() -> None:
            advanced[0] += 1
            progress.advance(task)

        for record in run_points(todo, output, spec.name, new_run_id(), isolate, on_point, on_request):
            # a failed or isolated point did not report all its requests: count the rest as done
            progress.advance(task, record["config"]["warmup"] + record["config"]["repeats"] - advanced[0])
            records.append(record)
    print_sweep(records)
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "oom", "error")}
    err.print(
        f"{len(records)} points measured: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error "
        f"· records in {output}",
        highlight=False,
    )
    if counts["error"]:
        raise typer.Exit(code=1)


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


def parse_budgets(text: str) -> list[float | None]:
    return [parse_budget(part) for part in text.split(",") if part.strip()]


@app.command("oom-boundary")
def oom_boundary(
    model: Annotated[str, typer.Option(help="Preset, folder or cached id; auto by device.")] = "auto",
    method: Annotated[
        str, typer.Option(help="A method or all; the baseline is always searched too.")
    ] = "all",
    budget: Annotated[str, typer.Option(help="Budgets, comma-separated, e.g. 0.1,0.2,0.4.")] = "0.2",
    fidelity: Annotated[str, typer.Option(help="paper or reference.")] = "paper",
    weights: Annotated[str, typer.Option(help="auto, pretrained or random.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float16, bfloat16, float32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    image_size: Annotated[list[str] | None, typer.Option(help="WIDTHxHEIGHT; repeat to mix sizes.")] = None,
    new_tokens: Annotated[int, typer.Option(help="New tokens per sample.")] = 15,
    memory_cap: Annotated[
        str | None, typer.Option(help="Search under a smaller card's memory, e.g. 24GiB.")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Largest batch size tried.")] = 256,
    warmup: Annotated[int, typer.Option(help="Warm-up requests per probe.")] = 0,
    repeats: Annotated[int, typer.Option(help="Measured requests per probe.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for weights and images.")] = 0,
    output: Annotated[Path, typer.Option(help="JSON Lines file for probes and boundaries.")] = Path(
        "results/oom-boundary.jsonl"
    ),
) -> None:
    """The largest batch that fits, per method x budget: galloping (1, 2, 4, ...) then binary search.

    Every probe is an ordinary point record; one `oom_boundary` record per method and budget
    holds the result and, on a GPU, the memory model's prediction for the same memory.
    """
    try:
        check_inputs(1, new_tokens, warmup, repeats)
        if max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {max_batch}")
        pairs = method_budget_pairs(method, parse_budgets(budget), fidelity)
        cap_gib = parse_cap(memory_cap)
        sizes = [parse_size(s) for s in image_size or ["600x600"]]
        check_writable(output)
        from hired.glue import vision_shape
        from profiler.session import open_runner

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
            )
        shape = vision_shape(runner.lm.model)
        points = plan_points(pairs, fidelity, shape, {}, seed)
    except InputError as exc:
        raise fail(str(exc)) from None
    from profiler.boundary import find_boundaries

    with closing(runner):
        describe(runner)
        with _progress() as progress:
            task = progress.add_task("probing", total=None)
            rows = find_boundaries(
                runner,
                points,
                sizes,
                new_tokens,
                max_batch,
                output,
                cap_gib,
                lambda text: progress.update(task, description=text),
            )
    from rich.table import Table

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
    err.print(f"probes and boundaries appended to {output}", highlight=False)


@app.command()
def predict(
    gpu_memory: Annotated[str, typer.Option(help="Memory of the card to predict for, e.g. 24GiB.")],
    model: Annotated[str, typer.Option(help="Preset, folder or cached id.")] = "llava-next-7b",
    dtype: Annotated[str, typer.Option(help="float16, bfloat16 or float32.")] = "float16",
    method: Annotated[str, typer.Option(help="A method or all.")] = "all",
    budget: Annotated[str, typer.Option(help="Budgets, comma-separated.")] = "0.1,0.2,0.4",
    fidelity: Annotated[str, typer.Option(help="paper or reference.")] = "paper",
    image_size: Annotated[list[str] | None, typer.Option(help="WIDTHxHEIGHT; repeat to mix sizes.")] = None,
    new_tokens: Annotated[int, typer.Option(help="New tokens per sample.")] = 15,
    overhead: Annotated[
        str,
        typer.Option(help="Memory that is not PyTorch's: the CUDA context (use 0 for a --memory-cap run)."),
    ] = "0.5GiB",  # profiler.memory_model.CUDA_CONTEXT_GIB
    prompt: Annotated[str, typer.Option(help="Question asked about each image.")] = DEFAULT_PROMPT,
    output: Annotated[
        Path | None, typer.Option(help="Also append the predictions (JSON Lines) here.")
    ] = None,
) -> None:
    """Predicted peak memory and the largest batch that fits on a card, from the configuration alone."""
    from profiler.memory import parse_gib
    from profiler.memory_model import BYTES

    try:
        memory_gib, overhead_gib = parse_gib(gpu_memory), parse_gib(overhead)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        if dtype not in BYTES:
            raise InputError(f"unknown --dtype {dtype!r} (use {', '.join(BYTES)})")
        check_inputs(1, new_tokens, 0, 1)
        budgets = parse_budgets(budget)
        sizes = [parse_size(s) for s in image_size or ["600x600"]]
        if output is not None:
            check_writable(output)
        from profiler.memory_model import predictions

        plan = method_budget_pairs(method, budgets, fidelity)
        with err.status("reading the model's shape…"):
            rows = predictions(
                model, dtype, plan, fidelity, sizes, new_tokens, prompt, memory_gib - overhead_gib
            )
    except InputError as exc:
        raise fail(str(exc)) from None
    from rich.table import Table

    table = Table(
        title=f"{model} ({dtype}) on a {memory_gib:.0f} GiB card ({overhead_gib:.1f} GiB not PyTorch's), "
        f"{new_tokens} new tokens",
        title_justify="left",
    )
    for name in ("method", "budget", "tokens/image", "peak b=1", "b=2", "b=4", "b=8", "largest batch"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        peaks = r["peak_gib_by_batch"]
        table.add_row(
            r["method"],
            r["budget_label"],
            str(r["tokens_per_image"] or "adaptive"),
            *("n/a" if peaks is None else f"{peaks[str(b)]:.1f}" for b in (1, 2, 4, 8)),
            "n/a" if r["largest_batch"] is None else str(r["largest_batch"]),
        )
    out.print(table)
    out.print(
        "peaks in GiB of PyTorch-allocated memory (weights + KV cache + the largest phase's activations); "
        "a model, not a measurement: compare with oom-boundary on a real card",
        highlight=False,
    )
    if output is not None:
        for r in rows:
            append_record(output, {"kind": "prediction", "schema_version": 1, **r})


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
