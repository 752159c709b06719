"""Sweeps, OOM boundaries and the memory model (CPU, tiny preset, fakes for out-of-memory)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import profiler.measure.runner
from profiler.capacity.model import ModelShape, largest_batch, model_shape, predict_peak_gib
from profiler.capacity.search import search_boundary
from profiler.cli import app
from profiler.measure.runner import Runner
from profiler.orchestrate.local import pending_points
from profiler.results.schema import GIB
from profiler.results.store import append_record, read_records
from workloads.errors import InputError
from workloads.presets import PRESETS
from workloads.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()

SMALL = """
models = ["tiny"]
weights = "random"
device = "cpu"
batch_sizes = [1, 2]
new_tokens = [2]
warmup = 0
repeats = 1
[[methods]]
name = "hired"
budgets = [0.2, 0.4]
[[methods]]
name = "random"
budgets = [0.2]
"""


def write(tmp_path, text, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_sweep_files_load():
    paper = load_sweep(REPO / "workloads" / "paper.toml")
    # 2 token variants x 4 batch sizes x (baseline + HiRED x 3 + PruMerge + PruMerge+)
    assert len(paper.points) == 2 * 4 * 6
    assert {p.batch_size for p in paper.points} == {1, 2, 4, 8} and {p.new_tokens for p in paper.points} == {
        15,
        64,
    }
    assert sorted({(p.method, p.budget) for p in paper.points}, key=str) == sorted(
        [
            ("none", 1.0),
            ("hired", 0.1),
            ("hired", 0.2),
            ("hired", 0.4),
            ("prumerge", 0.2),
            ("prumerge+", 0.2),
        ],
        key=str,
    )
    assert all(p.image_sizes == ((600, 600),) for p in paper.points)
    smoke = load_sweep(REPO / "workloads" / "smoke.toml")
    assert {p.model for p in smoke.points} == {"tiny"} and len(smoke.points) == 12
    from hired.methods import METHODS

    numeric = [m for m in METHODS if m != "none"]  # every method takes a numeric budget
    field = load_sweep(REPO / "workloads" / "field.toml")
    assert len(field.points) == 2 * (1 + 4 * len(numeric)) and {p.batch_size for p in field.points} == {1, 4}
    twin = load_sweep(REPO / "workloads" / "field-smoke.toml")
    assert {p.model for p in twin.points} == {"tiny"} and {p.method for p in twin.points} == set(METHODS)


def test_points_order_and_keys(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    assert [(p.batch_size, p.method, p.budget) for p in sweep.points] == [
        (1, "none", 1.0),
        (1, "hired", 0.2),
        (1, "hired", 0.4),
        (1, "random", 0.2),
        (2, "none", 1.0),
        (2, "hired", 0.2),
        (2, "hired", 0.4),
        (2, "random", 0.2),
    ]
    assert len({p.key for p in sweep.points}) == 8
    again = load_sweep(write(tmp_path, SMALL))
    assert [p.key for p in again.points] == [p.key for p in sweep.points]  # stable across loads
    changed = load_sweep(write(tmp_path, SMALL.replace("repeats = 1", "repeats = 2")))
    assert not {p.key for p in changed.points} & {p.key for p in sweep.points}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SMALL.replace("batch_sizes", "batch_size"), "batch_size: unknown key (did you mean 'batch_sizes'?)"),
        (SMALL.replace('models = ["tiny"]', ""), "models: missing (required)"),
        (SMALL.replace("[1, 2]", "[1, 0]"), "batch_sizes: out of range: must be at least 1, got 0"),
        (
            SMALL.replace("[0.2, 0.4]", "[0.2, 1.5]"),
            'methods[0].budgets: budgets are fractions in (0, 1] or "adaptive"',
        ),
        (SMALL.replace('"hired"', '"hirde"'), "methods[0].name: unknown method 'hirde'"),
        (
            SMALL.replace("budgets = [0.2, 0.4]", "budgets = [0.2]\nalpha = 0.3\nneighbours = 3"),
            "methods[0].neighbours: hired takes no such parameter",
        ),
        (SMALL.replace("[0.2, 0.4]", '["adaptive"]'), "methods[0]: method 'hired' needs a numeric budget"),
        ('image_sizes = ["600by600"]\n' + SMALL, "image_sizes: image size must look like WIDTHxHEIGHT"),
        (SMALL + "alpha = 0.5\n", "methods[1].alpha: random takes no such parameter"),
        (SMALL.replace("warmup = 0", 'warmup = "none"'), "warmup: must be a int, got str"),
        ("models = [", "not valid TOML"),
        (
            "serving = { rates = [0, 2] }\n" + SMALL,
            "serving.rates: must be a non-empty list of rates above 0",
        ),
        ("serving = { rates = [1], requests = 0 }\n" + SMALL, "serving.requests: must be at least 1"),
        ("serving = { rate = [1] }\n" + SMALL, "serving.rate: unknown key (did you mean 'rates'?)"),
        (
            'serving = { rates = [1] }\nengines = ["eager"]\n' + SMALL,
            "engines: a serving grid runs on the vllm engine",
        ),
    ],
)
def test_sweep_file_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(InputError) as caught:
        load_sweep(write(tmp_path, text))
    assert message in str(caught.value) and str(caught.value).startswith("grid.toml")
    result = RUNNER.invoke(app, ["sweep", str(tmp_path / "grid.toml"), "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_sweep_with_injected_ooms_records_every_point(tmp_path, monkeypatch):
    real = profiler.measure.runner.run_request

    def oom_at_batch_2_for_hired(lm, workload, point, *rest):
        if point.method == "hired" and workload.batch_size == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(lm, workload, point, *rest)

    monkeypatch.setattr(profiler.measure.runner, "run_request", oom_at_batch_2_for_hired)
    out = tmp_path / "r.jsonl"
    result = RUNNER.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    records = read_records(out)
    planned = {p.key for p in load_sweep(tmp_path / "grid.toml").points}
    assert sorted(r["config"]["point_key"] for r in records) == sorted(planned)  # nothing missing, no repeats
    for r in records:
        expected = "oom" if r["config"]["method"] == "hired" and r["config"]["batch_size"] == 2 else "ok"
        assert r["status"] == expected, r["config"]
    oom = next(r for r in records if r["status"] == "oom")
    assert "out of memory" in oom["error"] and "peak_memory_gib" in oom["metrics"]
    assert "8 points measured: 6 ok, 2 oom, 0 error" in result.stderr


@pytest.mark.slow
def test_resume_after_kill_measures_each_point_once(tmp_path):
    grid = write(tmp_path, SMALL.replace("[1, 2]", "[1, 2, 3]"))
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from profiler.cli import main; main()",
        "sweep",
        str(grid),
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(read_records(out)) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_records(out)
    assert 3 <= len(before) < 12, "the sweep should have been killed mid-way"
    with open(out, "a") as f:
        f.write('{"schema_version": 1, "status": "ok", "config": {"point_')  # killed mid-write
    result = RUNNER.invoke(app, ["sweep", str(grid), "--output", str(out), "--resume"])
    assert result.exit_code == 0, result.stderr
    assert "moved a half-written last line" in result.stderr
    assert (tmp_path / "r.jsonl.damaged").read_text().startswith('{"schema_version": 1, "status": "ok"')
    keys = [r["config"]["point_key"] for r in read_records(out)]
    planned = [p.key for p in load_sweep(grid).points]
    assert sorted(keys) == sorted(planned)  # every point exactly once
    assert all(line.startswith("{") and line.endswith("}") for line in out.read_text().splitlines())


def test_half_line_is_moved_aside_and_pending(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')
    append_record(path, {"schema_version": 1, "d": 4})
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n{"schema_version":1,"d":4}\n'
    assert (tmp_path / "r.jsonl.damaged").read_text() == '{"c": \n'
    sweep = load_sweep(write(tmp_path, SMALL))
    path.write_text(json.dumps({"config": {"point_key": sweep.points[3].key}}) + "\n")
    left = pending_points(sweep.points, path, resume=True)
    assert len(left) == 7 and sweep.points[3] not in left
    assert len(pending_points(sweep.points, path, resume=False)) == 8


# --- OOM boundary ------------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", [1, 2, 3, 37, 64, 100, 255])
def test_boundary_search_is_exact_with_few_probes(boundary):
    found = search_boundary(lambda b: b <= boundary, limit=512)
    assert (found.largest_fitting, found.smallest_failing) == (boundary, boundary + 1)
    assert len(found.probes) <= 2 * (boundary.bit_length() + 1)
    assert len(set(found.probes)) == len(found.probes)  # no batch tried twice


def test_boundary_search_edges():
    nothing = search_boundary(lambda b: False)
    assert (nothing.largest_fitting, nothing.smallest_failing, nothing.probes) == (0, 1, [1])
    everything = search_boundary(lambda b: True, limit=100)
    assert (everything.largest_fitting, everything.smallest_failing) == (100, None)
    assert everything.probes == [1, 2, 4, 8, 16, 32, 64, 100]
    broken = search_boundary(lambda b: None if b == 8 else True)
    assert broken.largest_fitting == 4 and "batch 8" in broken.stopped_by


@pytest.mark.slow
def test_oom_boundary_command_against_a_fake_oom(tmp_path, monkeypatch):
    real = profiler.measure.runner.run_request

    def fits_up_to_three(lm, workload, point, *rest):
        if workload.batch_size > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(lm, workload, point, *rest)

    monkeypatch.setattr(profiler.measure.runner, "run_request", fits_up_to_three)
    monkeypatch.setattr("profiler.cli.boundary.require_gpu", lambda device: None)  # the OOMs are faked
    out = tmp_path / "b.jsonl"
    args = [
        "oom-boundary",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--method",
        "hired",
        "--budget",
        "0.2,0.4",
        "--new-tokens",
        "2",
        "--max-batch",
        "16",
        "--output",
        str(out),
    ]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    records = read_records(out)
    boundaries = [r for r in records if r.get("kind") == "oom_boundary"]
    assert [(b["config"]["method"], b["config"]["budget"]) for b in boundaries] == [
        ("none", 1.0),
        ("hired", 0.2),
        ("hired", 0.4),
    ]
    for b in boundaries:
        found = b["metrics"]["oom_boundary"]
        assert (found["largest_fitting"], found["smallest_failing"]) == (3, 4)
        assert found["probes"] == [1, 2, 4, 3]
    probes = [r for r in records if r.get("kind") is None]
    assert len(probes) == 12 and {r["status"] for r in probes} == {"ok", "oom"}


# --- memory model --------------------------------------------------------------------------------


def test_memory_model_against_hand_computed_kv_cache():
    shape = model_shape(PRESETS["llava-next-7b"].config())
    assert shape.parameters == 7_063_431_168  # LLaVA-Next-7B: Vicuna-7B + CLIP ViT-L/14-336 + projector
    # K and V of 32 layers x 32 heads x 128 dims in fp16: 2 * 32 * 32 * 128 * 2 bytes = 0.5 MiB per token
    assert shape.kv_bytes_per_token(2) == 524_288
    # batch 4 of 600x600 images: 18 text + 2928 visual tokens each, + 15 new tokens
    peak = predict_peak_gib(shape, "float16", [2946] * 4, 15, partitions=20)
    assert peak["kv_cache_gib"] == pytest.approx(4 * (2946 + 15) * 524_288 / GIB)
    assert peak["weights_gib"] == pytest.approx(7_063_431_168 * 2 / GIB)
    assert peak["peak_phase"] == "prefill"
    assert peak["peak_gib"] > peak["weights_gib"] + 4 * 2946 * 524_288 / GIB


def test_memory_model_phases_and_largest_batch():
    tiny = ModelShape(
        parameters=1000,
        layers=2,
        kv_heads=4,
        head_dim=16,
        hidden=64,
        intermediate=128,
        vocab=100,
        vision_tokens=577,
        vision_hidden=64,
        vision_intermediate=128,
        vision_layers=4,
        vision_heads=4,
    )
    assert tiny.kv_bytes_per_token(4) == 2 * 2 * 4 * 16 * 4
    long_decode = predict_peak_gib(tiny, "float32", [10], 100_000, partitions=1)
    assert long_decode["peak_phase"] == "decode"  # a long generation: the cache outgrows everything
    big_vision = predict_peak_gib(tiny, "float32", [10], 1, partitions=50)
    assert big_vision["peak_phase"] == "vision"

    def peak(b):
        return predict_peak_gib(tiny, "float32", [600] * b, 15, 5 * b)["peak_gib"]

    memory = peak(37) + 1e-9
    assert largest_batch(peak, memory) == 37


def test_released_stack_holds_two_caches_while_decoding_and_every_prompt_logit():
    """transformers 4.42 + the HiRED patch: the last decode step holds the old cache tuple (L + T - 2
    tokens) beside the rebuilt cache (L + T - 1), and prefill keeps logits of every prompt position
    in fp16 and float32; the modern stack keeps one cache and the last position's logits."""
    shape = model_shape(PRESETS["llava-next-7b"].config())
    kv = shape.kv_bytes_per_token(2)
    modern = predict_peak_gib(shape, "float16", [2898, 2898], 15, partitions=10)
    released = predict_peak_gib(shape, "float16", [2898, 2898], 15, partitions=10, stack="released")
    assert released["peak_phase"] == "decode"
    assert released["peak_gib"] == pytest.approx(released["weights_gib"] + 2 * (2911 + 2912) * kv / GIB)
    logits = released["prefill_activations_gib"] - modern["prefill_activations_gib"]
    assert logits == pytest.approx(2 * (2898 - 1) * shape.vocab * (2 + 4) / GIB)
    assert released["vision_gib"] > modern["vision_gib"]  # eager CLIP attention, every hidden state kept
    with pytest.raises(ValueError, match="unknown stack"):
        predict_peak_gib(shape, "float16", [10], 1, 1, stack="4.42")


