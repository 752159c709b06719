"""The GPU study's README.md, written by the study itself after every step from what the folder holds:
the machine, the command, the headline, the instrument checks, the HiRED Table 4 side by side,
every method at 20%, predicted against measured boundaries, the benchmarks, what was cut, the
timeline and the files. A section whose step did not run says so and why."""

from __future__ import annotations

import json
from pathlib import Path

from hired.methods import METHODS
from profiler.results.views import PEAK_MEMORY_ORDER, fmt, median
from reports.data import Results, load_results, method_key, peak_memory
from reports.document import Section, Table, to_markdown
from reports.sections.checks import checks_section
from reports.sections.common import PEAK_FIGURES, ratios
from workloads.paper import PAPER_NEW_TOKENS, PAPER_REPEATS, PAPER_TABLE4, PAPER_WARMUP
from workloads.point import budget_label

SECTIONS = (
    "Machine",
    "Command",
    "Headline: HiRED 20% against the full model",
    "Instrument checks",
    "Beside the HiRED paper (Table 4)",
    "Every method at 20%",
    "Out-of-memory boundaries under the 24 GiB cap",
    "Selection step and decode roofline",
    "What was cut",
    "Timeline",
    "Files",
)


def write_readme(study) -> Path:
    folder: Path = study.folder

    def read(*names: str) -> Results:
        return load_results([p for name in names if (p := folder / name).exists()])

    paper = read("results/paper-uncapped.jsonl", "results/paper-capped.jsonl")
    outcomes = {o.name: o for o in study.outcomes}
    sections = [
        machine_section(folder),
        command_section(study),
        headline_section(paper, outcomes),
        checks_section(read("checks.jsonl")) or not_run("Instrument checks", "checks", outcomes),
        paper_section(paper, outcomes),
        methods_section(read("results/run-b1.jsonl", "results/run-b4.jsonl"), outcomes),
        boundary_section(read("results/oom-boundary.jsonl", "results/predict.jsonl"), outcomes),
        bench_section(folder, outcomes),
        cut_section(study),
        timeline_section(study),
        files_section(folder),
    ]
    where = study.target.gpu_name or "a CPU (rehearsal)"
    path = folder / "README.md"
    path.write_text(to_markdown(f"hired-bench GPU study: {where}", sections, folder))
    return path


def not_run(title: str, step: str, outcomes: dict, why: str = "") -> Section:
    outcome = outcomes.get(step)
    said = (
        "not reached yet"
        if outcome is None
        else f"{outcome.status}{': ' + outcome.note if outcome.note else ''}"
    )
    return Section(title, [f"No results: step `{step}` {said}.{' ' + why if why else ''}"])


def machine_section(folder: Path) -> Section:
    try:
        env = json.loads((folder / "env.json").read_text())
    except (OSError, ValueError):
        return Section("Machine", ["`hired-bench env` wrote nothing readable (see logs/env.log)."])
    rows = [[k, "n/a" if v is None else str(v)] for k, v in {**env["hardware"], **env["measurable"]}.items()]
    return Section("Machine", [Table(["", "value"], rows)])


def command_section(study) -> Section:
    t = study.target
    how = (
        "on a GPU image with its own packages (no install): `PYTHONPATH=. python3 -m reports.study`"
        if t.gpu
        else "without a GPU: the rehearsal, the tiny preset on the CPU"
    )
    return Section(
        "Command",
        [
            f"`make gpu-study`, {how}. Model `{t.model}` ({t.dtype}, random weights: timing and memory are "
            "real, outputs are not), 600x600 pictures, 15 new tokens, greedy. Each step is one of the "
            "suite's commands, listed in the timeline; the sweep files it wrote are in `sweeps/`.",
        ],
    )


