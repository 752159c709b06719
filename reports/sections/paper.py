"""Our numbers beside the HiRED paper's Table 4, where the workload matches it."""

from __future__ import annotations

from profiler.results.views import fmt, median
from reports.data import Results, image_label, machine, peak_memory
from reports.document import Section, Table
from reports.sections.common import is_baseline
from workloads.paper import PAPER_MODELS, PAPER_TABLE4

COLUMNS = [
    "batch",
    "setting",
    "ours e2e tok/s",
    "paper tok/s",
    "ours TTFT s",
    "paper TTFT s",
    "ours peak GiB",
    "paper peak GB",
]


def matches(record: dict, where: str, batch: int, setting) -> bool:
    """Whether a point is the paper's workload at `batch` and `setting` ("full", or HiRED's budget)."""
    c = record["config"]
    return (
        machine(record) == where
        and c["model"] in PAPER_MODELS
        and c["new_tokens"] == 15
        and image_label(c) == "600x600"
        and c["batch_size"] == batch
        and (
            (setting == "full" and is_baseline(record)) or (c["method"] == "hired" and c["budget"] == setting)
        )
    )


def paper_section(results: Results) -> Section | None:
    """Our numbers beside the HiRED paper's Table 4, where the workload matches it."""
    tables = []
    for where in sorted({machine(r) for r in results.points}):
        rows = []
        for batch, settings in PAPER_TABLE4.items():
            for setting, paper in settings.items():
                for r in [p for p in results.points if matches(p, where, batch, setting)]:
                    ok = r["status"] == "ok"
                    label = "full" if setting == "full" else f"HiRED {setting:.0%}"
                    rows.append(
                        [
                            str(batch),
                            f"{label} ({r['config']['fidelity']}, {r['config']['weights']})",
                            fmt(median(r, "e2e_tokens_per_s")) if ok else r["status"].upper(),
                            "OOM" if paper is None else f"{paper[0]:.2f}",
                            fmt(median(r, "ttft_s")) if ok else "–",
                            "–" if paper is None else f"{paper[1]:.2f}",
                            fmt(peak_memory(r)[0]) if ok else "–",
                            "–" if paper is None else f"{paper[2]:.2f}",
                        ]
                    )
        if rows:
            tables.append(Table(COLUMNS, rows, f"measured on {where}"))
    if not tables:
        return None
    return Section(
        "Beside the HiRED paper (Table 4)",
        [
            "The paper measured LLaVA-Next-7B on a 24 GB Tesla P40 with its own code (end-to-end "
            "throughput over 15 new tokens, TTFT, torch max_memory_allocated). Random weights change no "
            "timing or memory, but a P40 is not this GPU: compare the ratios between settings, not the "
            "absolute numbers.",
            *tables,
        ],
    )
