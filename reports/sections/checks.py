"""The instrument checks section."""

from __future__ import annotations

from reports.data import Results
from reports.document import Section, Table


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
