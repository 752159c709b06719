"""Measurements on CPU: the NVML sampler process against a fake binding (tests/support/fake_pynvml.py),
the runner wired to it, phase bookkeeping, py-spy and torch traces, the memory cap and `env`."""

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from profiler.cli import app
from profiler.instruments.nvml import NvmlUnavailable, SamplerProcess
from profiler.instruments.torch_memory import apply_memory_cap
from profiler.measure.request import run_request
from profiler.measure.runner import Runner, variance_warnings
from profiler.measure.settings import MeasureSettings
from profiler.results.schema import GIB, parse_gib
from workloads.images import synthetic_images
from workloads.plan import Workload
from workloads.point import Point

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()


def test_sampler_reads_peaks_pid_memory_and_energy(fake_nvml):
    module = fake_nvml(
        used=[5 * GIB, 9 * GIB, 7 * GIB],
        processes=[[1, 100], ["$PID", 3 * GIB]],
        energy_mj=1_000_000,
        energy_step_mj=5,
    )
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        assert sampler.energy_supported
        sampler.begin()
        time.sleep(0.2)
        reading = sampler.end()
    assert reading.device_bytes == 9 * GIB and reading.process_bytes == 3 * GIB and reading.pid_visible
    assert reading.hz >= 200  # the sampler's own rate, well above the 200 Hz floor
    assert reading.energy_mj == 5 * reading.samples  # counter difference between start and stop


def test_sampler_when_the_pid_is_not_visible_and_energy_unsupported(fake_nvml):
    module = fake_nvml(used=[2 * GIB], processes=[[1, 100]], energy_mj=None)
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        assert not sampler.energy_supported
        sampler.begin()
        reading = sampler.end()
    assert reading.device_bytes == 2 * GIB
    assert reading.process_bytes is None and not reading.pid_visible and reading.energy_mj is None


def test_sampler_missing_library_or_driver(fake_nvml):
    fake_nvml()
    with pytest.raises(NvmlUnavailable, match="ModuleNotFoundError"):
        SamplerProcess("GPU-fake", nvml_module="no_such_nvml_binding")
    module = fake_nvml(init_error="NVML Shared Library Not Found")
    with pytest.raises(NvmlUnavailable, match="NVML Shared Library Not Found"):
        SamplerProcess("GPU-fake", nvml_module=module)


def test_sampler_process_always_ends(fake_nvml):
    module = fake_nvml(used=[GIB])
    with pytest.raises(RuntimeError), SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        sampler.begin()  # a request fails while sampling
        raise RuntimeError("request failed")
    assert sampler.proc.poll() is not None  # ended by the context manager
    orphan = SamplerProcess("GPU-fake", nvml_module=module)
    orphan.begin()
    orphan.proc.stdin.close()  # what happens when the measuring process dies mid-sampling
    assert orphan.proc.wait(timeout=10) == 0  # it notices the closed input and ends by itself


def workload(new_tokens=4, batch=2):
    return Workload(synthetic_images([(600, 600)], batch, seed=1), "What is shown in this image?", new_tokens)


def test_runner_records_sampler_figures(tiny, fake_nvml):
    module = fake_nvml(used=[10 * GIB, 12 * GIB], processes=[[1, 5]], energy_mj=0, energy_step_mj=20)
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        runner = Runner(tiny, "r", {}, sampler=sampler, baseline_device_gib=4.0)
        record = runner.measure(
            workload(),
            Point("hired", 0.2, {"alpha": 0.5, "l_init": 0, "l_final": 2}),
            MeasureSettings(warmup=0, repeats=2),
        )
    m = record["metrics"]
    assert record["status"] == "ok"
    assert m["peak_memory_gib"]["nvml_device"] == 12.0
    assert m["peak_memory_gib"]["nvml_process"] == 8.0  # PID hidden: device peak minus the idle baseline
    assert "peak_memory_gib.nvml_process" in m["estimated"]
    energy = m["energy_j"]
    assert energy["per_request"]["median"] > 0
    assert energy["per_token"]["values"] == pytest.approx([j / 8 for j in energy["per_request"]["values"]])
    assert m["nvml_sample_hz"]["median"] >= 200
    assert "energy_j" not in m["unavailable"]


