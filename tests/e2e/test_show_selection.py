"""`hired-bench show-selection`: a real picture file for every method, and clear errors."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from profiler.cli import app
from workloads.images import synthetic_image

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pics") / "wide.png"
    synthetic_image(1000, 600, seed=3).save(path)
    return path


@pytest.mark.parametrize(
    ("method", "budget", "fidelity"),
    [
        ("hired", "0.2", "paper"),
        ("hired", "0.2", "reference"),
        ("prumerge+", "0.3", "paper"),
        ("random", "0.1", "paper"),
        ("pool", "0.2", "paper"),
        ("prumerge", "adaptive", "reference"),
        ("visionzip", "0.2", "paper"),
        ("divprune", "0.2", "paper"),
        ("globalcom2", "0.2", "paper"),
        ("resize", "0.1", "paper"),
    ],
)
def test_draws_every_partition(picture, tmp_path, method, budget, fidelity):
    out = tmp_path / "sel.png"
    args = [
        "show-selection",
        "--image",
        str(picture),
        "--method",
        method,
        "--budget",
        budget,
        "--fidelity",
        fidelity,
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as img:
        assert img.size[0] > 600 and img.size[1] > 400
        colours = np.asarray(img.convert("RGB").resize((64, 64))).reshape(-1, 3)
        assert len(np.unique(colours, axis=0)) > 50  # a picture, not a blank page
    assert "random weights" in result.stderr and f"{method} ({fidelity})" in result.stderr


def test_titles_hold_per_partition_counts(tiny):
    import torch

    from hired.draw import draw_selection, token_states
    from hired.layout import image_layout
    from hired.methods import Selection

    layout = image_layout((600, 1000), tiny.model.config)
    kept = layout.candidates[::7]
    selection = Selection(torch.zeros(len(kept), 4), kept)
    states = token_states(layout, selection)
    figure = draw_selection(torch.rand(layout.partitions, 336, 336, 3).numpy(), layout, selection, "t")
    titles = [ax.get_title() for ax in figure.axes]
    expected = [int((kept // 576 == p).sum()) for p in range(layout.partitions)]
    assert [int(t.split(": ")[1].split(" of ")[0]) for t in titles] == expected
    assert [int(t.split(" of ")[1].split()[0]) for t in titles] == layout.valid_per_partition().tolist()
    assert int((states == 1).sum()) == len(kept)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "all"], "one method at a time"),
        (["--budget", "2"], "--budget must be in (0, 1]"),
        (["--out", "/nonexistent-dir/x.png"], "folder for --out does not exist"),
        (["--out", "sel.txt"], "--out must end in .png, .svg or .pdf"),
        (["--method", "hired", "--budget", "adaptive"], "needs a numeric budget"),
    ],
)
def test_bad_input(picture, args, message):
    result = RUNNER.invoke(app, ["show-selection", "--image", str(picture), "--model", "tiny", *args])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_unreadable_picture(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("no")
    result = RUNNER.invoke(app, ["show-selection", "--image", str(bad), "--model", "tiny"])
    assert result.exit_code == 2 and "cannot read image" in result.stderr
