"""`hired-bench report` and `compare` on committed fixture results (tests/fixtures, synthetic numbers)."""

import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reports import figures
from reports.cli import app
from reports.data import load_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
A, B = FIXTURES / "results_gpu_a.jsonl", FIXTURES / "results_gpu_b.jsonl"
RUNNER = CliRunner()
METRICS = ["e2e_tokens_per_s", "decode_tokens_per_s", "ttft_s", "peak_memory"]


def raw(path):
    """The fixture's point records, read here without the suite's reader."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "kind" not in record:
            rows.append(record)
    return rows


def find(rows, method, budget, batch):
    return next(
        r
        for r in rows
        if (r["config"]["method"], r["config"]["budget"], r["config"]["batch_size"])
        == (method, budget, batch)
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = RUNNER.invoke(app, ["report", str(FIXTURES), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.slow
def test_every_expected_figure_is_a_real_image(report):
    expected = [f"w{w}-{m}-vs-{axis}" for w in (1, 2) for m in METRICS for axis in ("budget", "batch")]
    expected += [
        "w1-ttft-phases",
        "w2-ttft-phases",
        "oom-boundary-1",
        "oom-boundary-2",
        "compare-1-e2e_tokens_per_s",
        "compare-1-ttft_s",
    ]
    found = sorted(p.stem for p in (report / "figures").glob("*.png"))
    assert found == sorted(expected)
    for name in expected:
        svg = (report / "figures" / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        with Image.open(report / "figures" / f"{name}.png") as img:
            pixels = np.asarray(img.convert("L"), dtype=float)
        assert img.size[0] >= 500 and img.size[1] >= 300
        assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # drawn on, not a blank canvas


def test_markdown_tables_hold_the_right_numbers(report):
    text = (report / "report.md").read_text()
    rows = raw(A)
    base, hired = find(rows, "none", 1.0, 2), find(rows, "hired", 0.2, 2)

    def med(r, m):
        return statistics.median(r["metrics"][m]["values"])

    speedup = med(base, "ttft_s") / med(hired, "ttft_s")
    throughput = med(hired, "e2e_tokens_per_s") / med(base, "e2e_tokens_per_s")
    saved = (
        1
        - hired["metrics"]["peak_memory_gib"]["torch_allocated"]
        / base["metrics"]["peak_memory_gib"]["torch_allocated"]
    )
    line = next(line for line in text.splitlines() if line.startswith("| 2 | hired | 20% | 576 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5] == f"{speedup:.2f}×" and cells[7] == f"{throughput:.2f}×" and cells[10] == f"{saved:.0%}"
    # GPU B's baseline ran out of memory at batch 4: said so, no numbers made up
    assert "| 4 | none (baseline) | 100% | – | OOM | – | – | – | – | – | – | – |" in text
    # the paper side by side, batch 1 HiRED 20%: the paper's 2.30 tok/s, 4.21 s, 13.76 GB
    paper = next(line for line in text.splitlines() if line.startswith("| 1 | HiRED 20% (paper, random)"))
    assert "| 2.30 |" in paper and "| 4.21 |" in paper and "| 13.76 |" in paper
    # nothing dropped silently: the failed point, the older suite version, the skipped line
    assert "ERROR: ValueError: PruMerge+ adaptive: no outlier tokens (r = 0)" in text
    assert "0.0.9 (1)" in text and "1 line(s) not used" in text and "not JSON (a half-written line?)" in text
    assert "energy_j: this GPU has no NVML total-energy counter | 11 |" in text


def test_boundary_table(report):
    text = (report / "report.md").read_text()
    assert "| hired | 20% | 12 | 13 | 14 | search |" in text  # the search record, with its prediction
    assert "| none | 100% | 2 | 4 | n/a | sweep |" in text  # GPU B: largest ok below the first OOM


def test_failed_points_are_never_drawn_as_zero():
    rows = raw(B)
    fig = figures.by_batch(rows, "peak_memory", 0.2, "t")
    ax = fig.axes[0]
    assert any(t.get_text() == "OOM" for t in ax.texts)
    marks = [line for line in ax.get_lines() if line.get_gid() == "failed"]
    drawn = [y for line in ax.get_lines() if line.get_gid() != "failed" for y in line.get_ydata()]
    assert len(marks) == 1 and drawn and min(drawn) > 1  # the OOM baseline at batch 4: a cross, not a 0
    oom = find(rows, "none", 1.0, 4)
    assert figures.value(oom, "ttft_s") == (None, None)


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"https?://", page)
    assert page.count('src="data:image/png;base64,') == len(list((report / "figures").glob("*.png")))


def chromium() -> str:
    """Debian's chromium, installed when missing (skipped, with the reason, where it cannot be)."""
    path = shutil.which("chromium")
    if path:
        return path
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium: {' '.join(step)}: {done.stderr.strip()[-200:]}")
    return shutil.which("chromium") or pytest.skip("chromium still not found after installing it")


