"""A point's options are declared once (workloads.point): the command line and sweep files share their
defaults and bounds, and refuse the same values in the same words."""

import pytest
import typer
from typer.testing import CliRunner

from profiler.cli import app
from workloads.errors import InputError
from workloads.point import DEFAULTS, OPTIONS, Point
from workloads.sweep import load_sweep

SWEEP = 'models = ["tiny"]\nbatch_sizes = [1]\n[[methods]]\nname = "none"\n'
BOUNDED = [name for name, f in OPTIONS.items() if f.metadata["bounds"]]


def sweep_point(tmp_path, extra: str = "") -> Point:
    path = tmp_path / "grid.toml"
    given = {line.split(" = ")[0] for line in extra.splitlines()}
    path.write_text(
        extra + "".join(f"{line}\n" for line in SWEEP.splitlines() if line.split(" = ")[0] not in given)
    )
    (point,) = load_sweep(path).points
    return point


def cli_defaults(command: str) -> dict:
    click = typer.main.get_command(app).commands[command]
    return {p.name: p.default for p in click.params}


def test_defaults_agree_between_point_sweep_files_and_commands(tmp_path):
    point = sweep_point(tmp_path)
    run = cli_defaults("run")
    for name, f in OPTIONS.items():
        if f.metadata["toml"] and not f.metadata["axis"]:
            assert getattr(point, name) == DEFAULTS[name], name  # a sweep file leaves it out: the point's
        if name in run and name not in ("method", "budget"):  # run's own choice: hired at 20%
            assert run[name] == DEFAULTS[name], name
    assert point.new_tokens == run["new_tokens"] == DEFAULTS["new_tokens"]
    assert [tuple(map(int, s.split("x"))) for s in ["600x600"]] == list(DEFAULTS["image_sizes"])


@pytest.mark.parametrize("name", BOUNDED)
def test_bounds_are_the_same_in_sweep_files_and_on_the_command_line(tmp_path, name):
    f = OPTIONS[name]
    low, high = f.metadata["bounds"]
    key, flag = f.metadata["toml"], f.metadata["flag"] or name.replace("_", "-")
    edges = [low] + ([high] if high is not None else [])
    outside = [low - 1] + ([high + 1] if high is not None else [])
    for value in edges:  # accepted by both
        if not f.metadata["axis"]:
            assert getattr(sweep_point(tmp_path, f"{key} = {value}\n"), name) == value
    for value in outside:
        toml = f"{key} = [{value}]\n" if f.metadata["axis"] else f"{key} = {value}\n"
        with pytest.raises(InputError) as refused:
            sweep_point(tmp_path, toml)
        result = CliRunner().invoke(
            app, ["run", "--model", "tiny", "--device", "cpu", f"--{flag}", str(value)]
        )
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())
        why = str(refused.value).split("out of range: ")[1]
        assert f"--{flag} {why}" in said
