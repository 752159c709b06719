"""The report's first section: per workload and budget, the method with the best TTFT speed-up."""

from __future__ import annotations

import statistics
from collections import defaultdict

from profiler.results.views import baselines, method_label
from reports import figures
from reports.data import workload_title
from reports.document import Section, Table
from reports.sections.common import is_baseline, ratios
from workloads.point import budget_label


def headline_table(rows: list[dict]) -> Table | None:
    """Per budget, the method with the best median TTFT speed-up over the batch sizes measured."""
    labels, baseline_of = figures.param_labels(rows), baselines(rows)
    by_budget: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        budget = r["config"]["budget"]
        if is_baseline(r) or r["status"] != "ok":
            continue
        by_budget[budget][method_label(r, labels[id(r)])].append((r, ratios(r, baseline_of(r))))
    table = Table(
        ["budget", "best method", "TTFT speed-up", "e2e tok/s × base", "memory saved", "batch sizes"],
        [],
        "the best method at each budget, by its median TTFT speed-up over the batch sizes "
        "(each against the baseline of its own run)",
    )
    for budget in sorted(by_budget, key=lambda b: (isinstance(b, str), 0 if isinstance(b, str) else b)):

        def score(item):
            speedups = [x[1][0] for x in item[1] if x[1][0] is not None]
            return statistics.median(speedups) if speedups else -1.0

        name, measured = max(by_budget[budget].items(), key=score)
        if score((name, measured)) < 0:
            continue
        columns = list(zip(*(x[1] for x in measured), strict=True))
        cells = [
            "n/a" if not (v := [x for x in col if x is not None]) else spec.format(statistics.median(v))
            for col, spec in zip(columns, ("{:.2f}×", "{:.2f}×", "{:.0%}"), strict=True)
        ]
        batches = ", ".join(str(b) for b in sorted({x[0]["config"]["batch_size"] for x in measured}))
        table.rows.append([budget_label(budget), name, *cells, batches])
    return table if table.rows else None


def headlines_section(workloads: list[tuple[tuple, list[dict]]]) -> Section | None:
    """One headline table per workload (numbered as the workload sections are); None when none has one."""
    headlines = Section("Headlines", [])
    for i, (key, rows) in enumerate(workloads, 1):
        if (table := headline_table(rows)) is not None:
            table.caption = f"Workload {i}: {workload_title(key)} · " + table.caption
            headlines.parts.append(table)
    return headlines if headlines.parts else None
