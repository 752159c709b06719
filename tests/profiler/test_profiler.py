"""Profiler pieces: statistics, metric definitions, the timeline, NVML (against a fake), records."""

import json
import statistics
import time
from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from profiler.instruments.nvml import Nvml
from profiler.instruments.timing import StepClock, Timeline
from profiler.measure.metrics import request_metrics
from profiler.measure.stats import coefficient_of_variation, summarize
from profiler.results.schema import GIB
from profiler.results.store import append_record, make_record, read_records


def test_summarize_against_statistics_and_numpy():
    values = [0.31, 0.29, 0.35, 0.30, 0.50, 0.33]
    s = summarize(values)
    assert s["median"] == statistics.median(values)
    assert s["mean"] == pytest.approx(statistics.fmean(values))
    assert s["stdev"] == pytest.approx(statistics.stdev(values))
    assert s["p90"] == pytest.approx(float(np.percentile(values, 90)))
    assert (s["min"], s["max"], s["values"]) == (0.29, 0.50, values)
    assert coefficient_of_variation(s) == pytest.approx(statistics.stdev(values) / statistics.fmean(values))


def test_summarize_edge_cases():
    assert summarize([]) is None and summarize([None, None]) is None
    one = summarize([2.0])
    assert one["stdev"] is None and one["median"] == one["p90"] == 2.0
    assert coefficient_of_variation(one) is None


def test_request_metrics_follow_the_definitions():
    # B = 2 samples, T = 5 tokens; first token at 1.0 s, steps every 0.1 s, end at 1.45 s
    times = {
        "preprocess": 0.1,
        "vision": 0.4,
        "select": 0.45,
        "project": 0.5,
        "first_token": 1.0,
        "end": 1.45,
    }
    steps = [1.0, 1.1, 1.2, 1.3, 1.4]
    m = request_metrics(times, steps, batch_size=2, new_tokens=5, prompt_tokens=[600, 400])
    assert m["ttft_s"] == 1.0 and m["e2e_s"] == 1.45
    assert m["tpot_s"] == pytest.approx(0.45 / 4)
    assert m["decode_tokens_per_s"] == pytest.approx(2 * 4 / 0.45)
    assert m["e2e_tokens_per_s"] == pytest.approx(2 * 5 / 1.45)
    assert m["prefill_tokens_per_s"] == pytest.approx(1000 / 0.5)
    assert m["itl_s"] == pytest.approx([0.1] * 4)
    assert m["phases_s"] == pytest.approx(
        {"preprocess": 0.1, "vision": 0.3, "select": 0.05, "project": 0.05, "prefill": 0.5, "decode": 0.45}
    )
    assert sum(m["phases_s"].values()) == pytest.approx(m["e2e_s"])


def test_single_token_has_no_decode_metrics():
    times = {"preprocess": 0.1, "vision": 0.2, "select": 0.2, "project": 0.3, "first_token": 0.5, "end": 0.5}
    m = request_metrics(times, [0.5], batch_size=1, new_tokens=1, prompt_tokens=[10])
    assert m["tpot_s"] is None and m["decode_tokens_per_s"] is None and m["itl_s"] == []


def test_cpu_timeline_and_step_clock():
    tl = Timeline(torch.device("cpu"))
    tl.start()
    time.sleep(0.01)
    tl.mark("preprocess")
    clock = StepClock(tl)
    scores = torch.randn(2, 7)
    for _ in range(4):
        time.sleep(0.002)
        assert clock(torch.zeros(2, 1, dtype=torch.long), scores) is scores  # changes nothing
    tl.mark_host("end")
    named, steps = tl.times()
    assert len(steps) == 4  # one per call
    assert 0.01 <= named["preprocess"] < named["first_token"] == steps[0] < steps[-1] < named["end"]
    assert all(b - a >= 0.002 for a, b in pairwise(steps))


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """The slice of pynvml this process uses (UUID lookup, baseline reading)."""

    NVMLError = FakeNVMLError

    def __init__(self, used=(1, 2, 3), init_error=None):
        self.used = list(used)
        self.init_error = init_error
        self.calls = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("handle", uuid)

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.calls += 1
        value = self.used[min(self.calls - 1, len(self.used) - 1)]
        return SimpleNamespace(used=value, total=80 * GIB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [
            SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in (self.processes() if self.processes else [])
        ]


def test_nvml_open_off_cuda_and_when_library_missing(monkeypatch):
    nvml, reason = Nvml.open(torch.device("cpu"), FakeNvml())
    assert nvml is None and "no CUDA device" in reason
    # a CUDA device whose NVML library is missing: the reason is NVML's message
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="abc"))
    nvml, reason = Nvml.open(
        torch.device("cuda"), FakeNvml(init_error=FakeNVMLError("NVML Shared Library Not Found"))
    )
    assert nvml is None and "NVML Shared Library Not Found" in reason


def test_nvml_matches_the_torch_device_by_uuid(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=f"uuid-of-{i}"))
    nvml, reason = Nvml.open(torch.device("cuda:1"), FakeNvml())
    assert reason is None and nvml.handle == ("handle", "GPU-uuid-of-1") and nvml.uuid == "GPU-uuid-of-1"
    assert nvml.device_used_bytes() == 1


def test_records_append_flush_and_survive_a_half_written_line(tmp_path):
    path = tmp_path / "r.jsonl"
    first = make_record("run1", "ok", {"method": "none"}, {}, {"x": 1})
    append_record(path, first)
    append_record(path, make_record("run1", "error", {"method": "hired"}, {}, None, error="E: boom"))
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "run_id": "run1", "sta')  # a run killed mid-write
    records = read_records(path)
    assert [r["status"] for r in records] == ["ok", "error"]
    assert records[0] == json.loads(json.dumps(first))
    with pytest.raises(AssertionError):
        make_record("run1", "fine", {}, {}, None)