def test_released_stack_explains_the_paper_table4():
    """Batch 1 of Table 4 is the released stack within 1%; full at batch 4 does not fit 24 GiB; batch 2
    and 4 are the released stack with the previous request's output still held (the release's script
    keeps it), within 2%, and without that held cache they read lower. The modern stack needs less."""
    from profiler.capacity.model import table4
    from workloads.models import model_config, prompt_text_tokens
    from workloads.point import Point

    point = Point("none", 1.0, model="llava-next-7b")
    text = prompt_text_tokens("llava-next-7b", point.prompt)
    rows = table4(model_config("llava-next-7b"), "float16", text, point, 24.0)
    assert len(rows) == 9
    for r in rows:
        assert r["modern_gib"] < r["released_gib"] < r["released_held_gib"]
        if r["paper_gib"] is None:  # full at batch 4: out of memory on the P40
            assert r["released_gib"] > 24.0
        elif r["batch"] == 1:
            assert r["released_gib"] == pytest.approx(r["paper_gib"], rel=0.01)
        else:
            assert r["released_held_gib"] == pytest.approx(r["paper_gib"], rel=0.02)
            assert r["released_gib"] < r["paper_gib"]


def test_predict_command(tmp_path):
    out = tmp_path / "p.jsonl"
    args = [
        "predict",
        "--gpu-memory",
        "24GiB",
        "--model",
        "tiny",
        "--dtype",
        "float32",
        "--method",
        "hired",
        "--budget",
        "0.2,adaptive",
        "--output",
        str(out),
    ]
    result = RUNNER.invoke(app, args)
    assert "needs a numeric budget" in result.stderr and result.exit_code == 2
    args[args.index("0.2,adaptive")] = "0.2"
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r["method"]) for r in rows] == [("prediction", "none"), ("prediction", "hired")]
    assert {r["stack"] for r in rows} == {"modern"} and "Table 4" not in result.stdout
    assert rows[1]["tokens_per_image"] == 576 and rows[0]["tokens_per_image"] == 2928
    assert rows[1]["largest_batch"] > rows[0]["largest_batch"] > 0
    bad = RUNNER.invoke(app, ["predict", "--gpu-memory", "lots"])
    assert bad.exit_code == 2 and "memory size must look like" in bad.stderr
    bad = RUNNER.invoke(app, ["predict", "--gpu-memory", "24GiB", "--stack", "4.42"])
    assert bad.exit_code == 2 and "unknown --stack '4.42'" in bad.stderr


