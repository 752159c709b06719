"""The report's figures (matplotlib, PNG and SVG). Failed points are marked, never drawn as zero."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no display
from matplotlib.ticker import MaxNLocator

from hired.methods import METHODS
from hired.spec import BASELINE
from profiler.results.views import median, varying_params
from reports.data import method_key, method_rank, peak_memory, spread
from reports.document import Figure
from workloads.point import budget_label

COLOURS = {
    BASELINE: "#4b5563",
    "hired": "#2a6f97",
    "prumerge": "#d1495b",
    "prumerge+": "#e09f3e",
    "visionzip": "#00798c",
    "divprune": "#7b2cbf",
    "globalcom2": "#6a994e",
    "random": "#66a182",
    "pool": "#8d6a9f",
    "resize": "#bc6c25",
    "fastv": "#c9184a",
    "dart": "#3a86ff",
}
PHASE_COLOURS = {
    "preprocess": "#9aa5b1",
    "vision": "#2a6f97",
    "select": "#e09f3e",
    "project": "#8d6a9f",
    "prefill": "#d1495b",
}
FAILED = "#b42318"
METRICS = {
    "e2e_tokens_per_s": "end-to-end tokens/s",
    "decode_tokens_per_s": "decode tokens/s",
    "ttft_s": "time to first token (s)",
    "peak_memory": "peak memory (GiB)",
}


def value(record: dict, metric: str) -> tuple[float | None, float | None]:
    """(median, stdev) of a metric, or (None, None) where it was not measured or the point failed."""
    if record["status"] != "ok":
        return None, None
    if metric == "peak_memory":
        return peak_memory(record)[0], None
    return median(record, metric), spread(record, metric)


def inside_llm(record: dict) -> bool:
    """An LLM-stage method (FastV, DART): its tokens are dropped at decoder layer K, not before the LLM."""
    method = METHODS.get(record["config"]["method"])
    return method is not None and method.stage == "llm"


def kept_share(record: dict) -> float | None:
    """Share of N_full kept: the achieved budget, so adaptive methods sit where they land; for an
    LLM-stage method the token-layer share (K n0 + (L - K) kept) / (L N_full), what it computes."""
    visual = (record.get("metrics") or {}).get("visual_tokens")
    if visual and inside_llm(record) and visual.get("token_layer_share"):
        return float(np.mean(visual["token_layer_share"]))
    if visual and visual.get("achieved_budget"):
        return float(np.mean(visual["achieved_budget"]))
    budget = record["config"].get("budget")
    return budget if isinstance(budget, float | int) else None


PAGE_WIDTH_IN = 11.0  # the report's column at 130 dpi: figures fill the page width


def _figure(panels: int, width: float = 3.2, height: float = 3.6) -> tuple[MplFigure, list]:
    """width: the least a panel gets; the figure is at least the page's width."""
    fig = MplFigure(figsize=(max(width * panels, PAGE_WIDTH_IN), height + 0.9), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, list(axes)


def _mark_failure(ax, x: float, status: str) -> None:
    """A red cross at the top of the panel where a point ran out of memory or failed."""
    ax.plot(
        [x],
        [0.97],
        marker="x",
        color=FAILED,
        markersize=9,
        transform=ax.get_xaxis_transform(),
        clip_on=False,
        gid="failed",
    )
    ax.annotate(
        status.upper(),
        (x, 0.97),
        xycoords=("data", "axes fraction"),
        xytext=(0, -13),
        textcoords="offset points",
        ha="center",
        fontsize=7,
        color=FAILED,
    )


def _series(ax, points: list[tuple[float, dict]], metric: str, colour: str | None, **style) -> None:
    """One line of (x, record): measured medians with stdev error bars; failed points crossed at their x."""
    xs, ys, es = [], [], []
    for x, record in points:
        y, e = value(record, metric)
        if y is None:
            _mark_failure(ax, x, record["status"] if record["status"] != "ok" else "n/a")
        else:
            xs.append(x)
            ys.append(y)
            es.append(e or 0.0)
    if xs:
        if len(set(xs)) < len(xs):  # several runs at one x (two baselines): points, not a zigzag line
            style["linestyle"] = "none"
        ax.errorbar(xs, ys, yerr=es, marker="o", markersize=5, capsize=3, color=colour, **style)


def _methods(points: list[dict]) -> list[str]:
    """The methods present, in the one order reports use (reports.data.method_rank)."""
    return sorted({r["config"]["method"] for r in points}, key=lambda m: (method_rank(m), m))


LINESTYLES = ("-", ":", "-.", (0, (5, 1)))


def param_labels(points: list[dict]) -> dict[int, str]:
    """id(record) -> the parameters telling it apart from other points of its method, over a figure."""
    return dict(zip(map(id, points), varying_params(points), strict=True))


def _series_of(points: list[dict], labels: dict[int, str]) -> list[tuple[str, str, list[dict]]]:
    """(method, label, records) per line: one per method and parameter setting, in method order."""
    out = []
    for method in _methods(points):
        mine = [r for r in points if r["config"]["method"] == method]
        for params in dict.fromkeys(labels[id(r)] for r in mine):
            chosen = [r for r in mine if labels[id(r)] == params]
            out.append((method, f"{method} {params}".strip(), chosen))
    return out


def by_setting(points: list[dict]) -> dict[str, list[dict]]:
    """'method budget params' -> its points, in method order: one mark per setting where runs repeat."""
    labels = param_labels(points)
    groups: dict[str, list[dict]] = {}
    for r in sorted(points, key=method_key):
        c = r["config"]
        groups.setdefault(f"{c['method']} {budget_label(c['budget'])} {labels[id(r)]}".strip(), []).append(r)
    return groups


def _style(method: str, index_within_method: int) -> dict:
    return {"color": COLOURS.get(method), "linestyle": LINESTYLES[index_within_method % len(LINESTYLES)]}


def _from_zero(ax) -> None:
    """Throughput, time and memory axes start at 0: a 1.5x gain must not look like 10x."""
    ax.set_ylim(bottom=0)


def _legend(fig: MplFigure, axes: list) -> None:
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        columns = max(2, int(fig.get_figwidth() / 1.9))  # as many as fit the figure's width
        fig.legend(
            [handles[label] for label in labels],
            labels,
            loc="outside lower center",
            ncols=min(len(labels), columns),
            frameon=False,
            fontsize=8,
        )


MAX_BASELINE_LINES = 3  # more baselines in one panel (several runs) are drawn as their median


def by_budget(points: list[dict], metric: str, title: str) -> MplFigure:
    """metric against the share of visual tokens kept; one line per method, one panel per batch size."""
    batches = sorted({r["config"]["batch_size"] for r in points})
    labels = param_labels(points)
    fig, axes = _figure(len(batches))
    for ax, batch in zip(axes, batches, strict=True):
        rows = [r for r in points if r["config"]["batch_size"] == batch]
        bases = [(r, value(r, metric)[0]) for r in rows if r["config"]["method"] == BASELINE]
        found = [y for _, y in bases if y is not None]
        if failed := Counter(r["status"].upper() for r, y in bases if y is None):
            said = ", ".join(f"{n} × {status}" if n > 1 else status for status, n in failed.items())
            ax.text(0.02, 0.9, f"all tokens: {said}", transform=ax.transAxes, color=FAILED, fontsize=8)
        if len(found) > MAX_BASELINE_LINES:  # one line for many runs: their median, said so
            found, label = [float(np.median(found))], f"all tokens (median of {len(found)} baselines)"
        else:
            label = "all tokens (baseline)"
        for y in found:
            ax.axhline(y, color=COLOURS[BASELINE], linestyle="--", linewidth=1.2, label=label)
        series = [s for s in _series_of(rows, labels) if s[0] != BASELINE]
        seen: dict[str, int] = {}
        for i, (method, label, mine) in enumerate(series):
            nudge = (i - (len(series) - 1) / 2) * 0.7  # keeps methods at the same budget apart
            mine = sorted(mine, key=lambda r: kept_share(r) or 0)
            adaptive = any(isinstance(r["config"].get("budget"), str) for r in mine)
            shares = [(kept_share(r), r) for r in mine]
            style = _style(method, seen.get(method, 0))
            seen[method] = seen.get(method, 0) + 1
            _series(
                ax,
                [(100 * x + nudge, r) for x, r in shares if x is not None],
                metric,
                style.pop("color"),
                label=label
                + (" (adaptive)" if adaptive else "")
                + (" (x: token-layer share)" if any(inside_llm(r) for r in mine) else ""),
                markerfacecolor="white" if adaptive else COLOURS.get(method),
                **style,
            )
        ax.set_title(f"batch {batch}", fontsize=10)
        # short: a longer label overlapped the next panel's; LLM-stage methods say "x: token-layer share"
        ax.set_xlabel("visual tokens kept (% of all)")
        ax.set_ylabel(METRICS[metric])
        ax.set_xlim(0, 105)
        _from_zero(ax)
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig


def by_batch(points: list[dict], metric: str, budget, title: str) -> MplFigure:
    """metric against batch size at one budget; one line per method, the baseline dashed."""
    fig, (ax,) = _figure(1)
    rows = [r for r in points if r["config"]["method"] == BASELINE or r["config"].get("budget") == budget]
    seen: dict[str, int] = {}
    for method, label, mine in _series_of(rows, param_labels(rows)):
        mine = sorted(mine, key=lambda r: r["config"]["batch_size"])
        style = _style(method, seen.get(method, 0)) if method != BASELINE else {"linestyle": "--"}
        seen[method] = seen.get(method, 0) + 1
        _series(
            ax,
            [(r["config"]["batch_size"], r) for r in mine],
            metric,
            COLOURS.get(method),
            label="all tokens (baseline)" if method == BASELINE else f"{label} {budget_label(budget)}",
            linestyle=style["linestyle"],
        )
    batches = sorted({r["config"]["batch_size"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (images per request)")
    ax.set_ylabel(METRICS[metric])
    _from_zero(ax)
    fig.suptitle(title, fontsize=10)
    _legend(fig, [ax])
    return fig


PHASE_BARS = 40  # bars per panel: a figure a person can read (and that matplotlib draws in seconds)


def phases(points: list[dict], title: str) -> MplFigure | None:
    """TTFT split into preprocess / vision / select / project / prefill, stacked, per method, budget and
    parameter setting (the median over points that share them) and batch size."""
    rows = [r for r in points if r["status"] == "ok" and (r.get("metrics") or {}).get("phases_s")]
    if not rows:
        return None
    batches = sorted({r["config"]["batch_size"] for r in rows})
    panels = {batch: by_setting([r for r in rows if r["config"]["batch_size"] == batch]) for batch in batches}
    tallest = min(PHASE_BARS, max(map(len, panels.values())))
    fig, axes = _figure(len(batches), height=0.5 + 0.42 * tallest + 1.2)
    for ax, batch in zip(axes, batches, strict=True):
        labels = list(panels[batch])[:PHASE_BARS]
        left = np.zeros(len(labels))
        for phase, colour in PHASE_COLOURS.items():
            widths = np.array(
                [
                    np.median(
                        [(r["metrics"]["phases_s"].get(phase) or {}).get("median") or 0.0 for r in group]
                    )
                    for group in (panels[batch][label] for label in labels)
                ]
            )
            ax.barh(labels, widths, left=left, color=colour, label=phase, height=0.65)
            left += widths
        ax.invert_yaxis()
        ax.set_xlabel("seconds to the first token")
        more = len(panels[batch]) - len(labels)
        ax.set_title(
            f"batch {batch}" + (f" (first {len(labels)} of {len(panels[batch])})" if more else ""),
            fontsize=10,
        )
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig


def boundaries(rows: list[dict], title: str) -> MplFigure:
    """Largest batch that fits per method and budget: measured bars, predicted diamonds.

    rows: {"method", "budget", "largest", "failing", "predicted", "source"} per method x budget.
    """
    budgets = list(dict.fromkeys(budget_label(r["budget"]) for r in rows))
    methods = _methods([{"config": {"method": r["method"]}} for r in rows])
    fig, (ax,) = _figure(1, height=3.8)
    width = min(0.8 / max(len(methods), 1), 0.3)
    for i, method in enumerate(methods):
        for r in (r for r in rows if r["method"] == method):
            x = budgets.index(budget_label(r["budget"])) + (i - (len(methods) - 1) / 2) * width
            if r["largest"] is not None:
                hatch = "//" if r["source"] == "sweep" else None
                ax.bar(
                    x,
                    r["largest"],
                    width * 0.92,
                    color=COLOURS.get(method),
                    hatch=hatch,
                    edgecolor="white",
                    label="all tokens (baseline)" if method == BASELINE else method,
                )
                text = f"{r['largest']}" + ("+" if r["failing"] is None else "")
                ax.annotate(
                    text,
                    (x, r["largest"]),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                )
            if r["predicted"] is not None:
                ax.plot(
                    [x],
                    [r["predicted"]],
                    marker="D",
                    markersize=6,
                    markerfacecolor="white",
                    markeredgecolor="black",
                    linestyle="none",
                    label="predicted (memory model)",
                )
    ax.set_xticks(range(len(budgets)), [("all tokens" if b == "100%" else b) for b in budgets])
    ax.set_xlim(-0.6, len(budgets) - 0.4)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("visual-token budget")
    ax.set_ylabel("largest batch that fits")
    fig.suptitle(title, fontsize=10)
    _legend(fig, [ax])
    return fig


def compare(groups: dict[str, list[dict]], metric: str, title: str) -> MplFigure:
    """Grouped bars: one group per method@budget and batch, one bar per machine."""
    machines = list(groups)
    records = sorted(
        (r for rows in groups.values() for r in rows),
        key=lambda r: (r["config"]["batch_size"], method_key(r)),
    )
    labels = list(dict.fromkeys(_bar_label(r) for r in records))
    fig, (ax,) = _figure(1, width=1.15 * len(labels), height=3.8)
    width = 0.8 / len(machines)
    palette = ["#2a6f97", "#d1495b", "#66a182", "#e09f3e", "#8d6a9f"]
    for i, name in enumerate(machines):
        for r in groups[name]:
            x = labels.index(_bar_label(r)) + (i - (len(machines) - 1) / 2) * width
            y, e = value(r, metric)
            if y is None:
                _mark_failure(ax, x, r["status"] if r["status"] != "ok" else "n/a")
            else:
                ax.bar(
                    x, y, width * 0.92, yerr=e or None, capsize=2, color=palette[i % len(palette)], label=name
                )
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(METRICS[metric])
    fig.suptitle(title, fontsize=10)
    _legend(fig, [ax])
    return fig


def _bar_label(record: dict) -> str:
    c = record["config"]
    return f"{c['method']} {budget_label(c['budget'])}\nbatch {c['batch_size']}"


def save(fig: MplFigure, folder: Path, name: str, caption: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    fig.savefig(png, dpi=130)
    fig.savefig(svg)
    return Figure(png, svg, caption)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better on both), by ascending x."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front[::-1]


AGREEMENT_AXES = {"ttft": "TTFT speed-up (× baseline)", "e2e": "end-to-end tokens/s (× baseline)"}


def speed_vs_agreement(
    rows: list[dict], speedups: dict[int, tuple], title: str, meaningless: bool
) -> MplFigure:
    """Speed-up against agreement with the full model, one point per method, budget and parameter setting
    (the median over the runs that share them), the Pareto front dashed; two panels (TTFT, e2e tokens/s).
    speedups: id(record) -> (TTFT, e2e) ratios. With random weights every point is greyed under the
    label that says the x axis means nothing."""
    fig, axes = _figure(2, height=3.8)
    labels, groups = param_labels(rows), by_setting(rows)
    for ax, (which, ylabel) in zip(axes, AGREEMENT_AXES.items(), strict=True):
        drawn = []
        for mine in groups.values():
            pairs = [
                (r["metrics"]["agreement"]["prefix"]["mean"], speedups[id(r)][0 if which == "ttft" else 1])
                for r in mine
            ]
            pairs = [(x, y) for x, y in pairs if y is not None]
            if not pairs:
                continue
            x, y = (float(np.median(values)) for values in zip(*pairs, strict=True))
            r = mine[0]
            method = r["config"]["method"]
            colour = COLOURS.get(method, "#333333")
            baseline = method == BASELINE
            ax.plot(
                [x],
                [y],
                marker="s" if baseline else "o",
                markersize=7,
                linestyle="none",
                color=colour,
                alpha=0.45 if meaningless else 1.0,
                label="all tokens (baseline)" if baseline else f"{method} {labels[id(r)]}".strip(),
            )
            if not baseline:
                ax.annotate(
                    budget_label(r["config"]["budget"]),
                    (x, y),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color="#555555",
                )
            drawn.append((x, y))
        front = pareto_front(drawn)
        if len(front) > 1:
            xs, ys = zip(*front, strict=True)
            ax.plot(xs, ys, linestyle="--", color="#111111", linewidth=1, alpha=0.6, label="Pareto front")
        if meaningless:
            ax.text(
                0.5,
                0.12,
                "random weights:\nagreement carries no meaning",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=13,
                color="#9aa5b1",
                alpha=0.9,
                gid="meaningless",
            )
        ax.set_xlim(-0.03, 1.05)
        ax.set_xlabel("agreement: mean share of leading tokens equal to the baseline's")
        ax.set_ylabel(ylabel)
        _from_zero(ax)
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig


def accuracy_by_budget(records: list[dict], title: str, meaningless: bool) -> MplFigure:
    """Task accuracy against the share of visual tokens kept, one line per method and one panel per
    task metric; the baseline's accuracy a dashed line."""
    panels = list(dict.fromkeys((r["metrics"]["task"], r["metrics"]["metric"]) for r in records))
    fig, axes = _figure(len(panels))
    for ax, (task, metric) in zip(axes, panels, strict=True):
        mine = [r for r in records if (r["metrics"]["task"], r["metrics"]["metric"]) == (task, metric)]
        for method in _methods(mine):
            rows = [r for r in mine if r["config"]["method"] == method]
            if method == BASELINE:
                for r in rows:
                    ax.axhline(
                        r["metrics"]["value"],
                        color=COLOURS[BASELINE],
                        linestyle="--",
                        linewidth=1.2,
                        label="all tokens (baseline)",
                    )
                continue
            shares = sorted(
                ((r["metrics"].get("achieved_budget") or r["config"]["budget"], r) for r in rows),
                key=lambda pair: pair[0] if isinstance(pair[0], float | int) else -1.0,
            )
            shares = [(x, r) for x, r in shares if isinstance(x, float | int)]
            ax.errorbar(
                [100 * x for x, _ in shares],
                [r["metrics"]["value"] for _, r in shares],
                yerr=[r["metrics"].get("stderr") or 0.0 for _, r in shares],
                marker="o",
                markersize=5,
                capsize=3,
                color=COLOURS.get(method),
                alpha=0.45 if meaningless else 1.0,
                label=method,
            )
        if meaningless:
            ax.text(
                0.5, 0.5, "random weights:\naccuracy carries no meaning", transform=ax.transAxes,
                ha="center", va="center", fontsize=12, color="#9aa5b1", gid="meaningless",
            )  # fmt: skip
        ax.set_title(f"{task} · {metric}", fontsize=10)
        ax.set_xlabel("visual tokens kept (% of all candidates)")
        ax.set_ylabel(metric)
        ax.set_xlim(0, 105)
        if all(0 <= r["metrics"]["value"] <= 1 for r in mine):  # a share: its whole range
            ax.set_ylim(0, 1.02)
        else:
            _from_zero(ax)
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig


SERVING_PANELS = (
    ("ttft_s", "p99", 1e3, "TTFT p99 (ms)"),
    ("output_tokens_per_s", None, 1.0, "output tokens/s"),
)


def rate_positions(records: list[dict]) -> dict:
    """x of each request rate: its value; "inf" (every request at once) one step right of the largest."""
    finite = sorted({r["config"]["request_rate"] for r in records} - {"inf"})
    top = finite[-1] * 2 if finite else 1.0
    return {**{rate: rate for rate in finite}, "inf": top}


def by_rate(records: list[dict], title: str) -> MplFigure:
    """serve-bench: TTFT p99 and output tokens/s against the request rate; one line per method and budget
    (the baseline dashed), failed rates crossed."""
    positions = rate_positions(records)
    fig, axes = _figure(len(SERVING_PANELS), width=5.0)
    groups = by_setting(records)
    for ax, (metric, stat, scale, label) in zip(axes, SERVING_PANELS, strict=True):
        for name, rows in groups.items():
            method = rows[0]["config"]["method"]
            xs, ys = [], []
            for r in sorted(rows, key=lambda r: positions[r["config"]["request_rate"]]):
                x = positions[r["config"]["request_rate"]]
                found = (r.get("metrics") or {}).get(metric) if r["status"] == "ok" else None
                y = found.get(stat) if isinstance(found, dict) and stat else found
                y = y if isinstance(y, (int, float)) else None
                if y is None:
                    _mark_failure(ax, x, r["status"] if r["status"] != "ok" else "n/a")
                else:
                    xs.append(x)
                    ys.append(y * scale)
            style = {"linestyle": "--"} if method == BASELINE else {}
            ax.plot(xs, ys, marker="o", markersize=5, color=COLOURS.get(method), label=name, **style)
        ax.set_xscale("log", base=2)
        ticks = sorted(positions.values())
        names = {x: ("all at once" if rate == "inf" else f"{rate:g}") for rate, x in positions.items()}
        ax.set_xticks(ticks, [names[x] for x in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("request rate (requests/s, Poisson arrivals)")
        ax.set_ylabel(label)
        _from_zero(ax)
    fig.suptitle(title, fontsize=10)
    _legend(fig, axes)
    return fig
