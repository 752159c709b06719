"""`hired-bench env`: the hardware fingerprint every record carries, and what can be measured here."""

from __future__ import annotations

import json

from profiler.cli import options
from profiler.cli.common import fail, out
from workloads.errors import InputError


def env(device: options.Device = "auto", as_json: options.Json = False) -> None:
    """The hardware and software fingerprint stored in every record, and what can be measured here."""
    from profiler.instruments.hardware import fingerprint, untested_versions
    from profiler.instruments.nvml import Nvml, NvmlUnavailable, SamplerProcess
    from workloads.device import resolve_device

    try:
        dev = resolve_device(device)
    except InputError as exc:
        raise fail(str(exc)) from None
    nvml, reason = Nvml.open(dev)
    info = fingerprint(dev, nvml)
    measurable = {
        "device": str(dev),
        "nvml": "ok" if nvml else reason,
        "energy_counter": None,
        "tested_versions": "; ".join(untested_versions()) or "torch and transformers inside the tested range",
    }
    if nvml is not None:
        try:
            with SamplerProcess(nvml.uuid) as sampler:
                measurable["energy_counter"] = (
                    "ok" if sampler.energy_supported else "not supported by this GPU"
                )
        except NvmlUnavailable as exc:
            measurable["nvml"] = f"sampler: {exc}"
    if as_json:
        print(json.dumps({"hardware": info, "measurable": measurable}))
        return
    from rich.table import Table

    table = Table(title="hired-bench env", show_header=False, title_justify="left")
    for key, value in {**info, **measurable}.items():
        table.add_row(key, "n/a" if value is None else str(value))
    out.print(table)
