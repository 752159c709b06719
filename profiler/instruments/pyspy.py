"""A py-spy flamegraph of this process's host side (py-spy samples it from outside, without pausing it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from profiler.instruments.nvml_sampler import LineReader
from profiler.instruments.processes import die_with_parent

PTRACE_HINT = (
    "py-spy needs ptrace permission: run as root, or allow it (sudo sysctl kernel.yama.ptrace_scope=0; "
    "in Docker: --cap-add SYS_PTRACE)"
)


class PySpyError(RuntimeError):
    """py-spy could not start or attach; the message says why and what to do."""


def start_py_spy(out: Path, rate_hz: int = 100) -> subprocess.Popen:
    """Attach py-spy to this process, recording a flamegraph SVG to `out` until stop_py_spy()."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise PySpyError("py-spy is not installed (pip install py-spy)")
    command = [
        exe,
        "record",
        "--pid",
        str(os.getpid()),
        "--output",
        str(out),
        "--rate",
        str(rate_hz),
        "--nonblocking",
        "--format",
        "flamegraph",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    reader = LineReader(proc.stdout.fileno())
    said = []
    while (line := reader.readline(10.0)) is not None:  # it says "Sampling process ..." once attached
        said.append(line)
        if "Sampling process" in line:
            return proc
    proc.kill()
    proc.wait()
    message = " ".join(said).replace("py-spy> ", "").strip() or "no answer"
    hint = f" ({PTRACE_HINT})" if "ermission" in message or "ptrace" in message.lower() else ""
    raise PySpyError(f"py-spy could not attach to this process: {message}{hint}")


def stop_py_spy(proc: subprocess.Popen) -> None:
    """Stop sampling; py-spy writes the flamegraph as it exits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
