"""serve-bench's records: per workload, TTFT p99 and throughput against the request rate, one line per
method (the baseline dashed), a table per rate, and the highest rate each method sustains under the TTFT
SLO; on several machines, each setting side by side."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from profiler.results.views import fmt
from reports import figures
from reports.data import Results, image_label, machine, method_key
from reports.document import Section, Table
from workloads.point import budget_label


def serving_workload(record: dict) -> tuple:
    """What must match for serving records to be compared: the model, the pictures, the load, the machine."""
    c = record["config"]
    return (
        c.get("model"),
        c.get("weights"),
        c.get("dtype"),
        image_label(c),
        c.get("new_tokens"),
        c.get("requests"),
        c.get("concurrency"),
        machine(record),
    )


def serving_title(key: tuple) -> str:
    model, weights, dtype, images, tokens, requests, concurrency, where = key
    limit = f", at most {concurrency} in flight" if concurrency else ""
    return (
        f"{model} ({weights} weights, {dtype}) in vLLM's server · {images} images · {tokens} new tokens · "
        f"{requests} requests per rate{limit} · {where}"
    )


def _ms(record: dict, metric: str, stat: str) -> str:
    found = (record.get("metrics") or {}).get(metric) or {}
    return fmt(found.get(stat), ",.4g", scale=1e3)


def rate_table(rows: list[dict]) -> Table:
    table = Table(
        [
            *("method", "budget", "rate req/s", "served req/s", "output tok/s", "TTFT p50 ms", "TTFT p99 ms"),
            *("TPOT p50 ms", "goodput req/s", "failed", "KV peak used", "max concurrency"),
        ],
        [],
    )
    for r in sorted(
        rows, key=lambda r: (*method_key(r), figures.rate_positions(rows)[r["config"]["request_rate"]])
    ):
        c, m = r["config"], r.get("metrics") or {}
        head = [c["method"], budget_label(c["budget"]), str(c["request_rate"])]
        if r["status"] != "ok":
            table.rows.append([*head, r["status"].upper()] + ["–"] * 8)
            continue
        kv = m.get("kv_cache") or {}
        table.rows.append(
            [
                *head,
                fmt(m.get("request_throughput_per_s")),
                fmt(m.get("output_tokens_per_s")),
                _ms(r, "ttft_s", "median"),
                _ms(r, "ttft_s", "p99"),
                _ms(r, "tpot_s", "median"),
                fmt(m.get("goodput_requests_per_s")),
                str(m.get("failed_requests", "n/a")),
                "n/a" if kv.get("peak_usage") is None else f"{kv['peak_usage']:.1%}",
                fmt(kv.get("max_concurrency"), ",.0f"),
            ]
        )
    return table


def sustained(rows: list[dict], slo_ms: float) -> Table:
    """Per method and budget, the highest rate measured whose every request was served with TTFT p99
    within the SLO."""
    table = Table(
        ["method", "budget", f"highest rate with TTFT p99 ≤ {slo_ms:g} ms", "served req/s there"], []
    )
    positions = figures.rate_positions(rows)
    for mine in figures.by_setting(rows).values():
        within = [r for r in mine if r["status"] == "ok" and _within(r["metrics"], slo_ms)]
        best = max(within, key=lambda r: positions[r["config"]["request_rate"]], default=None)
        c = mine[0]["config"]
        table.rows.append(
            [
                c["method"],
                budget_label(c["budget"]),
                "none measured" if best is None else str(best["config"]["request_rate"]),
                "–" if best is None else fmt(best["metrics"].get("request_throughput_per_s")),
            ]
        )
    return table


def _within(metrics: dict, slo_ms: float) -> bool:
    """Every request served, with TTFT p99 within the SLO (a record that does not say: not within)."""
    p99 = (metrics.get("ttft_s") or {}).get("p99")
    return metrics.get("failed_requests") == 0 and p99 is not None and p99 * 1e3 <= slo_ms


def serving_sections(results: Results, folder: Path) -> list[Section]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results.serving:
        groups[serving_workload(r)].append(r)
    sections = []
    for i, (key, rows) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0])), 1):
        section = Section(f"Under load {i}: {serving_title(key)}", [])
        fig = figures.by_rate(rows, "TTFT tail and throughput against the request rate")
        section.parts.append(
            figures.save(
                fig,
                folder,
                f"serving-{i}",
                "TTFT p99 (ms) and output tokens/s against the request rate (Poisson arrivals; all at once "
                "on the right), one line per method and budget, the baseline dashed; crosses: failed rates",
            )
        )
        section.parts.append(rate_table(rows))
        slos = {r["config"].get("slo_ttft_ms") for r in rows} - {None}
        if len(slos) == 1:
            section.parts.append(sustained(rows, slos.pop()))
        else:
            section.parts.append(
                "No TTFT objective was given (serve-bench --slo-ttft-ms): no sustained rate."
            )
        sections.append(section)
    return sections


def serving_compare(results: Results) -> list[Table]:
    """The same serving workload on several machines: TTFT p99 and served requests/s side by side."""
    shared: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results.serving:
        shared[serving_workload(r)[:-1]][machine(r)].append(r)
    tables = []
    for key, groups in sorted(shared.items(), key=lambda kv: str(kv[0])):
        if len(groups) < 2:
            continue
        names = sorted(groups)
        settings = sorted(
            {(r["config"]["method"], budget_label(r["config"]["budget"]), str(r["config"]["request_rate"]))
             for rows in groups.values() for r in rows}
        )  # fmt: skip
        table = Table(
            ["method", "budget", "rate req/s"]
            + [f"{name}: {what}" for name in names for what in ("TTFT p99 ms", "served req/s")],
            [],
            caption=serving_title((*key, "several machines")),
        )
        for method, budget, rate in settings:
            cells = [method, budget, rate]
            for name in names:
                r = next(
                    (
                        x
                        for x in groups[name]
                        if (
                            x["config"]["method"],
                            budget_label(x["config"]["budget"]),
                            str(x["config"]["request_rate"]),
                        )
                        == (method, budget, rate)
                    ),
                    None,
                )
                if r is None or r["status"] != "ok":
                    cells += ["missing" if r is None else r["status"].upper(), "–"]
                else:
                    cells += [_ms(r, "ttft_s", "p99"), fmt(r["metrics"].get("request_throughput_per_s"))]
            table.rows.append(cells)
        tables.append(table)
    return tables
