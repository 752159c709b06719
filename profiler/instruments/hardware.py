"""The hardware and software fingerprint stored in every record (and shown by `hired-bench env`)."""

from __future__ import annotations

import os
import platform
from functools import cache

import torch
import transformers

from profiler.results.schema import GIB


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _driver(nvml) -> str | None:
    if nvml is None:
        return None
    try:
        version = nvml.nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None


@cache
def _host() -> dict:
    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


def fingerprint(device: torch.device, nvml=None) -> dict:
    """GPU (None on CPU), driver, CUDA, CPU, RAM and versions."""
    gpu_name = gpu_memory_gib = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu_name, gpu_memory_gib = props.name, round(props.total_memory / GIB, 2)
    return {
        "gpu_name": gpu_name,
        "gpu_memory_gib": gpu_memory_gib,
        "driver": _driver(nvml),
        "cuda": torch.version.cuda,
        **_host(),
    }


TESTED = ("torch", "transformers")  # the packages whose range make test proves (pyproject's pins)


def requirements() -> list[str]:
    """The suite's requirement lines: the installed package's metadata, or the checkout's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, requires

    from profiler.results.store import checkout_project

    try:
        return requires("hired-bench") or []
    except PackageNotFoundError:
        return checkout_project().get("dependencies") or []


def untested_versions() -> list[str]:
    """One line per installed torch/transformers outside the range the tests prove (empty: all inside)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion

    lines = []
    for line in requirements():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name not in TESTED or (req.marker and not req.marker.evaluate()):
            continue
        try:
            installed = version(req.name).split("+")[0]
            inside = req.specifier.contains(installed, prereleases=True)
        except (PackageNotFoundError, InvalidVersion):
            continue
        if not inside:
            lines.append(f"{req.name} {installed} is outside the tested range {req.specifier}")
    return lines
