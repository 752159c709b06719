"""serve-bench with vLLM's own server and benchmark client (the CPU build) on the tiny-vllm preset: whole
records, the kept-token count the server reports, no server left behind, and Ctrl-C mid-rate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import need_extra

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ARGS = ["serve-bench", "--device", "cpu", "--method", "hired", "--budget", "0.2", "--new-tokens", "4"]


def servers() -> list[int]:
    """PIDs of vLLM servers started by serve-bench still running on this machine."""
    from profiler.serving.server import SERVE

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and SERVE.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_two_rates_for_none_and_hired_write_whole_records_and_leave_no_server(tmp_path, monkeypatch):
    need_extra("vllm")
    from typer.testing import CliRunner

    import profiler.serving.server as server_module
    from hired.methods import budget_tokens
    from profiler.results.schema import problem
    from reports.cli import app

    ports = []
    real = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: ports.append(real()) or ports[-1])
    out = tmp_path / "serving.jsonl"
    args = [*ARGS, "--rate", "4,inf", "--requests", "6", "--slo-ttft-ms", "2000", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [
        (r["kind"], r["config"]["method"], r["config"]["request_rate"], r["status"]) for r in records
    ] == [
        ("serving", "none", 4.0, "ok"),
        ("serving", "none", "inf", "ok"),
        ("serving", "hired", 4.0, "ok"),
        ("serving", "hired", "inf", "ok"),
    ], [r["error"] for r in records]
    for r in records:
        m = r["metrics"]
        assert problem(r) is None and m["completed_requests"] == 6 and m["failed_requests"] == 0
        assert m["output_tokens"]["median"] == 4 and m["ttft_s"]["p99"] >= m["ttft_s"]["median"] > 0
        assert m["kv_cache"]["max_concurrency"] > 0 and m["server_start_s"] > 0
    hired = records[2]["metrics"]["visual_tokens"]
    assert hired["kept"] == [budget_tokens(0.2, n) for n in hired["full"]]  # as the server counted them
    assert records[0]["metrics"]["visual_tokens"]["kept"] == [2928] * 6  # stock: newlines included
    assert len(ports) == 2 and servers() == []
    assert not any(server_module.port_in_use(port) for port in ports)
    assert "hired" in result.output and "TTFT p99" in result.output


def test_ctrl_c_mid_rate_exits_130_and_stops_the_server(tmp_path):
    need_extra("vllm")
    out = tmp_path / "serving.jsonl"
    command = [
        sys.executable,
        "-m",
        "reports",
        *ARGS,
        "--rate",
        "0.5",
        "--requests",
        "40",
        "--output",
        str(out),
    ]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines = []
    deadline = time.monotonic() + 300
    for line in process.stderr:
        lines.append(line)
        if "requests, 0.5 req/s" in line or time.monotonic() > deadline:
            break
    time.sleep(3)  # mid-rate: requests in flight
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    said = "".join(lines) + rest
    assert process.returncode == 130, said[-2000:]
    assert "interrupted: no point recorded" in said
    assert servers() == []
