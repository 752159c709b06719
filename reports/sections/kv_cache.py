"""A vLLM workload's KV cache: the blocks each request held, and how many requests of the point's length
the engine's cache holds at once (vLLM's maximum concurrency), each against the baseline."""

from __future__ import annotations

from statistics import median

from profiler.results.views import baselines, method_label
from reports import figures
from reports.data import method_key
from reports.document import Table
from workloads.point import budget_label


def kv_cache_table(rows: list[dict]) -> Table | None:
    """None where no point carries metrics.kv_cache (the transformers engines)."""
    usable = [r for r in rows if r["status"] == "ok" and (r.get("metrics") or {}).get("kv_cache")]
    if not usable:
        return None
    baseline_of = baselines(usable)
    labels = figures.param_labels(usable)
    table = Table(
        ["batch", "method", "budget", "KV blocks / request", "× base", "max concurrency", "× base"],
        [],
        caption="vLLM's KV cache (docs/engines.md): the median blocks a request held (block size "
        f"{usable[0]['metrics']['kv_cache']['block_size']} tokens), and the requests of the point's length "
        "(prompt + new tokens) the whole cache holds at once, as vLLM computes it",
    )
    for r in sorted(usable, key=lambda r: (r["config"]["batch_size"], *method_key(r))):
        kv = r["metrics"]["kv_cache"]
        base = (baseline_of(r) or {}).get("metrics", {}).get("kv_cache") or {}
        blocks, base_blocks = median(kv["blocks"]), median(base["blocks"]) if base.get("blocks") else None
        concurrency, base_concurrency = kv.get("max_concurrency"), base.get("max_concurrency")
        table.rows.append(
            [
                str(r["config"]["batch_size"]),
                method_label(r, labels[id(r)]),
                budget_label(r["config"]["budget"]),
                f"{blocks:g}",
                f"{blocks / base_blocks:.2f}×" if base_blocks else "n/a",
                "n/a" if concurrency is None else f"{concurrency:.0f}",
                f"{concurrency / base_concurrency:.2f}×" if concurrency and base_concurrency else "n/a",
            ]
        )
    return table
