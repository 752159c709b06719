"""The report: what was measured where, per workload tables and figures, OOM boundaries, the HiRED
paper side by side, hardware comparisons, and every point in an appendix (nothing dropped silently)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

from hired.methods import NONE
from profiler.results.views import (
    MEANINGLESS,
    PEAK_MEMORY_ORDER,
    agreement_text,
    baselines,
    median,
    method_label,
    ratio_text,
)
from reports import figures
from reports.data import (
    Results,
    image_label,
    machine,
    method_key,
    method_rank,
    peak_memory,
    spread,
    workload,
    workload_title,
)
from reports.document import Section, Table, to_html, to_markdown
from workloads.paper import PAPER_MODELS, PAPER_TABLE4
from workloads.point import budget_label

BASELINE = NONE.name  # the full-token baseline's method


def fmt(value: float | None, spec: str = ".3g") -> str:
    """A number as the report writes it, 'n/a' for none. Not views.fmt: that one scales, so an int
    comes out as a float ('4.0' for '', an error for 'd')."""
    return "n/a" if value is None else format(value, spec)


def is_baseline(record: dict) -> bool:
    return record["config"]["method"] == BASELINE


def failed(record: dict) -> str:
    return f"{record['status'].upper()}: {record.get('error') or ''}".strip()


def ratios(record: dict, base: dict | None) -> tuple[float | None, float | None, float | None]:
    """(TTFT speed-up, e2e tokens/s ratio, share of peak memory saved) against a baseline."""
    if base is None or record["status"] != "ok":
        return None, None, None
    ttft, b_ttft = median(record, "ttft_s"), median(base, "ttft_s")
    e2e, b_e2e = median(record, "e2e_tokens_per_s"), median(base, "e2e_tokens_per_s")
    mem, b_mem = peak_memory(record)[0], peak_memory(base)[0]
    return (
        b_ttft / ttft if ttft and b_ttft else None,
        e2e / b_e2e if e2e and b_e2e else None,
        1 - mem / b_mem if mem and b_mem else None,
    )


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


AGREEMENT_COLUMN = "agreement: 1st token · prefix · KL nats"


def random_weights(rows: list[dict]) -> bool:
    return any(r["config"].get("weights") == "random" for r in rows)


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


# what each peak-memory figure is, in words (profiler.results.views.PEAK_MEMORY_ORDER picks one per point)
PEAK_FIGURES = {
    "torch_allocated": "torch's max allocated",
    "nvml_process": "NVML's peak for the process",
    "nvml_device": "NVML's peak for the whole card",
    "host_rss": "the measuring process's peak resident set size on the host (no GPU: weights included)",
}


def workload_section(index: int, key: tuple, rows: list[dict], folder: Path) -> Section:
    section = Section(f"Workload {index}: {workload_title(key)}", [summary_table(rows)])
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
        section.parts.append(
            Table(
                [
                    "model",
                    "method",
                    "budget",
                    "memory GiB",
                    "tokens/image",
                    "peak GiB at batch 1",
                    "largest batch",
                ],
                [
                    [
                        p["model"],
                        p["method"],
                        str(p["budget_label"]),
                        f"{p['memory_gib']:.1f}",
                        str(p["tokens_per_image"] or "adaptive"),
                        fmt((p["peak_gib_by_batch"] or {}).get("1")),
                        fmt(p["largest_batch"], "d"),
                    ]
                    for p in results.predictions
                ],
                "memory-model predictions (hired-bench predict)",
            )
        )
    return section


def paper_section(results: Results) -> Section | None:
    """Our numbers beside the HiRED paper's Table 4, where the workload matches it."""
    tables = []
    for where in sorted({machine(r) for r in results.points}):
        rows = []
        for batch, settings in PAPER_TABLE4.items():
            for setting, paper in settings.items():
                ours = [
                    r
                    for r in results.points
                    if machine(r) == where
                    and r["config"]["model"] in PAPER_MODELS
                    and r["config"]["new_tokens"] == 15
                    and image_label(r["config"]) == "600x600"
                    and r["config"]["batch_size"] == batch
                    and (
                        (setting == "full" and is_baseline(r))
                        or (r["config"]["method"] == "hired" and r["config"]["budget"] == setting)
                    )
                ]
                for r in ours:
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
            tables.append(
                Table(
                    [
                        "batch",
                        "setting",
                        "ours e2e tok/s",
                        "paper tok/s",
                        "ours TTFT s",
                        "paper TTFT s",
                        "ours peak GiB",
                        "paper peak GB",
                    ],
                    rows,
                    f"measured on {where}",
                )
            )
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