def test_predict_reference_fidelity_shows_the_paper_table4():
    """--fidelity reference is predicted on the released stack (auto), with Table 4 beside it for the
    paper's model; --stack modern overrides."""
    args = ["predict", "--gpu-memory", "24GiB", "--overhead", "0", "--method", "hired", "--budget", "0.2"]
    result = RUNNER.invoke(app, [*args, "--fidelity", "reference"])
    assert result.exit_code == 0, result.stderr
    assert "released stack" in result.stdout and "HiRED paper's Table 4" in result.stdout
    assert "OOM (24.53)" in result.stdout  # full at batch 4, as the paper found
    modern = RUNNER.invoke(app, [*args, "--fidelity", "reference", "--stack", "modern"])
    assert modern.exit_code == 0 and "Table 4" not in modern.stdout and "modern stack" in modern.stdout


def test_oom_cleanup_check(tiny, monkeypatch):
    allocated = {"now": 10 * GIB}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    lm = SimpleNamespace(device=torch.device("cuda", 0), model=tiny.model)
    runner = Runner(lm, "r", {})
    assert runner.resident_gib == 10.0  # what the model alone holds
    allocated["now"] = 10.05 * GIB
    assert runner._release() == {"allocated_after_gib": 10.05, "resident_gib": 10.0, "clean": True}
    allocated["now"] = 10.5 * GIB  # something survived the clean-up
    assert runner._release()["clean"] is False