def test_runner_without_nvml_says_why(tiny):
    runner = Runner(tiny, "r", {}, nvml_reason="no CUDA device in use")
    m = runner.measure(workload(), Point("none", 1.0), MeasureSettings(warmup=0, repeats=1))["metrics"]
    assert m["energy_j"] == {"per_request": None, "per_token": None}
    assert m["unavailable"]["energy_j"] == "no CUDA device in use"
    assert m["peak_memory_gib"]["nvml_device"] is None


def test_phases_add_up_and_every_step_is_seen(tiny):
    runner = Runner(tiny, "r", {})
    m = runner.measure(
        workload(new_tokens=6),
        Point("hired", 0.3, {"alpha": 0.5, "l_init": 0, "l_final": 2}),
        MeasureSettings(warmup=1, repeats=3),
    )["metrics"]
    for i, e2e in enumerate(m["e2e_s"]["values"]):
        total = sum(stats["values"][i] for stats in m["phases_s"].values())
        assert total == pytest.approx(e2e, rel=0.02)
    assert len(m["itl_s"]["values"]) == 3 * (6 - 1)  # one gap per decode step, per request
    result = run_request(tiny, workload(new_tokens=6), Point("none", 1.0))
    assert len(result.steps) == 6 and result.tokens.shape == (2, 6)


def test_variance_warning():
    assert variance_warnings({"ttft_s": {"mean": 1.0, "stdev": 0.1}})[0].startswith("TTFT varies 10.0%")
    assert variance_warnings({"ttft_s": {"mean": 1.0, "stdev": 0.01}}) == []
    assert variance_warnings({"ttft_s": {"mean": 1.0, "stdev": None}}) == []


FAST = [
    "run",
    "--model",
    "tiny",
    "--device",
    "cpu",
    "--warmup",
    "0",
    "--repeats",
    "1",
    "--new-tokens",
    "3",
    "--batch",
    "1",
]


def test_py_spy_flamegraph(tmp_path):
    svg = tmp_path / "host.svg"
    result = RUNNER.invoke(app, [*FAST, "--output", str(tmp_path / "r.jsonl"), "--py-spy", str(svg)])
    if result.exit_code == 2 and "ptrace" in result.stderr:
        pytest.skip(f"the kernel refuses ptrace here: {result.stderr.strip()}")
    assert result.exit_code == 0, result.stderr
    text = svg.read_text()
    assert text.startswith("<?xml") and "run_request" in text  # our host-side frames are in it


def test_torch_trace_per_point(tmp_path):
    trace = tmp_path / "trace.json"
    result = RUNNER.invoke(app, [*FAST, "--output", str(tmp_path / "r.jsonl"), "--torch-trace", str(trace)])
    assert result.exit_code == 0, result.stderr
    for method in ("none", "hired"):
        events = json.loads((tmp_path / f"trace.{method}.json").read_text())["traceEvents"]
        assert any(e.get("name") == "aten::linear" for e in events)


@pytest.mark.parametrize(
    ("text", "gib"), [("24GiB", 24.0), ("24", 24.0), ("24G", 24.0), ("24GB", 24e9 / GIB), ("512MiB", 0.5)]
)
def test_parse_gib(text, gib):
    assert parse_gib(text) == pytest.approx(gib)


def test_memory_cap_fraction_and_refusals(monkeypatch):
    calls = []

    def set_fraction(fraction, device):  # as torch 2.11-2.13 do: a device needs its index
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError(
                f"Expected a torch.device with a specified index or an integer, but got:{device}"
            )
        calls.append((fraction, device))

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * GIB))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_fraction)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    # "cuda" without an index is what --device auto resolves to: the study's first GPU run failed there
    assert apply_memory_cap(torch.device("cuda"), 24.0) == pytest.approx(0.3)
    assert apply_memory_cap(torch.device("cuda", 0), 24.0) == pytest.approx(0.3)
    assert calls == [(pytest.approx(0.3), 0), (pytest.approx(0.3), 0)]
    cuda = torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"at most this card's 80\.00 GiB"):
        apply_memory_cap(cuda, 100.0)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        apply_memory_cap(torch.device("cpu"), 24.0)