def checks_section(results: Results) -> Section | None:
    """The instrument checks (python -m profiler.bench.checks): each instrument against a reference."""
    if not results.checks:
        return None
    rows = []
    for r in results.checks:
        unit, diff, tol = r.get("unit") or "", r.get("difference"), r.get("tolerance")
        # no tolerance (null; 0 in the first study's file): the reference is a floor to reach
        limit = "floor" if not tol else f"±{tol:.0%}" if isinstance(tol, float) else ""
        rows.append(
            [
                r["check"],
                r.get("what") or "",
                "–" if r.get("measured") is None else f"{r['measured']:.4g} {unit}",
                "–" if r.get("reference") is None else f"{r['reference']:.4g} {unit}",
                "–" if diff is None else f"{diff:+.2%}",
                limit,
                r["verdict"],
                r.get("note") or "",
            ]
        )
    return Section(
        "Instrument checks",
        [
            "Each instrument against an independent reference on the same work "
            "(`python -m profiler.bench.checks`).",
            Table(
                ["check", "compares", "measured", "reference", "difference", "tolerance", "verdict", "how"],
                rows,
            ),
        ],
    )


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


def point_id(record: dict) -> tuple:
    c = record["config"]
    return (c["method"], budget_label(c["budget"]), c["batch_size"])


def compare_section(results: Results, folder: Path, title: str = "Hardware comparison") -> Section | None:
    """The same workloads on several machines: ratio tables and grouped bars, keyed by GPU (and cap).
    A machine with no point measured (every one failed) has nothing to compare."""
    machines = sorted({machine(r) for r in results.points if r["status"] == "ok"})
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
    return section if len(section.parts) > 1 else None


def setup_section(results: Results) -> Section:
    machines: dict[str, dict] = {}
    for r in results.points:
        machines.setdefault(machine(r), r.get("hardware") or {})
    keys = [
        "gpu_memory_gib",
        "driver",
        "cuda",
        "cpu",
        "ram_gib",
        "torch",
        "transformers",
        "python",
        "platform",
    ]
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
    weights = Counter(r["config"].get("weights") for r in results.points)
    parts = [
        f"Files read: {', '.join(str(f) for f in results.files)}.",
        f"Points: {len(results.points)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
        f"OOM-boundary searches: {len(results.boundaries)}; predictions: {len(results.predictions)}; "
        f"accuracy records: {len(results.accuracy)}; instrument checks: {len(results.checks)}.",
        "Weights: "
        + ", ".join(f"{w} ({n} points)" for w, n in weights.items())
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


def appendix(results: Results) -> Section:
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


def build_report(results: Results, out: Path, title: str = "hired-bench report") -> tuple[Path, Path]:
    """Write report.md, report.html and figures/ under `out`; returns the two report paths."""
    folder = out / "figures"
    by_workload: dict[tuple, list[dict]] = defaultdict(list)
    for r in results.points:
        if not r["config"].get("boundary_search"):
            by_workload[workload(r)].append(r)
    workloads = sorted(by_workload.items(), key=lambda kv: str(kv[0]))
    headlines = Section("Headlines", [])
    for i, (key, rows) in enumerate(workloads, 1):
        if (table := headline_table(rows)) is not None:
            table.caption = f"Workload {i}: {workload_title(key)} · " + table.caption
            headlines.parts.append(table)
    sections = [headlines] if headlines.parts else []
    sections.append(setup_section(results))
    for i, (key, rows) in enumerate(workloads, 1):
        sections.append(workload_section(i, key, rows, folder))
    sections += [
        s
        for s in (
            accuracy_section(results, folder),
            boundary_section(results, folder),
            checks_section(results),
            paper_section(results),
            compare_section(results, folder),
        )
        if s is not None
    ]
    sections.append(appendix(results))
    return write(out, title, sections)


def build_compare(results: Results, out: Path) -> tuple[Path, Path] | None:
    section = compare_section(results, out / "figures", "The same workloads on several machines")
    if section is None:
        return None
    return write(out, "hired-bench hardware comparison", [setup_section(results), section])


def write(out: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(to_markdown(title, sections, out))
    page.write_text(to_html(title, sections))
    return markdown, page
