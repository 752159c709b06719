"""A stand-in for pynvml, loaded by the sampler process (`--nvml tests.support.fake_pynvml`) in tests.

Scripted by the FAKE_NVML environment variable (JSON): "used" (bytes, one per reading, the last
repeats), "processes" ([[pid, bytes], ...]; "$PID" for the measuring process), "energy_mj"
(counter start, or null: not supported), "energy_step_mj" (added per reading), "power_mw" (one per
power reading, the last repeats; absent: not supported), "init_error".
"""

import json
import os
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


_config = json.loads(os.environ.get("FAKE_NVML", "{}"))
_readings = 0


def nvmlInit():
    if _config.get("init_error"):
        raise NVMLError(_config["init_error"])


def nvmlDeviceGetHandleByUUID(uuid):
    return uuid


def nvmlDeviceGetMemoryInfo(handle):
    global _readings
    used = _config.get("used", [0])
    _readings += 1
    return SimpleNamespace(used=used[min(_readings - 1, len(used) - 1)], total=80 * 2**30)


def nvmlDeviceGetComputeRunningProcesses(handle):
    rows = _config.get("processes", [])
    return [
        SimpleNamespace(pid=int(os.environ["FAKE_NVML_PID"]) if p == "$PID" else p, usedGpuMemory=b)
        for p, b in rows
    ]


def nvmlDeviceGetTotalEnergyConsumption(handle):
    if _config.get("energy_mj") is None:
        raise NVMLError_NotSupported("Not Supported")
    return _config["energy_mj"] + _readings * _config.get("energy_step_mj", 0)


_power_readings = 0


def nvmlDeviceGetPowerUsage(handle):
    global _power_readings
    if "power_mw" not in _config:
        raise NVMLError_NotSupported("Not Supported")
    trace = _config["power_mw"]
    _power_readings += 1
    return trace[min(_power_readings - 1, len(trace) - 1)]