@pytest.mark.parametrize(
    ("cap", "message"),
    [("24GiB", "needs a CUDA device"), ("lots", "--memory-cap: memory size must look like")],
)
def test_memory_cap_cli_errors(tmp_path, cap, message):
    result = RUNNER.invoke(app, [*FAST, "--output", str(tmp_path / "r.jsonl"), "--memory-cap", cap])
    assert result.exit_code == 2 and message in result.stderr


def test_env_reports_the_record_fingerprint():
    result = RUNNER.invoke(app, ["env", "--json", "--device", "cpu"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"gpu_name", "driver", "cuda", "cpu", "ram_gib", "torch", "transformers", "python"} <= set(
        data["hardware"]
    )
    assert (
        data["hardware"]["torch"] == torch.__version__
        and data["measurable"]["nvml"] == "no CUDA device in use"
    )
    table = RUNNER.invoke(app, ["env", "--device", "cpu"])
    assert table.exit_code == 0 and "transformers" in table.stdout


def test_py_spy_without_permission_is_one_clear_line(tmp_path, monkeypatch):
    fake = tmp_path / "py-spy"
    refusal = "Permission Denied: Try running again with elevated permissions"
    fake.write_text(f"#!/bin/sh\necho '{refusal}'\nexit 1\n")
    fake.chmod(0o755)
    import profiler.instruments.pyspy

    monkeypatch.setattr(profiler.instruments.pyspy.shutil, "which", lambda name: str(fake))
    out = tmp_path / "r.jsonl"
    result = RUNNER.invoke(app, [*FAST, "--output", str(out), "--py-spy", str(tmp_path / "host.svg")])
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "py-spy could not attach" in line and "Permission Denied" in line and "ptrace permission" in line
    assert not out.exists() or out.read_text() == ""  # nothing measured, nothing written


def test_host_peak_rss_is_a_window_that_resets():
    from profiler.instruments.torch_memory import host_peak_rss_gib, reset_host_peak

    assert reset_host_peak()  # Linux
    before = host_peak_rss_gib()
    block = bytearray(300 * 2**20)  # touched: resident
    block[::4096] = b"x" * len(block[::4096])
    grown = host_peak_rss_gib()
    del block
    assert grown - before > 0.25
    assert (
        reset_host_peak() and host_peak_rss_gib() < grown - 0.25
    )  # the freed block is out of the new window


@pytest.mark.slow
def test_versions_outside_the_tested_range_are_said(monkeypatch, tmp_path):
    import transformers

    import profiler.instruments.hardware

    inside = ["torch>=1", f"transformers>={transformers.__version__}", "numpy<1"]  # numpy: not one we check
    monkeypatch.setattr(profiler.instruments.hardware, "requirements", lambda: inside)
    assert profiler.instruments.hardware.untested_versions() == []
    outside = ["torch>=1", "transformers>=4,<5", "nonsense ==="]
    monkeypatch.setattr(profiler.instruments.hardware, "requirements", lambda: outside)
    found = profiler.instruments.hardware.untested_versions()
    assert found == [f"transformers {transformers.__version__} is outside the tested range <5,>=4"]
    env = json.loads(RUNNER.invoke(app, ["env", "--json", "--device", "cpu"]).stdout)
    assert env["measurable"]["tested_versions"].startswith("transformers ")
    result = RUNNER.invoke(app, [*FAST, "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("outside the tested range") == 1  # once per command, not per point


def test_a_tested_range_comes_from_the_install_or_the_checkout():
    from profiler.instruments.hardware import requirements

    names = [line.split("<")[0].split(">")[0].split("=")[0].strip() for line in requirements()]
    assert "torch" in names and "transformers" in names