def find(results: Results, method: str, budget: float, batch: int, capped: bool) -> dict | None:
    """The study's point of that method, budget, batch and memory setting: an ok one where there is one."""
    found = [
        r
        for r in results.points
        if r["config"]["method"] == method
        and r["config"]["budget"] == budget
        and r["config"]["batch_size"] == batch
        and r["config"].get("new_tokens") == PAPER_NEW_TOKENS
        and bool(r["config"].get("memory_cap_gib")) == capped
        and not r["config"].get("boundary_search")
    ]
    return next((r for r in found if r["status"] == "ok"), found[0] if found else None)


def cells(r: dict | None) -> list[str]:
    """TTFT s, e2e tokens/s, peak GiB of a record, or its status."""
    if r is None:
        return ["–", "–", "–"]
    if r["status"] != "ok":
        return [r["status"].upper(), "–", "–"]
    return [fmt(median(r, "ttft_s")), fmt(median(r, "e2e_tokens_per_s")), fmt(peak_memory(r)[0])]


def times(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}×"


def headline_section(results: Results, outcomes: dict) -> Section:
    title = SECTIONS[2]
    rows, figures = [], set()
    for capped in (False, True):
        for batch in (1, 4):
            full, ours = find(results, "none", 1.0, batch, capped), find(results, "hired", 0.2, batch, capped)
            if full is None and ours is None:
                continue
            figures |= {peak_memory(r)[1] for r in (full, ours) if r is not None} - {None}
            speedup, e2e, saved = (
                ratios(ours, full) if ours and full and full["status"] == "ok" else (None,) * 3
            )
            f, h = cells(full), cells(ours)
            rows.append(
                [
                    "24 GiB cap" if capped else "whole card",
                    str(batch),
                    f[0],
                    h[0],
                    times(speedup),
                    f[1],
                    h[1],
                    times(e2e),
                    f[2],
                    h[2],
                    "–" if saved is None else f"{saved:.0%}",
                ]
            )
    if not rows:
        return not_run(title, "paper-uncapped", outcomes)
    columns = ["memory", "batch", "full TTFT s", "HiRED TTFT s", "TTFT speed-up", "full e2e tok/s",
               "HiRED e2e tok/s", "e2e ×", "full peak GiB", "HiRED peak GiB", "memory saved"]  # fmt: skip
    return Section(
        title,
        [
            f"Medians of {PAPER_REPEATS} measured requests after {PAPER_WARMUP} warm-up; peak = "
            + (" and ".join(PEAK_FIGURES[k] for k in PEAK_MEMORY_ORDER if k in figures) or "not measured")
            + (" (what the paper reports)" if figures == {"torch_allocated"} else " (the paper: torch's)")
            + "; e2e tokens/s = new tokens / (preprocess + vision + prefill + decode).",
            Table(columns, rows),
        ],
    )


# which software stack each column of the Table 4 comparison comes from
STACKS = (
    "Two stacks: the paper's columns come from transformers 4.42 with the HiRED patch (two KV caches "
    "at each decode step, as its `generate` rebuilds the cache from a tuple; logits of every prompt "
    "position in float32; eager vision attention); ours from this machine's transformers (Machine above) "
    "with SDPA attention in both towers and the last position's logits only. At the same shapes the "
    "modern stack needs less memory per sample; `hired-bench predict --stack released` models the "
    "paper's and prints Table 4 beside it."
)