def test_unknown_model_is_refused_before_measuring(tmp_path):
    grid = write(tmp_path, SMALL.replace('["tiny"]', '["tiny", "no-such-llava"]'))
    result = RUNNER.invoke(app, ["sweep", str(grid), "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "grid.toml: models: unknown model 'no-such-llava'" in result.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_mixed_budgets_pair_each_method_only_with_budgets_it_defines(tmp_path):
    from workloads.plan import plan_points
    from workloads.point import Inputs, MethodEntry

    plan = plan_points([MethodEntry("all", (0.2, None))], models=["tiny"], inputs=[Inputs()], batch_sizes=[1])
    pairs = [(p.method, p.budget) for p in plan.points]
    assert pairs[0] == ("none", 1.0) and pairs.count(("none", 1.0)) == 1
    assert ("hired", 0.2) in pairs and ("hired", None) not in pairs  # HiRED has no adaptive count
    assert ("prumerge", 0.2) in pairs and ("prumerge", None) in pairs and ("prumerge+", None) in pairs
    out = tmp_path / "p.jsonl"
    args = [
        "predict",
        "--gpu-memory",
        "24GiB",
        "--model",
        "tiny",
        "--dtype",
        "float32",
        "--method",
        "all",
        "--budget",
        "0.2,adaptive",
        "--output",
        str(out),
    ]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["budget"]) for r in rows] == [
        (m, "adaptive" if b is None else b) for m, b in pairs
    ]
    assert all(r["largest_batch"] is None for r in rows if r["budget"] == "adaptive")  # weights decide those


