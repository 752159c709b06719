"""`hired-bench methods`: every method as its spec describes it (the docs' table is this output)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from profiler.cli import options
from profiler.cli.common import out


def method_rows() -> list[dict]:
    """One dict per method, from its spec alone."""
    from hired.methods import METHODS

    return [
        {
            "name": m.name,
            "stage": m.stage,
            "summary": m.summary,
            "budgets": {fidelity: list(kinds) for fidelity, kinds in m.budgets.items()},
            "params": [
                {
                    "name": p.name,
                    "type": p.type.__name__,
                    "default": p.default_text(),
                    "range": p.range_text(),
                    "help": p.help,
                }
                for p in m.params
            ],
            "reference": m.reference,
        }
        for m in METHODS.values()
    ]


def budgets_text(budgets: dict) -> str:
    return "; ".join(f"{fidelity}: {', '.join(kinds)}" for fidelity, kinds in budgets.items())


def params_text(params: list[dict]) -> str:
    return ", ".join(f"{p['name']}={p['default']}" for p in params) or "–"


def markdown() -> str:
    """The methods table and the parameter table, as in docs/methods.md."""
    rows = method_rows()
    lines = [
        "| method | stage | budgets (per fidelity) | parameters (defaults) | summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{r['name']}` | {r['stage']} | {budgets_text(r['budgets'])} | {params_text(r['params'])} | "
        f"{r['summary']} |"
        for r in rows
    ]
    lines += [
        "",
        "| method | parameter | type | range | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{r['name']}` | `{p['name']}` | {p['type']} | {p['range']} | {p['default']} | {p['help']} |"
        for r in rows
        for p in r["params"]
    ]
    return "\n".join(lines) + "\n"


def methods(
    as_json: options.Json = False,
    as_markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the tables as Markdown (as in docs/methods.md).")
    ] = False,
) -> None:
    """Every method: stage, budgets (exact / nearest / released / adaptive) per fidelity, parameters with
    defaults and ranges, and the paper and code it follows. Set parameters with --param NAME=VALUE."""
    if as_json:
        print(json.dumps(method_rows(), indent=1))
        return
    if as_markdown:
        print(markdown(), end="")
        return
    from rich.table import Table

    table = Table(
        title="methods (set parameters with --param NAME=VALUE)", title_justify="left", show_lines=True
    )
    for column in ("method", "stage", "budgets", "parameters (default, range)", "reference"):
        table.add_column(column, overflow="fold")
    for r in method_rows():
        params = "\n".join(f"{p['name']} = {p['default']}; {p['range']}" for p in r["params"]) or "–"
        table.add_row(
            f"{r['name']}\n[dim]{r['summary']}[/]",
            r["stage"],
            budgets_text(r["budgets"]),
            params,
            r["reference"],
        )
    out.print(table)
    out.print(
        "budgets: exact = round(b × N_full) tokens per image; nearest = the nearest count the method's "
        "geometry allows; released = the released code's own arithmetic; adaptive = the method's own count "
        "(--budget adaptive); all = every token (the baseline)",
        highlight=False,
    )
