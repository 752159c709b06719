"""Agreement with the full model (metrics.agreement): exact where it must be, computed by hand, and
never inside the timed requests."""

import math
from itertools import count

import pytest
import torch
from typer.testing import CliRunner

import profiler.instruments.timing
import profiler.measure.runner
from profiler.cli import app
from profiler.measure.metrics import agreement
from profiler.measure.runner import Runner
from profiler.measure.settings import MeasureSettings
from profiler.results.store import read_records
from workloads.images import synthetic_images
from workloads.plan import Workload
from workloads.point import Point

HIRED = {"alpha": 0.5, "l_init": 0, "l_final": 2}


def workload(batch=2, new_tokens=4):
    return Workload(synthetic_images([(600, 600), (1000, 300)], batch, seed=3), "What is this?", new_tokens)


def exact(result: dict) -> tuple:
    return result["first_token"], result["prefix"]["min"], result["kl_first"]["max"]


@pytest.mark.parametrize(
    ("method", "budget", "params", "fidelity"),
    [("none", 1.0, {}, "paper"), ("hired", 1.0, HIRED, "paper"), ("none", 1.0, {}, "reference")],
)
@pytest.mark.slow
def test_full_budget_agrees_exactly(tiny, method, budget, params, fidelity):
    runner = Runner(tiny, "r", {})
    record = runner.measure(
        workload(), Point(method, budget, params, fidelity), MeasureSettings(warmup=0, repeats=1)
    )
    assert exact(record["metrics"]["agreement"]) == (1.0, 1.0, 0.0)
    assert record["metrics"]["agreement"]["prefix"]["values"] == [1.0, 1.0]


def test_dropping_most_tokens_moves_the_first_token_distribution(tiny):
    runner = Runner(tiny, "r", {})
    got = runner.measure(workload(), Point("hired", 0.05, HIRED), MeasureSettings(warmup=0, repeats=1))[
        "metrics"
    ]["agreement"]
    assert got["kl_first"]["min"] > 0  # other inputs, other logits
    assert 0.0 <= got["first_token"] <= 1.0 and 0.0 <= got["prefix"]["min"] <= got["prefix"]["max"] <= 1.0


def test_hand_built_pair():
    reference_tokens = torch.tensor([[5, 6, 7], [1, 2, 3]])
    tokens = torch.tensor([[5, 6, 0], [9, 2, 3]])  # sample 0 leaves after 2 tokens, sample 1 at once
    reference_logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, -math.inf]], dtype=torch.float64)
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    got = agreement(reference_tokens, reference_logits, tokens, logits)
    # sample 0: p = (1/3, 1/3, 1/3), q = (1/2, 1/4, 1/4); sample 1: p = (2/3, 1/3, 0), q = (1/3, 1/3, 1/3)
    kl0 = sum(p * math.log(p / q) for p, q in [(1 / 3, 1 / 2), (1 / 3, 1 / 4), (1 / 3, 1 / 4)])
    kl1 = 2 / 3 * math.log(2) + 1 / 3 * math.log(1)
    assert got["first_token"] == 0.5
    assert got["prefix"]["values"] == pytest.approx([2 / 3, 0.0])
    assert got["kl_first"]["values"] == pytest.approx([kl0, kl1], rel=1e-12)


@pytest.mark.slow
def test_the_extra_request_never_enters_the_timing(tiny, monkeypatch):
    """With a clock that ticks once per reading, every timed value is a count of clock readings inside
    a request: equal with and without agreement exactly when the extra requests stay out."""
    ticks = count()
    monkeypatch.setattr(profiler.instruments.timing.time, "perf_counter_ns", lambda: next(ticks) * 1_000_000)
    calls = []
    real = profiler.measure.runner.run_request

    def counted(*args, **kwargs):
        calls.append(args[2].method)
        return real(*args, **kwargs)

    monkeypatch.setattr(profiler.measure.runner, "run_request", counted)
    records = {}
    for on in (False, True):
        calls.clear()
        runner = Runner(tiny, "r", {})
        records[on] = runner.measure(
            workload(), Point("hired", 0.2, HIRED), MeasureSettings(warmup=1, repeats=3, agreement=on)
        )["metrics"]
        records[on]["calls"] = list(calls)
    off, on = records[False], records[True]
    assert off["requests"] == on["requests"] == 3
    for name in ("ttft_s", "e2e_s", "itl_s"):
        assert on[name]["values"] == off[name]["values"]
    assert on["phases_s"] == off["phases_s"]
    assert off["calls"] == ["hired"] * 4 and on["calls"] == ["hired"] * 4 + ["none", "hired"]
    assert off["agreement"] is None and "--no-agreement" in off["unavailable"]["agreement"]


def test_a_failed_agreement_request_leaves_the_point_measured(tiny, monkeypatch):
    real = profiler.measure.runner.run_request

    def no_logits(lm, workload, point, first_logits=None):
        if first_logits is not None:
            raise RuntimeError("boom")
        return real(lm, workload, point)

    monkeypatch.setattr(profiler.measure.runner, "run_request", no_logits)
    record = Runner(tiny, "r", {}).measure(
        workload(), Point("hired", 0.2, HIRED), MeasureSettings(warmup=0, repeats=1)
    )
    assert record["status"] == "ok" and record["metrics"]["ttft_s"]["median"] > 0
    assert record["metrics"]["agreement"] is None
    assert record["metrics"]["unavailable"]["agreement"] == "the agreement request failed: RuntimeError: boom"


def test_the_baseline_outputs_are_computed_once_per_input_set(tiny, monkeypatch):
    calls = []
    real = profiler.measure.runner.run_request

    def counted(*args, **kwargs):
        if len(args) > 3:
            calls.append(args[2].method)
        return real(*args, **kwargs)

    monkeypatch.setattr(profiler.measure.runner, "run_request", counted)
    runner = Runner(tiny, "r", {})
    for budget in (0.1, 0.2):
        runner.measure(workload(), Point("hired", budget, HIRED), MeasureSettings(warmup=0, repeats=1))
    runner.measure(
        workload(batch=1), Point("hired", 0.2, HIRED), MeasureSettings(warmup=0, repeats=1)
    )  # other pictures: a new reference
    assert calls == ["none", "hired", "hired", "none", "hired"]


FAST = ["--model", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--new-tokens", "3"]


def test_run_table_shows_agreement_greyed_for_random_weights(tmp_path):
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["run", *FAST, "--batch", "2", "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    baseline = next(line for line in result.stdout.splitlines() if "none (baseline)" in line)
    assert "1.00 · 1.00 · 0.000" in baseline
    assert "agreement greyed: random weights" in result.stdout
    records = read_records(out)
    assert all(r["metrics"]["agreement"]["prefix"]["values"] for r in records)


@pytest.mark.slow
def test_isolated_points_honour_no_agreement(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(
        'models = ["tiny"]\nweights = "random"\ndevice = "cpu"\nbatch_sizes = [1]\nnew_tokens = [2]\n'
        'warmup = 0\nrepeats = 1\n[[methods]]\nname = "hired"\nbudgets = [0.2]\n'
    )
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(
        app, ["sweep", str(grid), "--isolate", "--no-agreement", "--output", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    records = read_records(out)
    assert [r["config"]["method"] for r in records] == ["none", "hired"]
    assert all(r["status"] == "ok" and r["metrics"]["agreement"] is None for r in records)
    assert all("--no-agreement" in r["metrics"]["unavailable"]["agreement"] for r in records)
