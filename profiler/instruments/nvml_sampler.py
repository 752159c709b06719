"""The NVML sampler: a process of its own that polls one GPU between `start` and `stop`.

Apart from the measured process, its polling never competes with the measured Python thread for
the GIL. It reads the device's used memory, this PID's used memory, the total-energy counter (or,
where a GPU has none, the power draw, integrated by the trapezoid rule) and which other processes
use the card.

    python -m profiler.instruments.nvml_sampler --uuid GPU-... --pid 1234 [--interval 0.002] [--nvml pynvml]
        [--power-always]

Protocol, one line each way: the process says {"ready": ...} once; then `start` begins sampling,
`stop` ends it and is answered with one JSON object of peaks; `quit` or end of input ends the
process (so it never outlives the process that started it). No torch import: it starts in ~0.1 s.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import sys
import time
from itertools import pairwise


class LineReader:
    """Lines from a raw file descriptor, with a timeout (select on the fd, no Python-side buffering)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def readline(self, timeout: float | None) -> str | None:
        """The next line without its newline; None on timeout or end of input (then .eof is True)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                self.eof = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()


def energy_mj(nvml, handle) -> int | None:
    """Total energy since the driver loaded, in millijoules; None where the GPU has no counter."""
    try:
        return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except Exception:  # NVMLError_NotSupported on older GPUs, or a binding without the call
        return None


def power_mw(nvml, handle) -> int | None:
    """The board's power draw in milliwatts; None where NVML cannot read it."""
    try:
        return int(nvml.nvmlDeviceGetPowerUsage(handle))
    except Exception:
        return None


def processes(nvml, handle, pid: int) -> tuple[int | None, bool, dict[int, int]]:
    """(this PID's used bytes or None, whether the PID is visible to NVML, other PIDs' used bytes)."""
    mine, visible, others = None, False, {}
    for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
        used = None if proc.usedGpuMemory is None else int(proc.usedGpuMemory)
        if proc.pid == pid:
            mine, visible = used, True
        else:
            others[int(proc.pid)] = used or 0
    return mine, visible, others


def trapezoid_mj(samples: list[tuple[float, int]]) -> float | None:
    """Energy in millijoules from (seconds, milliwatts) samples, by the trapezoid rule."""
    if len(samples) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in pairwise(samples))


def sample(
    nvml, handle, pid: int, interval: float, commands: LineReader, power_always: bool = False
) -> tuple[dict, str | None]:
    """Poll until a command (or end of input) arrives; return the peaks and that command.
    power_always: integrate the power draw even where the energy counter exists (to compare the two)."""
    device_peak, process_peak, pid_seen, samples, foreign, power = 0, None, False, 0, {}, []
    start_energy, start = energy_mj(nvml, handle), time.perf_counter()
    while True:
        device_peak = max(device_peak, int(nvml.nvmlDeviceGetMemoryInfo(handle).used))
        used, visible, others = processes(nvml, handle, pid)
        pid_seen |= visible
        if used is not None:
            process_peak = used if process_peak is None else max(process_peak, used)
        for other, used_bytes in others.items():
            foreign[other] = max(foreign.get(other, 0), used_bytes)
        if (start_energy is None or power_always) and (draw := power_mw(nvml, handle)) is not None:
            power.append((time.perf_counter() - start, draw))  # no energy counter: integrate power
        samples += 1
        command = commands.readline(interval)
        if command is not None or commands.eof:
            break
    seconds = time.perf_counter() - start
    end_energy = energy_mj(nvml, handle)
    energy = None if start_energy is None or end_energy is None else end_energy - start_energy
    return {
        "device_peak_bytes": device_peak,
        "process_peak_bytes": process_peak,
        "pid_visible": pid_seen,
        "samples": samples,
        "seconds": seconds,
        "energy_mj": energy,
        "power_energy_mj": trapezoid_mj(power),
        "foreign": {str(k): v for k, v in foreign.items()},
    }, command


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the measuring process's; it closes our input
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uuid", required=True, help="NVML UUID of the GPU (GPU-...)")
    parser.add_argument("--pid", type=int, required=True, help="the measured process")
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between samples")
    parser.add_argument("--nvml", default="pynvml", help="module with the pynvml API (tests pass a fake)")
    parser.add_argument(
        "--power-always", action="store_true", help="integrate power even where the energy counter exists"
    )
    args = parser.parse_args(argv)
    try:
        nvml = importlib.import_module(args.nvml)
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByUUID(args.uuid)
    except Exception as exc:  # missing library or driver, unknown device
        reply({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    reply({"ready": True, "energy": energy_mj(nvml, handle) is not None})
    commands = LineReader(sys.stdin.fileno())
    while True:
        command = commands.readline(None)
        if command is None or command == "quit":
            return 0
        if command == "start":
            result, ended_by = sample(nvml, handle, args.pid, args.interval, commands, args.power_always)
            reply(result)
            if commands.eof or ended_by == "quit":
                return 0
        else:
            reply({"error": f"unknown command {command!r}"})


if __name__ == "__main__":
    sys.exit(main())
