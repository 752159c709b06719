"""A workload's table: each method against the baseline of its own run at the same batch size."""

from __future__ import annotations

from profiler.results.views import agreement_text, baselines, fmt, median, method_label
from reports import figures
from reports.data import method_key, peak_memory, spread
from reports.document import Table
from reports.sections.common import random_weights, ratios
from workloads.point import budget_label

AGREEMENT_COLUMN = "agreement: 1st token · prefix · KL nats"


def summary_table(rows: list[dict]) -> Table:
    """Each method against the baseline of its own run at the same batch size; agreement with the
    baseline's outputs (greyed with random weights)."""
    baseline_of = baselines(rows)
    table = Table(
        [
            "batch",
            "method",
            "budget",
            "visual tokens kept",
            "TTFT s",
            "TTFT speed-up",
            "e2e tok/s",
            "e2e × base",
            "decode tok/s",
            "peak GiB",
            "memory saved",
            AGREEMENT_COLUMN,
        ],
        [],
        muted=(AGREEMENT_COLUMN,) if random_weights(rows) else (),
    )
    labels = figures.param_labels(rows)
    for batch in sorted({r["config"]["batch_size"] for r in rows}):
        mine = sorted((r for r in rows if r["config"]["batch_size"] == batch), key=method_key)
        for r in mine:
            head = [str(batch), method_label(r, labels[id(r)]), budget_label(r["config"]["budget"])]
            if r["status"] != "ok":
                table.rows.append([*head, "–", r["status"].upper()] + ["–"] * 7)
                continue
            visual = r["metrics"].get("visual_tokens") or {}
            kept = visual.get("kept") or []
            speedup, e2e_ratio, saved = ratios(r, baseline_of(r))
            table.rows.append(
                [
                    *head,
                    f"{sum(kept) / len(kept):.0f}" if kept else "n/a",
                    f"{fmt(median(r, 'ttft_s'))} ± {fmt(spread(r, 'ttft_s'), '.2g')}",
                    "n/a" if speedup is None else f"{speedup:.2f}×",
                    fmt(median(r, "e2e_tokens_per_s")),
                    "n/a" if e2e_ratio is None else f"{e2e_ratio:.2f}×",
                    fmt(median(r, "decode_tokens_per_s")),
                    fmt(peak_memory(r)[0]),
                    "n/a" if saved is None else f"{saved:.0%}",
                    agreement_text(r),
                ]
            )
    return table