def paper_section(results: Results, outcomes: dict) -> Section:
    title = SECTIONS[4]
    rows = []
    for batch, settings in PAPER_TABLE4.items():
        for setting, paper in settings.items():
            method, budget = ("none", 1.0) if setting == "full" else ("hired", setting)
            uncapped, capped = (find(results, method, budget, batch, c) for c in (False, True))
            if uncapped is None and capped is None:
                continue
            theirs = (
                ["OOM", "–", "–"]
                if paper is None
                else [f"{paper[1]:.2f}", f"{paper[0]:.2f}", f"{paper[2]:.2f}"]
            )
            label = "full" if setting == "full" else f"HiRED {setting:.0%}"
            rows.append([str(batch), label, *theirs, *cells(capped), *cells(uncapped)])
    if not rows:
        return not_run(title, "paper-uncapped", outcomes)
    return Section(
        title,
        [
            "The paper: LLaVA-Next-7B on a 24 GB Tesla P40 with its own code (TTFT s, end-to-end tokens/s "
            "over 15 new tokens, torch max_memory_allocated in GB). Ours: the same workload on this GPU, "
            "under a 24 GiB cap and on the whole card (TTFT s, e2e tokens/s, peak GiB). A P40 is not this "
            "GPU: compare the ratios between settings, and memory, which depends on shapes, not the card.",
            STACKS,
            Table(
                [
                    "batch",
                    "setting",
                    "paper TTFT",
                    "paper tok/s",
                    "paper GB",
                    "capped TTFT",
                    "capped tok/s",
                    "capped GiB",
                    "whole-card TTFT",
                    "whole-card tok/s",
                    "whole-card GiB",
                ],
                rows,
            ),
        ],
    )


def methods_section(results: Results, outcomes: dict) -> Section:
    title = SECTIONS[5]
    runs = results.points
    if not runs:
        return not_run(title, "run-b1", outcomes)
    rows = []
    for r in sorted(runs, key=lambda r: (r["config"]["batch_size"], method_key(r))):
        c, m = r["config"], r.get("metrics") or {}
        if r["status"] != "ok":
            rows.append(
                [str(c["batch_size"]), c["method"], r["status"].upper(), "", "", "", "", r.get("error") or ""]
            )
            continue
        kept, full = (m.get("visual_tokens") or {}).get("kept"), (m.get("visual_tokens") or {}).get("full")
        select = ((m.get("phases_s") or {}).get("select") or {}).get("median")
        ttft = median(r, "ttft_s")
        inside = c["method"] in METHODS and METHODS[c["method"]].stage == "llm"
        rows.append(
            [
                str(c["batch_size"]),
                c["method"],
                f"{kept[0]}/{full[0]}" if kept and full else "–",
                fmt(ttft),
                fmt(median(r, "e2e_tokens_per_s")),
                fmt(peak_memory(r)[0]),
                "in prefill" if inside else "–" if select is None or not ttft else f"{select / ttft:.1%}",
                budget_label(c["budget"]),
            ]
        )
    return Section(
        title,
        [
            "`hired-bench run --method all --budget 0.2` (1 warm-up, 3 measured): select share = the "
            "method's scoring and selection inside the request, over its TTFT (FastV and DART score inside "
            "the language model's prefill).",
            Table(
                ["batch", "method", "kept/full", "TTFT s", "e2e tok/s", "peak GiB", "select share", "budget"],
                rows,
            ),
        ],
    )


def boundary_section(results: Results, outcomes: dict) -> Section:
    title = SECTIONS[6]
    predicted = {(p["method"], p.get("budget_label")): p.get("largest_batch") for p in results.predictions}
    rows = []
    for b in results.boundaries:
        found = b["metrics"]["oom_boundary"]
        label = budget_label(b["config"]["budget"])
        first = found.get("smallest_failing")
        rows.append(
            [
                b["config"]["method"],
                label,
                str(found["largest_fitting"]),
                "none up to the limit" if first is None else str(first),
                fmt(found.get("predicted_largest"), ""),
                fmt(predicted.get((b["config"]["method"], label)), ""),
                str(len(found.get("probes") or [])),
                found.get("stopped_by") or "",
            ]
        )
    parts = []
    if rows:
        parts.append(
            Table(
                [
                    "method",
                    "budget",
                    "largest that fits",
                    "first OOM",
                    "predicted (search)",
                    "predicted (predict)",
                    "probes",
                    "stopped by",
                ],
                rows,
            )
        )
    elif results.predictions:
        parts.append(
            Table(
                ["method", "budget", "predicted largest batch"],
                [[m, b, fmt(n, "")] for (m, b), n in predicted.items()],
            )
        )
        parts.append(
            not_run("", "oom-boundary", outcomes).parts[0].replace("No results", "No measured boundary")
        )
    if not parts:
        return not_run(title, "oom-boundary", outcomes)
    parts.insert(
        0,
        "`hired-bench oom-boundary --memory-cap 24GiB` (doubling from 1, then bisecting, up to 64) against "
        "the memory model (`hired-bench predict --gpu-memory 24GiB --overhead 0`): what fits under "
        "PyTorch's 24 GiB, as on a P40 (its CUDA context sits outside the cap).",
    )
    return Section(title, parts)


