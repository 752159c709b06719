"""Peak memory of a request in torch's allocator (and the host's peak RSS on a CPU), and the memory cap
that emulates a smaller GPU.

Everything is reported in GiB (2**30 bytes). What cannot be measured here is None with a reason,
never 0: torch reports 0 on a CPU, and NVML is missing on machines without an NVIDIA driver.
"""

from __future__ import annotations

import torch

from profiler.results.schema import GIB, gib


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