class FakeEvent:
    """torch.cuda.Event stand-in: takes the host time when recorded."""

    def __init__(self, enable_timing=False):
        self.ns = None

    def record(self, stream=None):
        self.ns = time.perf_counter_ns()

    def elapsed_time(self, end):
        return (end.ns - self.ns) / 1e6  # milliseconds, as CUDA reports


def test_cuda_timeline_synchronises_only_for_the_first_token_and_the_end(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    tl = Timeline(torch.device("cuda", 0))
    tl.start()
    for phase in ("preprocess", "vision", "select", "project"):
        time.sleep(0.001)
        tl.mark(phase)
    assert syncs == []  # phase boundaries are events: no waiting for the GPU
    for _ in range(6):
        time.sleep(0.001)
        tl.step()
    assert len(syncs) == 1  # the first token, which TTFT defines as on the host
    tl.mark_host("end")
    named, steps = tl.times()
    assert len(syncs) == 2 and len(steps) == 6
    order = [named[k] for k in ("preprocess", "vision", "select", "project", "first_token", "end")]
    assert order == sorted(order) and named["first_token"] == steps[0] and steps == sorted(steps)
    assert all(isinstance(ev, FakeEvent) for ev in tl._events.values())


def test_torch_peaks_in_gib(monkeypatch):
    from profiler.instruments.torch_memory import torch_peak_gib

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 7 * GIB // 2)
    assert torch_peak_gib(torch.device("cuda", 0)) == (3.0, 3.5)
    assert torch_peak_gib(torch.device("cpu")) == (None, None)


def test_suite_version_from_a_checkout(monkeypatch):
    """Run from a checkout without an install (the GPU study), records still say which version."""
    import re
    from importlib.metadata import PackageNotFoundError
    from pathlib import Path

    import profiler.results.store as records

    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(records, "version", missing)
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "(.+)"', text, re.MULTILINE)[1]
    assert records.suite_version() == f"{declared}+checkout"


def test_overhead_pairs_rounds_and_alternates_which_path_runs_first(monkeypatch):
    """Ratios are per-round suite / bare rates (median); each path's timed request follows an untimed
    one of its own, and which path runs first alternates."""
    import profiler.bench.overhead as bench

    monkeypatch.setattr(bench.BareRequest, "of", classmethod(lambda cls, lm, workload: None))
    monkeypatch.setattr(bench, "hook_cost_us", lambda device: 1.0)
    calls = []

    def fake(path, wall, decode):
        def timed(lm, workload, *rest):
            calls.append((path, workload.new_tokens))
            return wall, decode

        return timed

    # the suite decodes at half the bare rate and takes 1.25 times as long end to end
    monkeypatch.setattr(bench, "suite_seconds", fake("suite", 1.25, 0.2))
    monkeypatch.setattr(bench, "bare_seconds", fake("bare", 1.0, 0.1))
    lm = type("LM", (), {"device": "cpu"})()
    found = bench.measure_overhead(lm, 2, 6, rounds=3, warmup=0)
    assert found.rounds == 3 and found.bare_tokens_per_s == 2 * 5 / 0.1
    assert found.ratio == pytest.approx(0.5) and found.request_ratio == pytest.approx(0.8)
    assert calls == [  # (path, new tokens): settle with one token, then the timed T tokens
        *[("bare", 1), ("bare", 6), ("suite", 1), ("suite", 6)],
        *[("suite", 1), ("suite", 6), ("bare", 1), ("bare", 6)],
        *[("bare", 1), ("bare", 6), ("suite", 1), ("suite", 6)],
    ]
    with pytest.raises(ValueError, match="at least 2 new tokens"):
        bench.measure_overhead(lm, 1, 1, rounds=1)


@pytest.mark.slow
def test_overhead_runs_the_suite_request_against_a_bare_generate(tiny):
    """Both paths run for real on the same pictures and prompt, and the bare one is plain transformers:
    its input_ids hold as many image placeholders as the suite's stock path gives the model."""
    import profiler.bench.overhead as bench
    from workloads.images import synthetic_images
    from workloads.plan import Workload

    workload = Workload(synthetic_images([(600, 600)], 2), "What is shown in this image?", 3)
    request = bench.BareRequest.of(tiny, workload)
    placeholders = (request.input_ids == tiny.model.config.image_token_id).sum(dim=1)
    assert placeholders.tolist() == [2928, 2928]  # 600x600 on LLaVA-Next's 2x2 grid, newlines included
    wall, decode = bench.bare_seconds(tiny, workload, request)
    assert wall > decode > 0
    found = bench.measure_overhead(tiny, 2, 3, rounds=1, warmup=0)
    assert found.rounds == 1 and found.profiled_tokens_per_s > 0 and found.request_ratio > 0


@pytest.mark.slow
def test_bench_select_runs_every_point_on_its_synthetic_batch():
    """The GPU study's selection benchmark: every method and fidelity it times selects on its 7B-shaped
    synthetic batch (a change to what VisionBatch holds must reach it too)."""
    import profiler.bench.select as bench
    from hired.methods import METHODS, VisionShape, method_params

    cpu = torch.device("cpu")
    batch, base_only = (bench.synthetic_batch(1, cpu, torch.float32, base_only=b) for b in (False, True))
    shape = VisionShape(depth=bench.DEPTH, feature_layer=bench.FEATURE_LAYER, llm_depth=32)
    for label, name, budget, fidelity in bench.POINTS:
        method = METHODS[name]
        (selection,) = method.select(
            base_only if name == "resize" else batch, budget, fidelity, method_params(method, shape)
        )
        assert 0 < selection.tokens.shape[0] <= 2880 + 48, label