def bench_section(folder: Path, outcomes: dict) -> Section:
    parts = []
    for step, file, what in (
        ("bench-select", "bench/select.txt", "`python -m profiler.bench.select`"),
        ("bench-decode", "bench/decode.txt", "`python -m profiler.bench.decode`"),
    ):
        path = folder / file
        text = path.read_text(errors="replace").strip() if path.exists() else ""
        outcome = outcomes.get(step)
        status = "not reached" if outcome is None else outcome.status
        parts.append(f"{what} ({status}):")
        parts.append(f"```\n{text}\n```" if text else "(no output)")
    return Section(SECTIONS[7], parts)


def cut_section(study) -> Section:
    return Section(
        SECTIONS[8],
        [
            f"The paper grid (`workloads/paper.toml`, {len(study.paper_kept) + count(study.paper_cut)} "
            f"points per memory setting) was trimmed to the {len(study.paper_kept)} points of the HiRED "
            "paper's Table 4 "
            "(full, HiRED 40% and 20% at batch 1, 2 and 4, 15 new tokens), measured uncapped and capped, so "
            "that the whole study fits 8 minutes of a lent GPU. Cut, per memory setting:",
            "\n".join(f"- {line}" for line in study.paper_cut),
            'Run them with `hired-bench sweep paper` (add `memory_cap = "24GiB"` for the P40).',
        ],
    )


def count(lines: list[str]) -> int:
    return sum(int(line.rsplit(": ", 1)[1].split()[0]) for line in lines)


def timeline_section(study) -> Section:
    steps = {s.name: s for s in study.steps}
    rows = []
    for step in study.steps:
        o = next((o for o in study.outcomes if o.name == step.name), None)
        rows.append(
            [
                step.name,
                step.title,
                f"{step.planned_s:.0f}",
                f"{step.box_s:.0f}",
                "–" if o is None or o.started_s is None else f"{o.started_s:.0f}",
                "–" if o is None or o.took_s is None else f"{o.took_s:.1f}",
                "not reached" if o is None else o.status,
                "" if o is None else o.note,
            ]
        )
    total = sum(o.took_s or 0 for o in study.outcomes)
    basis = Table(["step", "planned from"], [[s.name, s.basis] for s in steps.values() if not s.na])
    return Section(
        SECTIONS[9],
        [
            f"Steps in order, each in its own process and time box (the study's deadline: "
            f"{study.deadline_s:.0f} s). Measured: {total:.0f} s in all.",
            Table(["step", "what", "planned s", "box s", "started at s", "took s", "status", "note"], rows),
            basis,
        ],
    )


def files_section(folder: Path) -> Section:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    big = [
        p
        for p in files
        if p.suffix in (".jsonl", ".md", ".html", ".txt", ".json", ".toml") or p.parent.name != "figures"
    ]
    rows = [[str(p.relative_to(folder)), f"{p.stat().st_size / 1024:.1f}"] for p in big]
    figures = [p for p in files if p not in big]
    if figures:
        rows.append(
            [
                f"report/figures/ ({len(figures)} files)",
                f"{sum(p.stat().st_size for p in figures) / 1024:.1f}",
            ]
        )
    return Section(
        SECTIONS[10],
        [
            f"{len(files)} files, {total / 2**20:.2f} MiB in all. The report: `report/report.md` and "
            "`report/report.html` (self-contained).",
            Table(["file", "KiB"], rows),
        ],
    )
