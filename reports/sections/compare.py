"""The same workloads on several machines: ratio tables and grouped bars, keyed by GPU (and cap)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from profiler.results.views import fmt, median, ratio_text
from reports import figures
from reports.data import Results, machine, method_rank, workload, workload_title
from reports.document import Section, Table
from reports.sections.serving import serving_compare
from workloads.point import budget_label


def point_id(record: dict) -> tuple:
    c = record["config"]
    return (c["method"], budget_label(c["budget"]), c["batch_size"])


def compare_section(results: Results, folder: Path, title: str = "Hardware comparison") -> Section | None:
    """The same workloads on several machines: ratio tables and grouped bars, keyed by GPU (and cap).
    A machine with no point measured (every one failed) has nothing to compare."""
    machines = sorted({machine(r) for r in [*results.points, *results.serving] if r["status"] == "ok"})
    if len(machines) < 2:
        return None
    shared: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results.points:
        if machine(r) in machines:
            shared[workload(r)[:-1]][machine(r)].append(r)
    section = Section(title, [f"Machines: {', '.join(machines)}. Ratios are against {machines[0]}."])
    for i, (key, groups) in enumerate(sorted(shared.items(), key=lambda kv: str(kv[0])), 1):
        if len(groups) < 2:
            continue
        names = sorted(groups)
        rows = []
        points = sorted(
            {point_id(r) for recs in groups.values() for r in recs},
            key=lambda t: (t[2], method_rank(t[0]), t[1]),
        )
        for method, budget, batch in points:
            cells, first = [method, budget, str(batch)], None
            for j, name in enumerate(names):
                r = next((x for x in groups[name] if point_id(x) == (method, budget, batch)), None)
                e2e = median(r, "e2e_tokens_per_s") if r and r["status"] == "ok" else None
                ttft = median(r, "ttft_s") if r and r["status"] == "ok" else None
                status = "missing" if r is None else (r["status"].upper() if r["status"] != "ok" else None)
                cells += [status or fmt(e2e), status or fmt(ttft)]
                if j == 0:
                    first = e2e
                else:
                    cells.append(ratio_text(e2e, first))
            rows.append(cells)
        columns = ["method", "budget", "batch"]
        for j, name in enumerate(names):
            columns += [f"{name}: e2e tok/s", f"{name}: TTFT s"] + (
                [] if j == 0 else [f"{name}: e2e × first"]
            )
        label = workload_title((*key, "several machines"))
        section.parts.append(Table(columns, rows, label))
        for metric in ("e2e_tokens_per_s", "ttft_s"):
            fig = figures.compare(
                dict(sorted(groups.items())), metric, f"{figures.METRICS[metric]} by machine"
            )
            section.parts.append(
                figures.save(
                    fig,
                    folder,
                    f"compare-{i}-{metric}",
                    f"{figures.METRICS[metric]} on each machine · {label}",
                )
            )
    section.parts += serving_compare(results)
    return section if len(section.parts) > 1 else None
