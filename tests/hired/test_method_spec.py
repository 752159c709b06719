"""Methods describe themselves once: the CLI (--param, methods), sweep files, records and docs read it;
one planner makes the points of every command."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hired.methods import METHODS
from hired.shape import VisionShape
from hired.spec import BUDGET_KINDS, STAGES, Param, method_params
from profiler.cli import app
from profiler.cli.methods import markdown
from profiler.results.store import read_records
from tests.conftest import TINY_SWEEP
from tests.support.example_method import STRIDE
from workloads.errors import InputError
from workloads.plan import plan_points
from workloads.point import Inputs, MethodEntry, Point
from workloads.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()
FAST = ["--model", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--new-tokens", "2"]
SHAPE = VisionShape(depth=24, feature_layer=22)


def test_every_spec_is_complete():
    for name, method in METHODS.items():
        assert method.name == name and method.stage in STAGES and method.summary and method.reference
        assert set(method.budgets) <= {"paper", "reference"} and "paper" in method.budgets
        assert all(kind in BUDGET_KINDS for kinds in method.budgets.values() for kind in kinds)
        defaults = method.defaults(SHAPE)
        for param in method.params:
            assert param.type in (int, float, str) and param.help
            assert param.check(defaults[param.name], SHAPE) == defaults[param.name]  # defaults are in range


def test_param_ranges_and_messages():
    hired = METHODS["hired"]
    assert method_params(hired, SHAPE) == {"alpha": 0.5, "l_init": 0, "l_final": 22}
    assert method_params(hired, VisionShape(4, 2), {"alpha": "0.25", "l_final": 3}) == {
        "alpha": 0.25,
        "l_init": 0,
        "l_final": 3,
    }
    with pytest.raises(
        ValueError, match=r"l_final must be a vision layer in 0\.\.23, got 24; its parameters: alpha"
    ):
        method_params(hired, SHAPE, {"l_final": 24})
    with pytest.raises(
        ValueError, match=r"hired takes no such parameter 'neighbours'; its parameters: alpha"
    ):
        method_params(hired, SHAPE, {"neighbours": 3})
    with pytest.raises(ValueError, match="alpha must be a float, got True"):
        method_params(hired, SHAPE, {"alpha": True})
    assert METHODS["random"].defaults(SHAPE, seed=7) == {"seed": 7}  # derived from the run's seed
    choice = Param("rule", str, "a", "pick", choices=("a", "b"))
    assert choice.check("b", SHAPE) == "b"
    with pytest.raises(ValueError, match="rule must be one of a, b, got 'c'"):
        choice.check("c", SHAPE)


def test_methods_command_lists_every_spec():
    result = RUNNER.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(rows) == list(METHODS)
    assert rows["hired"]["budgets"] == {"paper": ["exact"], "reference": ["released"]}
    assert [p["name"] for p in rows["hired"]["params"]] == ["alpha", "l_init", "l_final"]
    assert rows["prumerge"]["budgets"]["paper"] == ["exact", "adaptive"]
    table = RUNNER.invoke(app, ["methods"])
    assert table.exit_code == 0 and "l_final" in table.stdout and "github.com/hasanar1f/HiRED" in table.stdout


def test_docs_table_is_the_spec():
    """docs/methods.md carries `hired-bench methods --markdown` verbatim: the docs cannot drift."""
    docs = (REPO / "docs" / "methods.md").read_text()
    assert markdown() in docs


def test_param_option_reaches_the_record(tmp_path):
    out = tmp_path / "r.jsonl"
    args = [*FAST, "--batch", "1", "--output", str(out), "--param", "alpha=0.3,0.7", "--param", "l_final=1"]
    result = RUNNER.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.stderr
    records = read_records(out)
    assert [(r["config"]["method"], r["config"]["method_params"]) for r in records] == [
        ("none", {}),
        ("hired", {"alpha": 0.3, "l_init": 0, "l_final": 1}),
        ("hired", {"alpha": 0.7, "l_init": 0, "l_final": 1}),
    ]
    assert "hired alpha=0.3" in result.stdout and "hired alpha=0.7" in result.stdout
    assert len({r["config"]["point_key"] for r in records}) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "alpha"], "--param must look like NAME=VALUE"),
        (["--param", "alpha=lots"], "hired: alpha must be a float, got 'lots'"),
        (["--param", "l_init=-1"], "l_init must be a vision layer in 0..depth - 1, got -1"),
        (["--param", "l_init=4"], "l_init must be a vision layer in 0..3, got 4"),
        (["--method", "random", "--param", "alpha=0.3"], "random takes no such parameter 'alpha'"),
        (["--method", "all", "--param", "colour=1"], "no method measured takes parameter(s) colour"),
    ],
)
def test_bad_params_are_refused_with_the_parameter_list(tmp_path, args, message):
    out = tmp_path / "r.jsonl"
    result = RUNNER.invoke(app, ["run", *FAST, "--output", str(out), *args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


SWEEP = (
    TINY_SWEEP
    + """[[methods]]
