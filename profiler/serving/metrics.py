"""The serving metrics (docs/metrics.md, "Serving"), defined once, from vLLM's benchmark client's
per-request results at one request rate. Units are in the names; stats objects as everywhere
(median = p50, mean, p90, p99, ...) over the requests that succeeded."""

from __future__ import annotations

from profiler.measure.stats import summarize


def serving_metrics(result: dict, new_tokens: int, slo_ttft_ms: float | None) -> dict:
    ok = [not error for error in result["errors"]]
    ttfts = [t for t, good in zip(result["ttfts"], ok, strict=True) if good]
    latencies = [t for t, good in zip(result["latencies"], ok, strict=True) if good]
    outputs = [n for n, good in zip(result["output_lens"], ok, strict=True) if good]
    duration = result["duration"]
    tpots = [
        (e2e - first) / (n - 1) for e2e, first, n in zip(latencies, ttfts, outputs, strict=True) if n > 1
    ]
    within = None if slo_ttft_ms is None else sum(t * 1e3 <= slo_ttft_ms for t in ttfts)
    return {
        "duration_s": duration,
        "completed_requests": len(ttfts),
        "failed_requests": len(ok) - len(ttfts),
        "request_throughput_per_s": len(ttfts) / duration,
        "output_tokens_per_s": sum(outputs) / duration,
        "goodput_requests_per_s": None if within is None else within / duration,
        "slo_ttft_ms": slo_ttft_ms,
        "ttft_s": summarize(ttfts),
        "tpot_s": summarize(tpots),
        "itl_s": summarize(
            [gap for gaps, good in zip(result["itls"], ok, strict=True) if good for gap in gaps]
        ),
        "e2e_s": summarize(latencies),
        "output_tokens": summarize(outputs),
        "max_concurrent_requests": result.get("max_concurrent_requests"),
        "errors": sorted({e.strip().splitlines()[-1][:200] for e in result["errors"] if e and e.strip()})[:5],
    }
