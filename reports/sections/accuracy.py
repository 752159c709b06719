"""Task accuracy (lmms-eval) beside the efficiency numbers: accuracy against the budget per method."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from profiler.results.views import MEANINGLESS, fmt, method_label
from reports import figures
from reports.data import Results, machine, method_key
from reports.document import Section, Table
from workloads.point import budget_label


def accuracy_group(record: dict) -> tuple:
    """What accuracy rows are compared within: model, weights, fidelity, questions asked, machine."""
    c = record["config"]
    return (c["model"], c["weights"], c.get("fidelity"), c.get("limit"), machine(record))


def accuracy_section(results: Results, folder: Path) -> Section | None:
    """lmms-eval task metrics beside the efficiency numbers: accuracy against the budget per method."""
    if not results.accuracy:
        return None
    latest: dict[tuple, dict] = {}  # the same evaluation run twice: its latest record
    for r in results.accuracy:
        if r["status"] == "ok":
            c, m = r["config"], r["metrics"]
            key = (*accuracy_group(r), m["task"], m["metric"], c["method"], str(c["budget"]))
            latest[(*key, str(c.get("method_params")))] = r
    ok = list(latest.values())
    section = Section(
        "Task accuracy (lmms-eval)",
        ["Task metrics from `hired-bench eval`: the same selection code answering the task's questions."],
    )
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ok:
        groups[accuracy_group(r)].append(r)
    for i, ((model, weights, fidelity, limit, where), rows) in enumerate(sorted(groups.items(), key=str), 1):
        meaningless = weights == "random"
        label = (
            f"{model} ({weights} weights, {fidelity} fidelity) · "
            + (f"first {limit} questions per task" if limit else "every question")
            + f" · {where}"
        )
        if meaningless:
            section.parts.append(f"Values greyed: {MEANINGLESS}.")
        rows = sorted(rows, key=lambda r: (r["metrics"]["task"], r["metrics"]["metric"], method_key(r)))
        section.parts.append(
            Table(
                [
                    "task",
                    "metric",
                    "method",
                    "budget",
                    "value",
                    "± stderr",
                    "questions",
                    "visual tokens kept",
                ],
                [
                    [
                        r["metrics"]["task"],
                        r["metrics"]["metric"],
                        method_label(r),
                        budget_label(r["config"]["budget"]),
                        f"{r['metrics']['value']:.3f}",
                        fmt(r["metrics"].get("stderr"), ".3f"),
                        str(r["metrics"].get("samples") or "n/a"),
                        fmt(r["metrics"].get("achieved_budget"), ".0%"),
                    ]
                    for r in rows
                ],
                label,
                muted=("value", "± stderr") if meaningless else (),
            )
        )
        fig = figures.accuracy_by_budget(rows, f"task accuracy against the budget · {model}", meaningless)
        section.parts.append(
            figures.save(
                fig,
                folder,
                f"accuracy-{i}",
                "task metric against the share of visual tokens kept (achieved), per method; dashed: all "
                "tokens" + (f"; {MEANINGLESS}" if meaningless else ""),
            )
        )
    failed_runs = [r for r in results.accuracy if r["status"] != "ok"]
    if failed_runs:
        section.parts.append(
            Table(
                ["model", "method", "budget", "tasks", "error"],
                [
                    [
                        r["config"]["model"],
                        r["config"]["method"],
                        budget_label(r["config"]["budget"]),
                        ", ".join(r["config"].get("tasks") or []),
                        r.get("error") or "",
                    ]
                    for r in failed_runs
                ],
                "evaluations that failed",
            )
        )
    return section