name = "hired"
budgets = [0.2, 0.2]
alpha = [0.25, 0.75]
[[methods]]
name = "hired"
budgets = [0.2]
alpha = 0.25
"""
)


def test_sweep_parameters_are_a_grid_and_duplicates_are_planned_once(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    assert [(p.method, p.params) for p in sweep.points] == [
        ("none", {}),
        ("hired", {"alpha": 0.25}),
        ("hired", {"alpha": 0.75}),
    ]
    assert sweep.duplicates == 3  # budgets [0.2, 0.2] twice over, and the second table's point
    path.write_text(SWEEP.replace("alpha = 0.25", "alpha = 2"))
    with pytest.raises(InputError, match=r"grid.toml: methods\[1\].alpha: alpha must be in \[0, 1\]"):
        load_sweep(path)


def test_one_planner_orders_and_keys_points():
    entries = [MethodEntry("all", (0.2,)), MethodEntry("prumerge", (None,), params={"neighbours": (8,)})]
    plan = plan_points(entries, models=["tiny"], inputs=[Inputs(new_tokens=3)], batch_sizes=[4, 1], seed=2)
    every = [name for name in METHODS if name != "none"]
    per_batch = 2 + len(every)  # the baseline, every method at 20%, then PruMerge adaptive
    assert [(p.batch_size, p.method, p.budget) for p in plan.points[: per_batch + 1]] == [
        (1, "none", 1.0),
        *((1, name, 0.2) for name in every),
        (1, "prumerge", None),
        (4, "none", 1.0),
    ]
    assert plan.points[per_batch - 1].params == {"neighbours": 8} and len(plan.points) == 2 * per_batch
    # keys are what 0.1.0 wrote for the same point (resume matches older results files)
    old = Point("hired", 0.2, {"alpha": 0.3}, model="tiny", weights="random", device="cpu", batch_size=2)
    assert Point(**{**old.__dict__, "new_tokens": 8, "warmup": 1, "repeats": 2}).key == "df8d4cd6ba863798"


@pytest.mark.slow
def test_a_method_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    """tests/support/example_method.py + this registration: listed, takes --param, sweeps, measured by run."""
    monkeypatch.setitem(METHODS, "stride", STRIDE)
    listed = json.loads(RUNNER.invoke(app, ["methods", "--json"]).stdout)
    assert any(r["name"] == "stride" and r["params"][0]["name"] == "phase" for r in listed)
    out = tmp_path / "r.jsonl"
    args = ["run", *FAST, "--method", "stride", "--budget", "0.1", "--param", "phase=0.5", "--batch", "2"]
    result = RUNNER.invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    _, stride = read_records(out)
    assert stride["config"]["method_params"] == {"phase": 0.5}
    assert stride["metrics"]["visual_tokens"]["kept"] == [math.floor(0.1 * 2880 + 0.5)] * 2
    grid = tmp_path / "s.toml"
    grid.write_text(
        SWEEP.split("[[methods]]")[0] + '[[methods]]\nname = "stride"\nbudgets = [0.1]\nphase = [0.0, 0.5]\n'
    )
    result = RUNNER.invoke(app, ["sweep", str(grid), "--output", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert [r["config"]["method_params"] for r in read_records(tmp_path / "s.jsonl")] == [
        {},
        {"phase": 0.0},
        {"phase": 0.5},
    ]
    bad = RUNNER.invoke(
        app, ["run", *FAST, "--method", "stride", "--param", "phase=1.5", "--output", str(out)]
    )
    assert bad.exit_code == 2 and "stride: phase must be in [0, 0.99], got 1.5" in bad.stderr
