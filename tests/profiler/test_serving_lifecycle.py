"""serve-bench's server lifecycle against a stand-in server (tests/support/fake_server.py): a record per
rate, a server that dies mid-rate leaves an error record with its log's last lines and the next point goes
on, a taken port is retried on another, an interrupt stops the server, and no process outlives the run.
vLLM's own server and client: tests/vllm/test_serving.py."""

import os
import socket
import sys
from pathlib import Path

import pytest

import profiler.serving.bench as bench
import profiler.serving.server as server_module
from profiler.results.schema import problem
from profiler.results.store import read_records
from profiler.serving.bench import Load, run_serving
from workloads.point import Point

FAKE = Path(__file__).parents[1] / "support" / "fake_server.py"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The stand-in server and client; returns the servers started (to look at afterwards) and the drive's
    script: {(method, rate): "die" | "interrupt"}."""
    import workloads.folder

    monkeypatch.setattr(workloads.folder, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(
        server_module,
        "serve_command",
        lambda folder, port, *a: [sys.executable, str(FAKE), "--port", str(port)],
    )
    monkeypatch.setattr(bench, "sample_requests", lambda pictures, prompt, lengths, new: list(lengths))
    monkeypatch.setattr(bench, "vllm_version", lambda: "test")
    started, script, current = [], {}, [None]
    real = server_module.running_server

    def running(*args, **kwargs):
        with real(*args, **kwargs) as server:
            started.append(server)
            yield server

    monkeypatch.setattr(bench, "running_server", server_module.contextmanager(running))

    def drive(server, model, tokenizer, requests, rate, seed, concurrency=None):
        what = script.get((current[0], rate))
        if what == "die":
            os.killpg(server.process.pid, 9)
            server.process.wait()
            raise ConnectionError("Server disconnected")
        if what == "interrupt":
            raise KeyboardInterrupt
        n = len(requests)
        return {
            "duration": 2.0,
            "errors": [""] * n,
            "ttfts": [0.1] * n,
            "latencies": [0.5] * n,
            "output_lens": [5] * n,
            "itls": [[0.1] * 4] * n,
            "input_lens": list(requests),
            "max_concurrent_requests": n,
        }

    real_prepare = bench.prepare

    def prepare(folder, point, load):
        current[0] = point.method
        return real_prepare(folder, point, load)

    monkeypatch.setattr(bench, "drive", drive)
    monkeypatch.setattr(bench, "prepare", prepare)
    return started, script


def serve(tmp_path, load, methods=("none", "hired")):
    from workloads.folder import model_folder

    folder = model_folder("tiny-vllm", "random")
    points = [
        (Point(m, 1.0 if m == "none" else 0.2, model="tiny-vllm", new_tokens=5), list(load.rates))
        for m in methods
    ]
    out = tmp_path / "serving.jsonl"
    records = list(run_serving(points, load, out, "run", folder, {}, "float32", "cpu", ready_timeout=60))
    return records, out


@pytest.mark.slow
def test_a_record_per_rate_a_dead_server_is_an_error_and_the_next_point_goes_on(fake, tmp_path):
    started, script = fake
    script[("none", float("inf"))] = "die"
    records, out = serve(tmp_path, Load((1.0, float("inf")), requests=3, slo_ttft_ms=150))
    assert read_records(out) == records  # every record written whole, as yielded
    assert [(r["config"]["method"], r["config"]["request_rate"], r["status"]) for r in records] == [
        ("none", 1.0, "ok"),
        ("none", "inf", "error"),
        ("hired", 1.0, "ok"),
        ("hired", "inf", "ok"),
    ]
    assert all(problem(r) is None and r["kind"] == "serving" for r in records)
    dead = records[1]["error"]
    assert "vllm serve died" in dead and "child" in dead  # the server log's last lines
    ok = records[2]["metrics"]
    assert ok["request_throughput_per_s"] == 3 / 2.0 and ok["goodput_requests_per_s"] == 3 / 2.0
    assert ok["kv_cache"]["num_blocks"] == 1000 and ok["kv_cache"]["block_size"] == 16
    assert ok["kv_cache"]["max_concurrency"] == 1000 / -(-ok["kv_cache"]["sequence_tokens"] // 16)
    assert ok["visual_tokens"]["kept"] == [576] * 3  # what the server's prompt lengths say
    assert len(started) == 2 and all(s.process.poll() is not None for s in started)
    children = [int(s.tail().split("child ")[1].split()[0]) for s in started]
    assert not any(alive(pid) for pid in children)  # the server's process group went with it
    assert not any(server_module.port_in_use(s.port) for s in started)


@pytest.mark.slow
def test_a_taken_port_is_retried_on_another_and_an_interrupt_stops_the_server(fake, tmp_path, monkeypatch):
    started, script = fake
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    real_free = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: ports.pop(0) if ports else real_free())
    script[("none", 2.0)] = "interrupt"
    with pytest.raises(KeyboardInterrupt):
        serve(tmp_path, Load((1.0, 2.0), requests=2), methods=("none",))
    taken_port = taken.getsockname()[1]
    taken.close()
    (server,) = started  # the first launch found its port taken and stopped; the second one served
    assert server.port != taken_port and server.process.poll() is not None
    assert not server_module.port_in_use(server.port)
    records = read_records(tmp_path / "serving.jsonl")
    assert [(r["config"]["request_rate"], r["status"]) for r in records] == [(1.0, "ok")]  # whole lines only


@pytest.mark.slow
def test_resume_skips_the_method_budget_and_rate_points_recorded(fake, tmp_path):
    from profiler.serving.bench import pending

    load = Load((1.0, 2.0), requests=2)
    records, out = serve(tmp_path, load, methods=("none",))
    point = Point("none", 1.0, model="tiny-vllm", new_tokens=5)
    assert len(records) == 2 and pending([point], load, out, resume=True) == []
    more = Load((1.0, 2.0, 8.0), requests=2)
    assert pending([point], more, out, resume=True) == [(point, [8.0])]  # only the new rate
    assert pending([point], load, out, resume=False) == [(point, [1.0, 2.0])]
    other = Load((1.0, 2.0), requests=3)  # another load is another point
    assert pending([point], other, out, resume=True) == [(point, [1.0, 2.0])]
