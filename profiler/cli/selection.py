"""`hired-bench show-selection`: every partition of one picture with the tokens a method keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import err, fail, say
from workloads.errors import InputError
from workloads.images import load_image
from workloads.point import Inputs


@options.command(without=("memory_cap",))
def show_selection(
    image: Annotated[Path, typer.Option(help="The picture to draw (any format Pillow reads).")],
    choice: options.MethodOptions,
    setup: options.ModelOptions,
    out: Annotated[Path, typer.Option(help="Image file to write (.png, .svg or .pdf).")] = Path(
        "selection.png"
    ),
    seed: options.Seed = 0,
) -> None:
    """Draw every partition of IMAGE (full image + sub-images) with the tokens METHOD keeps outlined."""
    try:
        point, picture = check_selection(image, choice, setup, out, seed)
        from workloads.models import load_model

        with err.status("building the model…"):
            lm = load_model(setup.model, setup.weights, setup.dtype, setup.device, seed)
    except (InputError, ValueError) as exc:
        raise fail(str(exc)) from None
    from hired.draw import draw_selection

    try:
        selection, layout, pictures, note = select_on(lm, point, picture, seed)
    except ValueError as exc:
        raise fail(f"{point.method} cannot select here: {exc}") from None
    title = figure_title(lm, point, picture, selection, note)
    warning = None
    if lm.weights == "random":
        warning = (
            "random weights: the attention, so the choice of tokens, is meaningless; only the counts are real"
        )
    save_figure(draw_selection(pictures, layout, selection, title, warning), out)
    say(f"{title}\nwrote {out}")


def check_selection(image: Path, choice, setup, out: Path, seed: int):
    """(the one planned point, the picture), or InputError: one method, one budget, a drawable --out."""
    if choice.method == "all":
        raise InputError("show-selection draws one method at a time")
    options.check_point_options(seed=seed)
    if len(options.parse_budgets(choice.budget)) != 1:
        raise InputError("show-selection draws one budget at a time")
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--out must end in .png, .svg or .pdf, got {out.name!r}")
    if not out.parent.is_dir():
        raise InputError(f"folder for --out does not exist: {out.parent}")
    options.check_artifact(out, out.suffix.lower())
    picture = load_image(image)
    plan = options.plan_command(
        setup, choice, Inputs(), measure=options.MeasureOptions(seed=seed), baseline=choice.method == "none"
    )
    (point,) = plan.points
    options.check_to_measure(plan.points, force=False, generates=False)
    return point, picture


def select_on(lm, point, picture, seed: int):
    """The method's selection on the picture's vision pass: (selection, layout, partition pictures,
    how the picture was shown)."""
    from hired.capture import stack_partitions
    from hired.draw import partition_pictures
    from hired.glue import picture_sizes, shown_pictures, vision_pass, vision_shape
    from hired.methods import METHODS, method_params

    chosen = METHODS[point.method]
    params = method_params(chosen, vision_shape(lm.model), point.params, seed)
    shown, base_only = shown_pictures(
        chosen, [picture], point.budget, params, point.fidelity, lm.model.config
    )
    pixels = lm.image_processor(shown, return_tensors="pt")
    size = picture_sizes(pixels, shown)[0]
    vision = vision_pass(lm.model, pixels["pixel_values"], [size], chosen.layers(params), base_only)
    vision.source_sizes = [(picture.height, picture.width)]
    layout = vision.layouts[0]
    (selection,) = chosen.select(vision, point.budget, point.fidelity, params)
    processor = lm.image_processor
    pictures = partition_pictures(
        stack_partitions(pixels["pixel_values"][:1], [layout.partitions]),
        processor.image_mean,
        processor.image_std,
    )
    note = ""
    if shown[0] is not picture or base_only[0]:
        shape = "its base partition alone" if base_only[0] else f"{shown[0].width}x{shown[0].height}"
        note = f" (shown as {shape})"
    return selection, layout, pictures, note


def figure_title(lm, point, picture, selection, layout_note: str) -> str:
    from hired.layout import image_layout

    kept = selection.tokens.shape[0]
    full = image_layout((picture.height, picture.width), lm.model.config).n_full  # before any resize
    title = (
        f"{point.method} ({point.fidelity}) at {point.label}: {kept} of {full} visual tokens "
        f"({kept / full:.1%}){layout_note} · {lm.name}, {lm.weights} weights"
    )
    made = kept - len(selection.kept) if selection.kept is not None else 0
    if selection.anchors is not None:
        title += f"\nyellow: kept tokens; cyan: where the {made} merged (contextual) tokens sit"
    elif made:  # PruMerge's summaries of the dropped tokens, GlobalCom2 reference's newlines
        title += f"\noutlined: the kept tokens; plus {made} tokens the method adds (summaries or newlines)"
    elif selection.kept is None:
        title += "\nevery token is averaged into a coarser grid; none is dropped outright"
    return title


def save_figure(figure, out: Path) -> None:
    """A whole picture or none: written aside, then renamed over the target."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        figure.savefig(partial, dpi=110, format=out.suffix.lower().lstrip("."))
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise fail(f"cannot write {out}: {exc.strerror or exc}", code=1) from None
