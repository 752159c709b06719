"""Out-of-memory boundaries: the largest batch that fits per method and budget, searched or read off a
sweep's first OOM, beside the memory model's predictions."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from profiler.results.views import fmt
from reports import figures
from reports.data import Results, machine
from reports.document import Section, Table
from workloads.point import budget_label


def boundary_rows(results: Results) -> dict[str, list[dict]]:
    """Per machine (and cap): the largest batch that fits per method x budget, measured and predicted."""
    rows: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for record in results.boundaries:
        c, found = record["config"], record["metrics"]["oom_boundary"]
        rows[machine(record)][(c["method"], str(c["budget"]))] = {
            "method": c["method"],
            "budget": c["budget"],
            "largest": found["largest_fitting"],
            "failing": found["smallest_failing"],
            "predicted": found.get("predicted_largest"),
            "source": "search",
        }
    # points of a sweep that ran out of memory bound the batch too: largest ok below the first OOM
    by_point: dict[tuple, list[dict]] = defaultdict(list)
    for record in results.points:
        c = record["config"]
        if not c.get("boundary_search"):
            by_point[(machine(record), c["method"], str(c["budget"]))].append(record)
    for (where, method, budget), recs in by_point.items():
        ooms = [r["config"]["batch_size"] for r in recs if r["status"] == "oom"]
        if not ooms or (method, budget) in rows[where]:
            continue
        first = min(ooms)
        fits = [
            r["config"]["batch_size"]
            for r in recs
            if r["status"] == "ok" and r["config"]["batch_size"] < first
        ]
        rows[where][(method, budget)] = {
            "method": method,
            "budget": recs[0]["config"]["budget"],
            "largest": max(fits, default=0),
            "failing": first,
            "predicted": None,
            "source": "sweep",
        }
    return {
        where: sorted(found.values(), key=lambda r: (str(r["budget"]), r["method"]))
        for where, found in rows.items()
        if found
    }


def boundary_section(results: Results, folder: Path) -> Section | None:
    found = boundary_rows(results)
    if not found and not results.predictions:
        return None
    section = Section(
        "Out-of-memory boundaries",
        [
            "The largest batch that fits, per method and budget: from `hired-bench oom-boundary` searches, "
            "or the largest batch below the first out-of-memory point of a sweep (hatched bars). Diamonds: "
            "the memory model's prediction for the same memory.",
        ],
    )
    for i, (where, rows) in enumerate(found.items(), 1):
        fig = figures.boundaries(rows, f"largest batch that fits · {where}")
        section.parts.append(
            figures.save(fig, folder, f"oom-boundary-{i}", f"largest batch that fits on {where}")
        )
        section.parts.append(
            Table(
                ["method", "budget", "largest batch that fits", "first that fails", "predicted", "from"],
                [
                    [
                        r["method"],
                        budget_label(r["budget"]),
                        str(r["largest"]),
                        "none up to the limit" if r["failing"] is None else str(r["failing"]),
                        fmt(r["predicted"], "d"),
                        r["source"],
                    ]
                    for r in rows
                ],
            )
        )
    if results.predictions:
        section.parts.append(predictions_table(results.predictions))
    return section


def predictions_table(predictions: list[dict]) -> Table:
    """The memory model's answers (hired-bench predict) as they were recorded."""
    columns = [
        "model",
        "method",
        "budget",
        "memory GiB",
        "tokens/image",
        "peak GiB at batch 1",
        "largest batch",
    ]
    rows = [
        [
            p["model"],
            p["method"],
            str(p["budget_label"]),
            f"{p['memory_gib']:.1f}",
            str(p["tokens_per_image"] or "adaptive"),
            fmt((p["peak_gib_by_batch"] or {}).get("1")),
            fmt(p["largest_batch"], "d"),
        ]
        for p in predictions
    ]
    return Table(columns, rows, "memory-model predictions (hired-bench predict)")
