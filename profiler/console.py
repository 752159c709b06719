"""The side-by-side table `hired-bench run` prints: each method against the full-token baseline."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from rich.markup import escape
from rich.table import Table

from profiler.metrics import peak_memory_gib
from workloads.plan import budget_label


def varying_params(records: list[dict]) -> list[str]:
    """Per record, 'alpha=0.3 ...' for each method parameter whose value differs among the records of
    its method (so two points of one method are told apart), else ''."""
    values: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        for name, value in (r["config"].get("method_params") or {}).items():
            values[r["config"]["method"]][name].add(json.dumps(value))
    return [
        " ".join(
            f"{name}={json.dumps((r['config'].get('method_params') or {}).get(name))}"
            for name, seen in sorted(values[r["config"]["method"]].items())
            if len(seen) > 1
        )
        for r in records
    ]


def _median(metrics: dict, name: str) -> float | None:
    stats = metrics.get(name)
    return stats["median"] if stats else None


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def _ratio(value: float | None, base: float | None, invert: bool = False) -> str:
    if value is None or base is None or value == 0 or base == 0:
        return "n/a"
    return f"{(base / value) if invert else (value / base):.2f}×"


def _tokens(visual: dict) -> str:
    kept, full = visual["kept"], visual["full"]
    share = sum(kept) / sum(full)
    percent = f"{share:.1%}" if share < 0.1 else f"{share:.0%}"
    if len(set(kept)) == 1 and len(set(full)) == 1:
        return f"{kept[0]}/{full[0]} ({percent})"
    return f"Σ {sum(kept)}/{sum(full)} ({percent})"


AGREEMENT_HEADER = "agreement\n1st · prefix · KL"
MEANINGLESS = "random weights: the outputs, and so agreement and accuracy, carry no meaning"


def agreement_text(record: dict) -> str:
    """'1st-token share · mean matching prefix · mean first-token KL (nats)', or 'n/a'."""
    found = (record.get("metrics") or {}).get("agreement")
    if not found:
        return "n/a"
    return f"{found['first_token']:.2f} · {found['prefix']['mean']:.2f} · {found['kl_first']['mean']:.3f}"


def baselines(rows: list[dict]) -> Callable[[dict], dict | None]:
    """record -> the baseline it is compared with: the ok `none` point of its own run with its model,
    batch size, fidelity and engine, else of any run with those. Indexed once: a report of 20,000 points
    looks each up in constant time."""
    first: dict[tuple, dict] = {}  # (model, batch, fidelity, engine) -> the first baseline
    own: dict[tuple, dict] = {}  # the same and the run id -> the run's first baseline

    def key(record: dict) -> tuple:
        c = record["config"]
        return (c.get("model"), c.get("batch_size"), c.get("fidelity"), c.get("engine", "eager"))

    for r in rows:
        if r["config"]["method"] == "none" and r["status"] == "ok":
            first.setdefault(key(r), r)
            own.setdefault((*key(r), r.get("run_id")), r)

    def baseline_of(record: dict) -> dict | None:
        return own.get((*key(record), record.get("run_id"))) or first.get(key(record))

    return baseline_of


def method_label(record: dict, params: str = "") -> str:
    """A point's method as tables show it: the baseline marked, the parameters telling it apart."""
    c = record["config"]
    return c["method"] + (" (baseline)" if c["method"] == "none" else "") + (f" {params}" if params else "")


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
            label += f" [{cfg.get('engine', 'eager')}]"
        budget = budget_label(cfg["budget"])
        if r["status"] != "ok":
            notes.append(r["error"])
            table.add_row(label, budget, f"[red]{r['status'].upper()}[/] ({len(notes)})", *[""] * 10)
            continue
        m = r["metrics"]
        ttft, tpot = _median(m, "ttft_s"), _median(m, "tpot_s")
        decode, e2e = _median(m, "decode_tokens_per_s"), _median(m, "e2e_tokens_per_s")
        mem = peak_memory_gib(m)[0]
        base = baseline_of(r)
        b = (base or {}).get("metrics") or {}
        table.add_row(
            label,
            budget,
            _tokens(m["visual_tokens"]),
            _fmt(ttft, ".3f"),
            _fmt((m.get("ttft_s") or {}).get("p90"), ".3f"),
            _fmt(tpot, ".1f", 1e3),
            _fmt(decode, ".1f"),
            _fmt(e2e, ".1f"),
            _fmt(mem, ".2f"),
            _ratio(ttft, _median(b, "ttft_s"), invert=True),
            _ratio(e2e, _median(b, "e2e_tokens_per_s")),
            _ratio(mem, peak_memory_gib(b)[0]),
            f"[dim]{agreement_text(r)}[/]" if cfg.get("weights") == "random" else agreement_text(r),
        )
    captions = [f"({i}) {escape(note)}" for i, note in enumerate(notes, 1)]
    if any(r["config"].get("weights") == "random" for r in records):
        captions.append(f"[dim]agreement greyed: {MEANINGLESS}[/]")
    table.caption = "\n".join(captions) or None
    return table
