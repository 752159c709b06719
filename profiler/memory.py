"""Peak memory of a request: torch's allocator peaks, and NVML's device and per-process use.

Everything is reported in GiB (2**30 bytes). What cannot be measured here is None with a reason,
never 0: torch reports 0 on a CPU, and NVML is missing on machines without an NVIDIA driver.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import torch

from profiler.processes import die_with_parent

GIB = 2**30


def gib(value: int | None) -> float | None:
    return None if value is None else value / GIB


def reset_torch_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def torch_peak_gib(device: torch.device) -> tuple[float | None, float | None]:
    """(max allocated, max reserved) since the last reset; (None, None) off CUDA."""
    if device.type != "cuda":
        return None, None
    return gib(torch.cuda.max_memory_allocated(device)), gib(torch.cuda.max_memory_reserved(device))


def reset_host_peak() -> bool:
    """Start a new peak-RSS window for this process (Linux resets VmHWM when 5 is written to clear_refs);
    False where it cannot, and then no host peak is reported (a lifetime peak would carry over points)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def host_peak_rss_gib() -> float | None:
    """This process's peak resident set size since the last reset_host_peak (VmHWM), in GiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        pass
    return None


HOST_PEAK_UNAVAILABLE = "this OS cannot reset a process's peak RSS (/proc/self/clear_refs)"


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
    """The NVML sampler (profiler.nvml_sampler) in its own process, started once and polled per request.

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
        from profiler.nvml_sampler import LineReader

        command = [
            sys.executable,
            "-m",
            "profiler.nvml_sampler",
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


def parse_gib(text: str) -> float:
    """'24GiB', '24GB', '24G', '800MiB' or a plain number of GiB -> GiB."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    units = {"": 1.0, "g": 1.0, "gib": 1.0, "gb": 1e9 / GIB, "mib": 1 / 1024, "m": 1 / 1024, "mb": 1e6 / GIB}
    if not match or match[2].lower() not in units:
        raise ValueError(f"memory size must look like 24GiB, 24GB or 800MiB, got {text!r}")
    return float(match[1]) * units[match[2].lower()]


def apply_memory_cap(device: torch.device, cap_gib: float) -> float:
    """Let PyTorch's allocator use at most cap_gib on `device`, as on a smaller card; returns the fraction.

    The cap binds PyTorch's caching allocator (weights, activations, KV cache); the CUDA context
    (about 0.5 GiB) is outside it, as it is outside a real card's free memory after start-up.
    """
    fraction = memory_cap_fraction(device, cap_gib)
    set_memory_fraction(device, fraction)
    return fraction


def set_memory_fraction(device: torch.device, fraction: float) -> None:
    """torch.cuda.set_per_process_memory_fraction for `device`; torch wants an index, not a bare "cuda"."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.set_per_process_memory_fraction(fraction, index)


def check_cap_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError("--memory-cap emulates a smaller GPU and needs a CUDA device")


def memory_cap_fraction(device: torch.device, cap_gib: float) -> float:
    """The share of this card a cap of cap_gib is; ValueError where a cap makes no sense."""
    check_cap_device(device)
    total_gib = torch.cuda.get_device_properties(device).total_memory / GIB
    if not 0 < cap_gib <= total_gib:
        raise ValueError(
            f"--memory-cap {cap_gib:.2f} GiB must be above 0 and at most this card's {total_gib:.2f} GiB"
        )
    return cap_gib / total_gib
