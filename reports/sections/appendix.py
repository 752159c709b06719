"""Every point in one table, failed ones with their error: nothing is dropped silently."""

from __future__ import annotations

from profiler.results.views import fmt, median
from reports.data import Results, image_label, machine, method_key, peak_memory, workload
from reports.document import Section, Table
from workloads.point import budget_label


def failed(record: dict) -> str:
    return f"{record['status'].upper()}: {record.get('error') or ''}".strip()


def appendix_section(results: Results) -> Section:
    if not results.points:  # a serving-only report: its records are all in their sections' tables
        return Section("Every point", ["No point records: every serving record is in its section's table."])
    rows = []
    for r in sorted(results.points, key=lambda r: (workload(r), r["config"]["batch_size"], method_key(r))):
        c, ok = r["config"], r["status"] == "ok"
        rows.append(
            [
                c["model"],
                machine(r),
                c["method"],
                budget_label(c["budget"]),
                str(c["batch_size"]),
                image_label(c),
                str(c["new_tokens"]),
                r["status"] if ok else failed(r),
                fmt(median(r, "ttft_s")),
                fmt(median(r, "e2e_tokens_per_s")),
                fmt(peak_memory(r)[0]),
            ]
        )
    return Section(
        "Every point",
        [
            Table(
                [
                    "model",
                    "machine",
                    "method",
                    "budget",
                    "batch",
                    "images",
                    "new tokens",
                    "status",
                    "TTFT s",
                    "e2e tok/s",
                    "peak GiB",
                ],
                rows,
            )
        ],
    )
