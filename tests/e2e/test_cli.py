"""`hired-bench run` end to end through Typer's runner (tiny preset, CPU), and every bad input."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import profiler.measure.runner
from hired.methods import METHODS
from profiler.cli import app

RUNNER = CliRunner()
FAST = ["--model", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--new-tokens", "3"]
MIXED = ["--image-size", "600x600", "--image-size", "1000x300", "--image-size", "336x1008"]
# N_full and stock visual tokens per image size, derived by hand in test_layout_and_text.py
N_FULL = {(600, 600): 2880, (1000, 300): 2160, (336, 1008): 2304}
STOCK = {(600, 600): 2928, (1000, 300): 2182, (336, 1008): 2376}
TOP_KEYS = {
    "schema_version",
    "run_id",
    "created_at",
    "suite_version",
    "status",
    "error",
    "config",
    "outputs",
    "hardware",
    "metrics",
}
CONFIG_KEYS = {
    "model",
    "weights",
    "dtype",
    "device",
    "method",
    "budget",
    "fidelity",
    "method_params",
    "batch_size",
    "image_sizes",
    "prompt_tokens",
    "new_tokens",
    "warmup",
    "repeats",
    "memory_cap_gib",
    "seed",
}
HARDWARE_KEYS = {
    "gpu_name",
    "gpu_memory_gib",
    "driver",
    "cuda",
    "cpu",
    "ram_gib",
    "torch",
    "transformers",
    "python",
    "platform",
}
STATS = {"median", "mean", "stdev", "min", "max", "p90", "p99", "values"}


def invoke(*args):
    return RUNNER.invoke(app, ["run", *args])


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("budget", [0.1, 0.2, 0.37])
def test_run_writes_records_with_exact_budgets(tmp_path, budget):
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, *MIXED, "--batch", "3", "--budget", str(budget), "--output", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    records = lines(out)
    assert [json.loads(line) for line in result.stdout.splitlines()] == records  # --json prints the records
    assert [r["config"]["method"] for r in records] == ["none", "hired"]
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        assert set(r) == TOP_KEYS and r["status"] == "ok" and r["error"] is None
        assert set(r["config"]) >= CONFIG_KEYS and set(r["hardware"]) >= HARDWARE_KEYS
        m = r["metrics"]
        for name in (
            "ttft_s",
            "tpot_s",
            "e2e_s",
            "decode_tokens_per_s",
            "e2e_tokens_per_s",
            "prefill_tokens_per_s",
            "itl_s",
        ):
            assert set(m[name]) == STATS and m[name]["median"] > 0
        assert set(m["phases_s"]) == {"preprocess", "vision", "select", "project", "prefill", "decode"}
        assert set(m["peak_memory_gib"]) == {
            "torch_allocated",
            "torch_reserved",
            "nvml_device",
            "nvml_process",
            "baseline_device",
            "host_rss",
        }
        assert m["peak_memory_gib"]["torch_allocated"] is None  # CPU: not measured, never a made-up 0
        # the host peak over the measured requests: at least the tiny model's weights, below this host
        assert (
            0.05 < m["peak_memory_gib"]["host_rss"] < 24
            and "peak_memory_gib.host_rss" not in m["unavailable"]
        )
        assert "peak_memory_gib.torch_allocated" in m["unavailable"]
        assert set(m["energy_j"]) == {"per_request", "per_token"}
        sizes = [tuple(s) for s in r["config"]["image_sizes"]]
        assert sizes == list(N_FULL)
        assert m["visual_tokens"]["full"] == [N_FULL[s] for s in sizes]
    base, hired = (r["metrics"]["visual_tokens"] for r in records)
    assert base["kept"] == [STOCK[s] for s in N_FULL]
    assert hired["kept"] == [math.floor(budget * N_FULL[s] + 0.5) for s in N_FULL]
    assert hired["achieved_budget"] == pytest.approx([budget] * 3, abs=1e-3)
    prompt_text = 18  # the 19-token default prompt minus its <image> token
    assert records[1]["config"]["prompt_tokens"] == [prompt_text + k for k in hired["kept"]]


@pytest.mark.slow
def test_run_prints_table_with_ratios_and_appends(tmp_path):
    out = tmp_path / "r.jsonl"
    for _ in range(2):
        result = invoke(*FAST, "--batch", "2", "--output", str(out))
        assert result.exit_code == 0, result.stderr
    assert "none (baseline)" in result.stdout and "hired" in result.stdout and "1.00×" in result.stdout
    assert "576/2880 (20%)" in result.stdout
    assert "random weights" in result.stderr and "tiny" in result.stderr
    assert len(lines(out)) == 4  # the second run appended


@pytest.mark.slow
def test_save_outputs_keeps_token_ids(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, "--batch", "2", "--output", str(out), "--save-outputs")
    assert result.exit_code == 0, result.stderr
    for r in lines(out):
        assert len(r["outputs"]) == 2 and all(len(ids) == 3 for ids in r["outputs"])
        assert all(isinstance(t, int) for ids in r["outputs"] for t in ids)
    result = invoke(*FAST, "--batch", "1", "--output", str(out))
    assert lines(out)[-1]["outputs"] is None


def test_failed_point_is_recorded_and_the_rest_goes_on(tmp_path, monkeypatch):
    real = profiler.measure.runner.run_request

    def broken_for_hired(lm, workload, point, *rest):
        if point.method == "hired":
            raise RuntimeError("boom in select")
        return real(lm, workload, point, *rest)

    monkeypatch.setattr(profiler.measure.runner, "run_request", broken_for_hired)
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, "--batch", "1", "--output", str(out))
    assert result.exit_code == 1
    base, hired = lines(out)
    assert base["status"] == "ok" and hired["status"] == "error"
    assert hired["error"] == "RuntimeError: boom in select" and hired["metrics"] is None
    assert "ERROR" in result.stdout


def test_out_of_memory_is_status_oom(tmp_path, monkeypatch):
    real = profiler.measure.runner.run_request

    def oom_for_baseline(lm, workload, point, *rest):
        if point.method == "none":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(lm, workload, point, *rest)

    monkeypatch.setattr(profiler.measure.runner, "run_request", oom_for_baseline)
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, "--batch", "1", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    base, hired = lines(out)
    assert base["status"] == "oom" and "out of memory" in base["error"]
    assert "peak_memory_gib" in base["metrics"]
    assert hired["status"] == "ok"


def bad_image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"this is not a png")
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "0"], "--budget must be in (0, 1]"),
        (["--budget", "1.5"], "--budget must be in (0, 1]"),
        (["--budget", "-0.2"], "--budget must be in (0, 1]"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--new-tokens", "0"], "--new-tokens must be at least 1"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--weights", "pretrained"], "no local weights for tiny"),
        (["--weights", "sometimes"], "unknown --weights"),
        (["--images", "/nonexistent/folder"], "image folder not found"),
        (["--image-size", "600by600"], "image size must look like WIDTHxHEIGHT"),
        (["--param", "l_final=99"], "l_final must be a vision layer"),
        (["--param", "alpha=2"], "alpha must be in [0, 1]"),
        (["--dtype", "int3"], "unknown dtype"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "r.jsonl"
    result = invoke("--model", "tiny", "--device", "cpu", "--output", str(out), *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines_err = result.stderr.strip().splitlines()
    assert len(lines_err) == 1 and lines_err[0].startswith("error:") and message in lines_err[0], lines_err
    assert not out.exists() or out.read_text() == ""  # the results file is never damaged


def test_unreadable_image(tmp_path):
    result = invoke(
        "--model", "tiny", "--images", str(bad_image_dir(tmp_path)), "--output", str(tmp_path / "r")
    )
    assert result.exit_code == 2 and "cannot read image" in result.stderr and "broken.png" in result.stderr


def test_non_writable_output(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("--model", "tiny", "--output", str(blocker / "r.jsonl"))
    assert result.exit_code == 2 and "cannot write results" in result.stderr
    assert blocker.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu(tmp_path):
    result = invoke("--device", "cuda", "--output", str(tmp_path / "r"))
    assert result.exit_code == 2 and "no CUDA GPU" in result.stderr


def test_unparseable_number_is_a_usage_error_not_a_traceback(tmp_path):
    result = invoke("--budget", "lots", "--output", str(tmp_path / "r"))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_help_explains_every_option_with_units():
    result = RUNNER.invoke(app, ["run", "--help"])
    text = " ".join(result.stdout.split())
    for option in (
        "--budget",
        "--batch",
        "--new-tokens",
        "--warmup",
        "--repeats",
        "--image-size",
        "--images",
        "--weights",
        "--dtype",
        "--device",
        "--output",
        "--json",
        "--save-outputs",
        "--param",
    ):
        assert option in text
    assert "in (0, 1]" in text and "WIDTHxHEIGHT in pixels" in text and "[default: 0.2]" in text


def test_method_parameters_belong_to_the_method(tmp_path):
    result = invoke(
        "--model", "tiny", "--method", "none", "--param", "alpha=0.3", "--output", str(tmp_path / "r")
    )
    assert result.exit_code == 2 and "none takes no such parameter" in result.stderr


def test_prumerge_plus_failure_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    """No outliers anywhere (r = 0): PruMerge+ adaptive fails as the released code would; PruMerge and
    the baseline are still measured."""
    import hired.methods.prumerge

    monkeypatch.setattr(hired.methods.prumerge, "outlier_counts", lambda attention, valid: valid.sum(1) * 0)
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, "--method", "all", "--budget", "adaptive", "--batch", "1", "--output", str(out))
    assert result.exit_code == 1  # a point failed
    records = {r["config"]["method"]: r for r in lines(out)}
    assert set(records) == {"none", "prumerge", "prumerge+"}
    assert records["prumerge+"]["status"] == "error" and "r = 0" in records["prumerge+"]["error"]
    assert records["prumerge"]["status"] == records["none"]["status"] == "ok"
    assert records["prumerge"]["config"]["budget"] == "adaptive"
    assert records["prumerge"]["metrics"]["visual_tokens"]["kept"] == [5]  # one summary per partition


@pytest.mark.slow
def test_method_all_measures_every_method_once(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke(*FAST, "--method", "all", "--budget", "0.2", "--batch", "1", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    methods = [r["config"]["method"] for r in lines(out)]
    assert methods == list(METHODS)  # every registered method once, the baseline first
    for r in lines(out)[1:5]:
        assert r["metrics"]["visual_tokens"]["kept"] == [576]