@pytest.mark.slow
def test_html_renders_in_headless_chromium(report, tmp_path):
    browser = chromium()
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1300,1800",
    ]
    page = (report / "report.html").resolve().as_uri()
    subprocess.run([browser, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert "<h1>hired-bench report</h1>" in dom.stdout and dom.stdout.count("<img") > 10
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not a blank page


def test_compare_two_gpus(tmp_path):
    out = tmp_path / "cmp"
    result = RUNNER.invoke(app, ["compare", str(A), str(B), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    text = (out / "report.md").read_text()
    a, b = find(raw(A), "hired", 0.2, 4), find(raw(B), "hired", 0.2, 4)
    ratio = statistics.median(b["metrics"]["e2e_tokens_per_s"]["values"]) / statistics.median(
        a["metrics"]["e2e_tokens_per_s"]["values"]
    )
    line = next(line for line in text.splitlines() if line.startswith("| hired | 20% | 4 |"))
    assert line.rstrip(" |").endswith(f"{ratio:.2f}×")
    assert "| none | 100% | 4 |" in text and "| OOM | OOM |" in text  # GPU B's failure, shown as such
    for metric in ("e2e_tokens_per_s", "ttft_s"):
        assert (out / "figures" / f"compare-1-{metric}.png").stat().st_size > 10_000
    alone = RUNNER.invoke(app, ["compare", str(A), "--out", str(tmp_path / "x")])
    assert alone.exit_code == 2 and "needs results from two machines" in alone.stderr


@pytest.mark.slow
def test_compare_two_gpus_from_one_file(tmp_path):
    # a Ray sweep with `accelerators` writes every GPU type's records into one file
    both = tmp_path / "both.jsonl"
    both.write_bytes(A.read_bytes() + b"\n" + B.read_bytes())  # A ends in a half line
    one = RUNNER.invoke(app, ["compare", str(both), "--out", str(tmp_path / "one")])
    two = RUNNER.invoke(app, ["compare", str(A), str(B), "--out", str(tmp_path / "two")])
    assert one.exit_code == 0 and two.exit_code == 0, one.stderr + two.stderr
    assert "| hired | 20% | 4 |" in (tmp_path / "one" / "report.md").read_text()
    tables = [(tmp_path / d / "report.md").read_text().split("| method |", 1)[1] for d in ("one", "two")]
    assert tables[0] == tables[1]


def test_report_input_errors(tmp_path):
    missing = RUNNER.invoke(app, ["report", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "results not found" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = RUNNER.invoke(app, ["report", str(empty)])
    assert none.exit_code == 2 and "no .jsonl result files" in none.stderr


def test_loading_sorts_records_by_kind():
    loaded = load_results([FIXTURES])
    assert len(loaded.points) == 25 and len(loaded.boundaries) == 1 and len(loaded.predictions) == 1
    assert loaded.skipped_lines == 1 and loaded.suite_versions["0.0.9"] == 1


def test_pareto_front():
    points = [(1.0, 1.0), (0.9, 2.0), (0.5, 1.5), (0.4, 3.0), (0.2, 2.5), (0.9, 1.8)]
    assert figures.pareto_front(points) == [(0.4, 3.0), (0.9, 2.0), (1.0, 1.0)]


def agreeing(weights: str) -> list[dict]:
    """Fixture A's ok points at batch 2, given agreement (made up: the fewer tokens, the less) and weights."""
    rows = [r for r in raw(A) if r["config"]["batch_size"] == 2 and r["status"] == "ok"]
    for r in rows:
        budget = r["config"]["budget"]
        share = (
            1.0
            if r["config"]["method"] == "none"
            else 0.4 + budget + 0.1 * (r["config"]["method"] == "hired")
        )
        r["config"]["weights"] = weights
        r["metrics"]["agreement"] = {
            "first_token": min(1.0, share + 0.1),
            "prefix": {"mean": share, "median": share, "values": [share]},
            "kl_first": {"mean": round(1 - share, 3), "median": round(1 - share, 3), "values": [1 - share]},
        }
    return rows


def accuracy(method, budget, value, weights, achieved=None):
    return {
        "kind": "accuracy",
        "schema_version": 1,
        "run_id": "e",
        "status": "ok",
        "error": None,
        "config": {"model": "llava-next-7b", "weights": weights, "method": method, "budget": budget,
                   "fidelity": "paper", "limit": 50, "task": "textvqa_val", "tasks": ["textvqa_val"]},
        "hardware": {"gpu_name": "Fixture GPU A"},
        "metrics": {"task": "textvqa_val", "metric": "exact_match", "value": value, "stderr": 0.05,
                    "samples": 50, "achieved_budget": achieved if achieved is not None else budget},
    }  # fmt: skip


def test_speed_against_agreement_draws_the_pareto_front():
    rows = agreeing("pretrained")
    speedups = {id(r): (1.0 / r["config"]["budget"] ** 0.5, 1.2) for r in rows}
    fig = figures.speed_vs_agreement(rows, speedups, "t", meaningless=False)
    ttft = fig.axes[0]
    drawn = [
        (line.get_xdata()[0], line.get_ydata()[0]) for line in ttft.get_lines() if len(line.get_xdata()) == 1
    ]
    front = next(line for line in ttft.get_lines() if line.get_label() == "Pareto front")
    assert list(zip(front.get_xdata(), front.get_ydata(), strict=True)) == figures.pareto_front(drawn)
    assert len(drawn) == len(rows) and not any(t.get_gid() == "meaningless" for t in ttft.texts)
    random_rows = agreeing("random")
    greyed = figures.speed_vs_agreement(random_rows, {id(r): (1.5, 1.2) for r in random_rows}, "t", True)
    assert all(any(t.get_gid() == "meaningless" for t in ax.texts) for ax in greyed.axes[:2])


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["pretrained", "random"])
def test_report_places_agreement_and_accuracy_beside_speed(tmp_path, weights):
    rows = agreeing(weights)
    rows += [
        accuracy("none", 1.0, 0.64, weights, achieved=1.02),
        accuracy("hired", 0.2, 0.55, weights),
        accuracy("hired", 0.4, 0.61, weights),
        accuracy("prumerge", "adaptive", 0.5, weights, achieved=0.06),
    ]
    rows.append({**accuracy("hired", 0.1, 0.3, weights), "metrics": {"task": "textvqa_val"}})  # no value
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = RUNNER.invoke(app, ["report", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "an accuracy record without task, metric or value" in result.stderr
    text = (out / "report.md").read_text()
    hired = next(line for line in text.splitlines() if line.startswith("| 2 | hired | 20% |"))
    cell = "0.80 · 0.70 · 0.300"  # first token · mean prefix · mean KL of the made-up agreement
    assert (f"*{cell}*" in hired) == (weights == "random") and cell in hired
    assert ("Agreement is greyed: random weights" in text) == (weights == "random")
    assert "## Task accuracy (lmms-eval)" in text
    assert "| textvqa_val | exact_match | hired | 40% |" in text and "| 50 | 40% |" in text
    for name in ("w1-speed-vs-agreement", "accuracy-1"):
        with Image.open(out / "figures" / f"{name}.png") as img:
            assert np.asarray(img.convert("L"), dtype=float).std() > 10
    page = (out / "report.html").read_text()
    assert ('class="num muted">0.80 · 0.70 · 0.300' in page) == (weights == "random")


def test_paths_are_printed_as_written_not_as_rich_markup(tmp_path):
    out = tmp_path / "[eval]" / "out"  # rich would read [eval] as a style tag and drop it
    result = RUNNER.invoke(app, ["compare", str(A), str(B), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert f"{out}/report.md and {out}/report.html" in result.stderr.replace("\n", "")
    (tmp_path / "[ro]").write_text("a file, not a folder")
    refused = RUNNER.invoke(app, ["compare", str(A), str(B), "--out", str(tmp_path / "[ro]" / "x")])
    assert refused.exit_code == 2 and "[ro]" in refused.stderr


def test_failed_points_without_a_fingerprint_are_no_machine_to_compare(tmp_path):
    """What the first GPU study wrote when a capped model group failed to open: points with no hardware.
    They are an unknown machine (not a CPU), keep the cap they asked for, and are not compared."""
    from profiler.orchestrate.local import planned_config
    from reports.data import machine
    from reports.sections.compare import compare_section
    from workloads.point import Point

    measured = raw(A)
    config = planned_config(Point("hired", 0.2, model="llava-next-7b", memory_cap="24GiB"), "paper-capped")
    failed = {**measured[0], "status": "error", "error": "InputError: x", "hardware": {}, "config": config}
    assert config["memory_cap_gib"] == 24.0
    assert machine(failed) == "unknown machine, cap 24 GiB"
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*measured, failed]))
    results = load_results([path])
    assert len({machine(r) for r in results.points}) == 2
    assert compare_section(results, tmp_path / "figures") is None


def test_a_vllm_workload_shows_its_kv_cache_against_the_baseline(tmp_path):
    """A real `run --engine vllm` (tiny-vllm, CPU, batch 4: none and hired at 20%): the report's KV table
    holds each request's blocks and vLLM's concurrency, each against the baseline of the same engine."""
    source = Path(__file__).parents[1] / "fixtures" / "vllm" / "run-b4.jsonl"
    result = RUNNER.invoke(app, ["report", str(source), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    assert "vllm engine" in text and "| batch | method | budget | KV blocks / request |" in text
    rows = raw(source)
    base, hired = (find(rows, m, b, 4)["metrics"]["kv_cache"] for m, b in (("none", 1.0), ("hired", 0.2)))
    blocks = statistics.median(hired["blocks"]) / statistics.median(base["blocks"])
    concurrency = hired["max_concurrency"] / base["max_concurrency"]
    assert f"| 4 | hired | 20% | {statistics.median(hired['blocks']):g} | {blocks:.2f}× |" in text
    assert f"| {hired['max_concurrency']:.0f} | {concurrency:.2f}× |" in text
    assert blocks < 0.5 and concurrency > 2  # 20% of the visual tokens: a fraction of the blocks


SERVING = Path(__file__).parents[1] / "fixtures" / "serving" / "cpu.jsonl"


def test_serving_records_get_a_section_with_the_rate_plot_and_the_rate_sustained_under_the_slo(tmp_path):
    """A real serve-bench run (tiny-vllm on this CPU: none, hired and pool at 20%, rates 1, 4 and all at
    once, SLO 500 ms; raw values stripped): its section, figure and tables hold the records' numbers."""
    rows = [json.loads(line) for line in SERVING.read_text().splitlines()]
    result = RUNNER.invoke(app, ["report", str(SERVING), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    assert "## Under load 1: tiny-vllm" in text and "9 serving records" in result.stderr
    image = Image.open(tmp_path / "figures" / "serving-1.png")
    assert image.size[0] > 1000 and len(np.unique(np.asarray(image.convert("L")))) > 10
    for r in rows:
        m, c = r["metrics"], r["config"]
        p99 = f"{m['ttft_s']['p99'] * 1e3:,.4g}"
        assert (
            f"| {c['method']} | 20% | {c['request_rate']} |" in text
            or f"| none | 100% | {c['request_rate']} |" in text
        )
        assert f"| {p99} |" in text
    for method in ("none", "hired", "pool"):
        mine = [r for r in rows if r["config"]["method"] == method and r["metrics"]["ttft_s"]["p99"] <= 0.5]
        best = max(mine, key=lambda r: float(r["config"]["request_rate"]))["config"]["request_rate"]
        budget = "100%" if method == "none" else "20%"
        assert f"| {method} | {budget} | {best} |" in text.split("highest rate with TTFT p99")[1]


def test_compare_puts_serving_records_of_two_machines_side_by_side(tmp_path):
    other = tmp_path / "other.jsonl"
    lines = []
    for line in SERVING.read_text().splitlines():
        r = json.loads(line)
        r["hardware"]["cpu"] = "a second CPU"
        r["metrics"]["ttft_s"]["p99"] *= 2
        lines.append(json.dumps(r))
    other.write_text("\n".join(lines) + "\n")
    result = RUNNER.invoke(app, ["compare", str(SERVING), str(other), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "CPU (a second CPU): TTFT p99 ms" in text and "CPU (AMD EPYC): served req/s" in text
    hired = next(json.loads(x) for x in SERVING.read_text().splitlines() if '"hired"' in x)
    p99 = hired["metrics"]["ttft_s"]["p99"] * 1e3
    rate = hired["config"]["request_rate"]
    assert f"| hired | 20% | {rate} | {p99:,.4g} |" in text and f"| {p99 * 2:,.4g} |" in text  # machine order