def test_all_on_the_vllm_engine_passes_over_what_vllm_cannot_run(monkeypatch):
    import hired.vllm_plugin
    from workloads.plan import plan_points
    from workloads.point import Inputs, MethodEntry

    monkeypatch.setattr(hired.vllm_plugin, "vllm_missing", lambda: None)  # planning needs no engine
    plan = plan_points(
        [MethodEntry("all", (0.2, None))],
        models=["tiny"],
        inputs=[Inputs()],
        batch_sizes=[1],
        engines=("eager", "vllm"),
    )
    on = {e: {(p.method, p.budget) for p in plan.points if p.engine == e} for e in ("eager", "vllm")}
    assert {("fastv", 0.2), ("dart", 0.2), ("prumerge", None)} <= on["eager"]
    # LLM-stage methods and adaptive counts stay on eager; every vision-stage method at 20% and none run
    assert on["vllm"] == on["eager"] - {
        ("fastv", 0.2),
        ("dart", 0.2),
        ("prumerge", None),
        ("prumerge+", None),
    }
    assert ("none", 1.0) in on["vllm"] and ("resize", 0.2) in on["vllm"]
    # the baseline is planned per engine, and vLLM's points are a runner group of their own
    assert len({p.runner_group for p in plan.points}) == 2


def test_a_serving_table_makes_the_grid_a_serving_grid_on_vllm(tmp_path, monkeypatch):
    import hired.vllm_plugin

    monkeypatch.setattr(hired.vllm_plugin, "vllm_missing", lambda: None)
    text = "serving = { rates = [1, 4, inf], requests = 8, slo_ttft_ms = 500 }\n" + SMALL
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.serving == {
        "rates": (1.0, 4.0, float("inf")),
        "requests": 8,
        "concurrency": None,
        "slo_ttft_ms": 500,
    }
    assert {p.engine for p in sweep.points} == {"vllm"}
