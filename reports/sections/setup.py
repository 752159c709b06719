"""What was read and where it was measured: files, points by status, weights, suite versions, hardware
fingerprints, skipped lines, energy methods, superseded records, warnings and what was not measured."""

from __future__ import annotations

from collections import Counter

from profiler.results.schema import HARDWARE
from profiler.results.views import fmt
from reports.data import Results, machine
from reports.document import Section, Table
from workloads.point import budget_label


def setup_section(results: Results) -> Section:
    machines: dict[str, dict] = {}
    for r in [*results.points, *results.serving]:
        machines.setdefault(machine(r), r.get("hardware") or {})
    keys = [k for k in HARDWARE if k not in ("gpu_name", "cpu_count")]  # the machine column names the GPU
    hardware = Table(
        ["machine", *keys],
        [
            [
                name,
                *(
                    fmt(hw.get(k), "")
                    if isinstance(hw.get(k), float)
                    else str(hw.get(k) if hw.get(k) is not None else "n/a")
                    for k in keys
                ),
            ]
            for name, hw in machines.items()
        ],
        "hardware fingerprints",
    )
    statuses = Counter(r["status"] for r in results.points)
    weights = Counter(r["config"].get("weights") for r in [*results.points, *results.serving])
    parts = [
        f"Files read: {', '.join(str(f) for f in results.files)}.",
        f"Points: {len(results.points)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
        f"OOM-boundary searches: {len(results.boundaries)}; predictions: {len(results.predictions)}; "
        f"accuracy records: {len(results.accuracy)}; instrument checks: {len(results.checks)}; "
        f"serving records (one per rate): {len(results.serving)}.",
        "Weights: "
        + ", ".join(f"{w} ({n} records)" for w, n in weights.items())
        + (". Random weights: timing and memory are real, outputs are not." if "random" in weights else "."),
        "Suite versions: " + ", ".join(f"{v} ({n})" for v, n in sorted(results.suite_versions.items())) + ".",
        hardware,
    ]
    if results.skipped:
        parts.append(
            Table(
                ["file", "lines skipped", "why"],
                [[f, str(n), why] for (f, why), n in sorted(results.skipped.items())],
                f"{results.skipped_lines} line(s) not used: not records this suite can read",
            )
        )
    methods = Counter((r.get("metrics") or {}).get("energy_method") for r in results.points)
    methods.pop(None, None)
    if methods:
        said = {"counter": "NVML's total-energy counter", "power_integral": "NVML power draw, integrated"}
        parts.append(
            "Energy: "
            + ", ".join(f"{said.get(m, m)} ({n} points)" for m, n in methods.most_common())
            + " (the power integral, for GPUs without the counter, is coarser: it samples every few ms)."
        )
    if results.duplicates:
        parts.append(f"{results.duplicates} identical record(s) read more than once were counted once.")
    if results.superseded:
        parts.append(
            f"{results.superseded} older record(s) of points measured again on the same machine were "
            "superseded: each point is reported from its newest record."
        )
    warnings = [
        f"{machine(r)}: {r['config']['method']} {budget_label(r['config']['budget'])}, "
        f"batch {r['config']['batch_size']}: {w}"
        for r in results.points
        for w in (r.get("metrics") or {}).get("warnings") or []
    ]
    if warnings:
        parts.append(Table(["high run-to-run variance"], [[w] for w in warnings]))
    unavailable = Counter(
        f"{k}: {v}"
        for r in results.points
        for k, v in ((r.get("metrics") or {}).get("unavailable") or {}).items()
    )
    if unavailable:
        parts.append(
            Table(
                ["not measured here (null in the records)", "points"],
                [[k, str(n)] for k, n in unavailable.most_common()],
            )
        )
    return Section("Setup", parts)
