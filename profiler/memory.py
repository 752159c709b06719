"""Peak memory of a request: torch's allocator peaks, and NVML's device and per-process use.

Everything is reported in GiB (2**30 bytes). What cannot be measured here is None with a reason,
never 0: torch reports 0 on a CPU, and NVML is missing on machines without an NVIDIA driver.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import torch

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


def _import_pynvml():
    import pynvml

    return pynvml


class Nvml:
    """NVML's view of the GPU that torch uses, matched by UUID so CUDA_VISIBLE_DEVICES is respected."""

    def __init__(self, nvml, handle, pid: int):
        self.nvml = nvml
        self.handle = handle
        self.pid = pid

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
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception as exc:  # NVMLError subclasses, or a torch without device uuids
            return None, f"NVML unavailable: {exc}"
        return cls(nvml, handle, os.getpid()), None

    def device_used_bytes(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_used_bytes(self) -> int | None:
        """This process's GPU memory, None where NVML cannot see it (PID namespaces, missing accounting)."""
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == self.pid:
                used = proc.usedGpuMemory
                return None if used is None else int(used)
        return None


@dataclass
class MemoryPeaks:
    device_bytes: int | None = None
    process_bytes: int | None = None
    samples: int = 0


class MemorySampler:
    """Polls NVML at >= 200 Hz between begin() and end() and keeps the peaks."""

    def __init__(self, nvml: Nvml, interval_s: float = 0.002):
        self.nvml = nvml
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peaks = MemoryPeaks()

    def _sample(self) -> None:
        device = self.nvml.device_used_bytes()
        process = self.nvml.process_used_bytes()
        p = self.peaks
        p.device_bytes = device if p.device_bytes is None else max(p.device_bytes, device)
        if process is not None:
            p.process_bytes = process if p.process_bytes is None else max(p.process_bytes, process)
        p.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def begin(self) -> None:
        self.peaks = MemoryPeaks()
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def end(self) -> MemoryPeaks:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()  # the state at the end counts too
        return self.peaks
