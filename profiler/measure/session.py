"""Everything a measurement needs, set up in the right order, and torn down: device, NVML idle
baseline, memory cap, model, NVML sampler process, and the runner that measures points."""

from __future__ import annotations

from profiler.instruments.hardware import fingerprint
from profiler.instruments.nvml import Nvml, NvmlUnavailable, SamplerProcess
from profiler.instruments.torch_memory import apply_memory_cap
from profiler.measure.runner import Runner
from profiler.results.schema import gib
from workloads.device import resolve_device
from workloads.errors import InputError
from workloads.models import load_model


def open_runner(
    *,
    model: str,
    weights: str,
    dtype: str,
    device: str,
    seed: int,
    run_id: str,
    memory_cap_gib: float | None = None,
    nvml_module: str = "pynvml",
) -> Runner:
    """A Runner with its model loaded; close it (runner.close()) to end the sampler process."""
    dev = resolve_device(device)
    nvml, reason, baseline = open_nvml(dev)
    if memory_cap_gib is not None:
        try:
            apply_memory_cap(dev, memory_cap_gib)  # before loading, so the weights count against it
        except ValueError as exc:
            raise InputError(str(exc)) from None
    lm = load_model(model, weights, dtype, device, seed)
    sampler, reason = open_sampler(nvml, reason, nvml_module)
    return Runner(
        lm,
        run_id,
        fingerprint(lm.device, nvml),
        sampler=sampler,
        nvml=nvml,
        nvml_reason=reason,
        baseline_device_gib=baseline,
        memory_cap_gib=memory_cap_gib,
    )


def open_nvml(device) -> tuple[Nvml | None, str | None, float | None]:
    """(NVML on the device, why not, the device's memory in use before anything of ours is on it)."""
    nvml, reason = Nvml.open(device)
    return nvml, reason, gib(nvml.device_used_bytes()) if nvml else None


def open_sampler(
    nvml: Nvml | None, reason: str | None, nvml_module: str
) -> tuple[SamplerProcess | None, str | None]:
    """The NVML sampler process (per-request memory and energy), or None and why not."""
    if nvml is None:
        return None, reason
    try:
        return SamplerProcess(nvml.uuid, nvml_module=nvml_module), reason
    except NvmlUnavailable as exc:
        return None, f"NVML sampler: {exc}"
