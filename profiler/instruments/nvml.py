"""NVML: the GPU's device and per-process memory, energy and foreign processes, read in this process
(Nvml) and by a sampler process at >= 200 Hz (SamplerProcess, polled per request). What cannot be
read here is None with a reason, never 0: NVML is missing on machines without an NVIDIA driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from profiler.instruments.processes import die_with_parent


def _import_pynvml():
    import pynvml

    return pynvml


class Nvml:
    """NVML in this process, for the GPU torch uses (matched by UUID, so CUDA_VISIBLE_DEVICES is respected):
    the idle baseline, the driver version, and the UUID the sampler process opens."""

    def __init__(self, nvml, handle, uuid: str):
        self.nvml = nvml
        self.handle = handle
        self.uuid = uuid

    @classmethod
    def open(cls, device: torch.device, nvml=None) -> tuple[Nvml | None, str | None]:
        """(Nvml, None) when NVML works for this device, else (None, reason)."""
        if device.type != "cuda":
            return None, "no CUDA device in use"
        try:
            nvml = nvml or _import_pynvml()
        except ImportError:
            return None, "pynvml (nvidia-ml-py) is not installed"
        try:
            nvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception as exc:  # NVMLError subclasses, or a torch without device uuids
            return None, f"NVML unavailable: {exc}"
        return cls(nvml, handle, uuid), None

    def device_used_bytes(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)


@dataclass
class SamplerReading:
    """What the sampler process saw during one request."""

    device_bytes: int | None
    process_bytes: int | None
    pid_visible: bool
    samples: int
    seconds: float
    energy_mj: int | None  # the total-energy counter's difference
    power_energy_mj: float | None = None  # integrated power draw (GPUs without the counter)
    foreign: dict | None = None  # other processes on the card during the request: PID -> peak bytes

    @property
    def energy(self) -> tuple[float | None, str | None]:
        """(millijoules, how): the counter where the GPU has one, else the power integral."""
        if self.energy_mj is not None:
            return float(self.energy_mj), "counter"
        if self.power_energy_mj is not None:
            return self.power_energy_mj, "power_integral"
        return None, None

    @property
    def hz(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None


class NvmlUnavailable(RuntimeError):
    """NVML cannot be read here; the message says why."""


class SamplerProcess:
    """The NVML sampler (instruments.nvml_sampler) in its own process, started once and polled per request.

    begin() before a request, end() after it (also when it fails); close() always ends the process,
    and the process also ends by itself if this one dies (its input closes).
    """

    def __init__(
        self,
        uuid: str,
        interval_s: float = 0.002,
        nvml_module: str = "pynvml",
        timeout_s: float = 20.0,
        power_always: bool = False,
    ):
        from profiler.instruments.nvml_sampler import LineReader

        command = [
            sys.executable,
            "-m",
            "profiler.instruments.nvml_sampler",
            "--uuid",
            uuid,
            "--pid",
            str(os.getpid()),
            "--interval",
            str(interval_s),
            "--nvml",
            nvml_module,
        ] + (["--power-always"] if power_always else [])
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        self.reader = LineReader(self.proc.stdout.fileno())
        try:
            hello = self._reply(timeout_s)
        except NvmlUnavailable:
            self.close()
            raise
        if not hello.get("ready"):
            self.close()
            raise NvmlUnavailable(hello.get("error") or "the NVML sampler did not start")
        self.energy_supported = bool(hello.get("energy"))
        self.sampling = False

    def _send(self, command: str) -> None:
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()

    def _reply(self, timeout_s: float) -> dict:
        line = self.reader.readline(timeout_s)
        if line is None:
            raise NvmlUnavailable("the NVML sampler process stopped answering")
        return json.loads(line)

    def begin(self) -> None:
        self._send("start")
        self.sampling = True

    def end(self) -> SamplerReading:
        self._send("stop")
        self.sampling = False
        r = self._reply(10.0)
        return SamplerReading(
            r["device_peak_bytes"],
            r["process_peak_bytes"],
            r["pid_visible"],
            r["samples"],
            r["seconds"],
            r["energy_mj"],
            r.get("power_energy_mj"),
            r.get("foreign") or {},
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()

    def __enter__(self) -> SamplerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
