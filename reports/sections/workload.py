"""One section per workload: its table, then each metric against the budget and the batch size, speed
against agreement, and where the time to the first token goes."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from profiler.results.views import MEANINGLESS, PEAK_MEMORY_ORDER, baselines
from reports import figures
from reports.data import Results, peak_memory, workload, workload_title
from reports.document import Section
from reports.sections.common import PEAK_FIGURES, is_baseline, random_weights, ratios
from reports.sections.kv_cache import kv_cache_table
from reports.sections.summary import summary_table
from workloads.point import budget_label


def grouped(results: Results) -> list[tuple[tuple, list[dict]]]:
    """The points by workload, in the report's order; boundary searches are no workload's points."""
    by_workload: dict[tuple, list[dict]] = defaultdict(list)
    for r in results.points:
        if not r["config"].get("boundary_search"):
            by_workload[workload(r)].append(r)
    return sorted(by_workload.items(), key=lambda kv: str(kv[0]))


def agreement_figure(rows: list[dict], folder: Path, name: str):
    """Speed-up against agreement at the batch size with the most points that have both."""
    usable = [r for r in rows if r["status"] == "ok" and (r.get("metrics") or {}).get("agreement")]
    baseline_of = baselines(rows)
    speedups = {id(r): ratios(r, baseline_of(r))[:2] for r in usable}
    usable = [r for r in usable if any(v is not None for v in speedups[id(r)])]
    if len(usable) < 2:
        return None
    counts = Counter(r["config"]["batch_size"] for r in usable)
    batch = max(counts, key=lambda b: (counts[b], b))
    chosen = [r for r in usable if r["config"]["batch_size"] == batch]
    meaningless = random_weights(chosen)
    fig = figures.speed_vs_agreement(
        chosen,
        speedups,
        f"speed-up against agreement with the full model · batch {batch}"
        + (" · random weights: shape only" if meaningless else ""),
        meaningless,
    )
    caption = (
        f"speed-up over the baseline against agreement with its outputs (mean share of leading tokens "
        f"equal), per method and budget at batch {batch}; dashed: the Pareto front (nothing is both "
        "faster and closer to the full model)"
    )
    if meaningless:
        caption += f". {MEANINGLESS[0].upper()}{MEANINGLESS[1:]}: this figure shows the report's shape only"
    return figures.save(fig, folder, f"{name}-speed-vs-agreement", caption)


def main_budget(rows: list[dict]):
    """The budget most methods were measured at (ties: the lowest), for the by-batch figures."""
    counts = Counter(
        r["config"]["budget"]
        for r in rows
        if not is_baseline(r) and not isinstance(r["config"]["budget"], str)
    )
    if not counts:
        return None
    top = max(counts.values())
    return min(b for b, n in counts.items() if n == top)


def workload_section(index: int, key: tuple, rows: list[dict], folder: Path) -> Section:
    section = Section(f"Workload {index}: {workload_title(key)}", [summary_table(rows)])
    kv = kv_cache_table(rows)
    if kv is not None:
        section.parts.append(kv)
    if random_weights(rows) and any((r.get("metrics") or {}).get("agreement") for r in rows):
        section.parts.insert(0, f"Agreement is greyed: {MEANINGLESS}.")
    name = f"w{index}"
    metrics = ["e2e_tokens_per_s", "decode_tokens_per_s", "ttft_s"]
    figures_used = {peak_memory(r)[1] for r in rows} - {None}
    if figures_used:
        metrics.append("peak_memory")
        said = ", ".join(PEAK_FIGURES[k] for k in PEAK_MEMORY_ORDER if k in figures_used)
        section.parts.append(f"Peak memory is {said} (docs/metrics.md, Memory).")
    else:
        section.parts.append("No memory figure: no peak was measured for these points (no GPU; see Setup).")
    for metric in metrics:
        fig = figures.by_budget(rows, metric, f"{figures.METRICS[metric]} against the visual-token budget")
        section.parts.append(
            figures.save(
                fig,
                folder,
                f"{name}-{metric}-vs-budget",
                f"{figures.METRICS[metric]} against the share of visual tokens kept "
                f"(one panel per batch size; dashed: all tokens; crosses: failed points)",
            )
        )
    budget = main_budget(rows)
    if budget is not None and len({r["config"]["batch_size"] for r in rows}) > 1:
        for metric in metrics:
            fig = figures.by_batch(rows, metric, budget, f"{figures.METRICS[metric]} against batch size")
            section.parts.append(
                figures.save(
                    fig,
                    folder,
                    f"{name}-{metric}-vs-batch",
                    f"{figures.METRICS[metric]} against batch size, methods at "
                    f"{budget_label(budget)} of the visual tokens",
                )
            )
    agreement = agreement_figure(rows, folder, name)
    if agreement is not None:
        section.parts.append(agreement)
    fig = figures.phases(rows, "where the time to the first token goes")
    if fig is not None:
        section.parts.append(
            figures.save(
                fig,
                folder,
                f"{name}-ttft-phases",
                "time to first token split into preprocess, vision, select, project, prefill (medians)",
            )
        )
    return section
