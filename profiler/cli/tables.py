"""The side-by-side table `hired-bench run` and `sweep` print: each method against the full-token
baseline, drawn with rich from profiler.results.views."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from profiler.results.views import (
    AGREEMENT_HEADER,
    MEANINGLESS,
    agreement_text,
    baselines,
    fmt,
    median,
    method_label,
    peak_memory_gib,
    ratio_text,
    tokens_text,
    varying_params,
)
from workloads.point import budget_label


def results_table(records: list[dict], title: str) -> Table:
    """One row per record; ratios against its baseline (`baselines`: same run, batch, engine).

    Failed points show their status and a footnote number; the messages go in the caption. Agreement
    is greyed where the weights are random.
    """
    engines = {r["config"].get("engine", "eager") for r in records}
    table = Table(title=title, title_justify="left", caption_justify="left")
    notes = []
    for name, justify in [
        ("method", "left"),
        ("budget", "right"),
        ("visual tokens\nkept/full", "right"),
        ("TTFT\ns", "right"),
        ("TTFT p90\ns", "right"),
        ("TPOT\nms", "right"),
        ("decode\ntok/s", "right"),
        ("e2e\ntok/s", "right"),
        ("peak mem\nGiB", "right"),
        ("TTFT\nspeed-up", "right"),
        ("e2e tok/s\n× base", "right"),
        ("memory\n× base", "right"),
        (AGREEMENT_HEADER, "right"),
    ]:
        table.add_column(name, justify=justify)
    baseline_of = baselines(records)
    for r, params in zip(records, varying_params(records), strict=True):
        cfg = r["config"]
        label = method_label(r, params)
        if cfg.get("fidelity") == "reference":
            label += " (reference)"
        if len(engines) > 1:
            label += escape(f" [{cfg.get('engine', 'eager')}]")  # not a rich markup tag
        budget = budget_label(cfg["budget"])
        if r["status"] != "ok":
            notes.append(r["error"])
            table.add_row(label, budget, f"[red]{r['status'].upper()}[/] ({len(notes)})", *[""] * 10)
            continue
        m = r["metrics"]
        ttft, tpot = median(r, "ttft_s"), median(r, "tpot_s")
        decode, e2e = median(r, "decode_tokens_per_s"), median(r, "e2e_tokens_per_s")
        mem = peak_memory_gib(m)[0]
        base = baseline_of(r)
        b = (base or {}).get("metrics") or {}
        table.add_row(
            label,
            budget,
            tokens_text(m["visual_tokens"]),
            fmt(ttft, ".3f"),
            fmt((m.get("ttft_s") or {}).get("p90"), ".3f"),
            fmt(tpot, ".1f", 1e3),
            fmt(decode, ".1f"),
            fmt(e2e, ".1f"),
            fmt(mem, ".2f"),
            ratio_text(ttft, median(base or {}, "ttft_s"), invert=True),
            ratio_text(e2e, median(base or {}, "e2e_tokens_per_s")),
            ratio_text(mem, peak_memory_gib(b)[0]),
            f"[dim]{agreement_text(r)}[/]" if cfg.get("weights") == "random" else agreement_text(r),
        )
    captions = [f"({i}) {escape(note)}" for i, note in enumerate(notes, 1)]
    if any(r["config"].get("weights") == "random" for r in records):
        captions.append(f"[dim]agreement greyed: {MEANINGLESS}[/]")
    table.caption = "\n".join(captions) or None
    return table


def serving_table(records: list[dict], title: str) -> Table:
    """serve-bench's records: one row per (method, budget, rate), in the order measured."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    columns = ["method", "budget", "rate\nreq/s", "served\nreq/s", "output\ntok/s", "TTFT p50\nms"]
    columns += [
        "TTFT p99\nms",
        "TPOT p50\nms",
        "goodput\nreq/s",
        "failed",
        "KV peak\nused",
        "max\nconcurrency",
    ]
    for name in columns:
        table.add_column(name, justify="left" if name in ("method", "budget") else "right")
    notes = []
    for r in records:
        cfg, m = r["config"], r.get("metrics") or {}
        head = [cfg["method"], budget_label(cfg["budget"]), str(cfg["request_rate"])]
        if r["status"] != "ok":
            notes.append(r["error"].splitlines()[0])
            table.add_row(*head, f"[red]{r['status'].upper()}[/] ({len(notes)})", *[""] * 8)
            continue
        kv = m.get("kv_cache") or {}

        def ms(name: str, stat: str, m=m) -> str:
            return fmt((m.get(name) or {}).get(stat), ",.4g", scale=1e3)

        table.add_row(
            *head,
            fmt(m["request_throughput_per_s"]),
            fmt(m["output_tokens_per_s"]),
            ms("ttft_s", "median"),
            ms("ttft_s", "p99"),
            ms("tpot_s", "median"),
            fmt(m.get("goodput_requests_per_s")),
            str(m["failed_requests"]),
            "n/a" if kv.get("peak_usage") is None else f"{kv['peak_usage']:.1%}",
            fmt(kv.get("max_concurrency"), ",.0f"),
        )
    table.caption = "\n".join(f"({i}) {escape(note)}" for i, note in enumerate(notes, 1))
    return table
