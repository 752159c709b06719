"""`make gpu-study` without a GPU: the plan and its time boxes, the trimmed paper grid, the README the
study writes, steps in their own boxed processes, --only and the tarball; the instrument checks
(profiler.bench.checks) and the sampler's --power-always against the fake NVML
(tests/support/fake_pynvml.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from profiler.bench import checks
from profiler.bench.checks import CHECKS, NO_GPU, SAMPLER_FLOOR_HZ, Check, check_record, judged
from profiler.instruments.nvml import SamplerProcess
from profiler.results.store import append_record
from profiler.results.views import fmt
from reports import study as study_mod
from reports.data import Results, load_results, problem
from reports.document import Table
from reports.sections.checks import checks_section
from reports.study import (
    CPU_DEADLINE_S,
    GPU_DEADLINE_S,
    REPORT_RESERVE_S,
    Outcome,
    Step,
    Study,
    Target,
    earlier_outcomes,
    in_table4,
    pack,
    paper_split,
    plan_study,
    prepare,
    remove_outputs,
    run_step,
    run_study,
    trimmed_paper,
)
from reports.study_readme import SECTIONS, write_readme
from workloads.sweep import load_sweep

FIXTURE = Path(__file__).parents[1] / "fixtures" / "results" / "results_gpu_a.jsonl"
CPU = Target(False, None, "tiny", "float32", "rehearsal-cpu")
GPU = Target(True, "NVIDIA H200", "llava-next-7b", "float16", "nvidia-h200")
ORDER = [
    "env",
    "run-b1",
    "run-b4",
    "checks",
    "paper-uncapped",
    "paper-capped",
    "predict",
    "oom-boundary",
    "bench-select",
    "bench-decode",
    "report",
]
PYTHON = "/opt/some/python3"


def flag(argv, name):
    """The value after `name` in argv, or None."""
    return argv[argv.index(name) + 1] if name in argv else None


# --- the plan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [CPU, GPU], ids=["cpu", "gpu"])
def test_plan_steps_in_order_with_boxes_and_outputs_in_the_folder(target, tmp_path):
    study = plan_study(target, tmp_path, python=PYTHON)
    assert [s.name for s in study.steps] == ORDER
    assert study.deadline_s == (GPU_DEADLINE_S if target.gpu else CPU_DEADLINE_S)
    for step in study.steps:
        assert step.argv[0] == PYTHON, step.name
        assert step.box_s >= step.planned_s, step.name
        if step.stdout:
            assert step.stdout in step.outputs, step.name
        # whatever a step writes is in the folder and removed before it runs
        for name in ("--output", "--out"):
            if (path := flag(step.argv, name)) is not None:
                assert str(Path(path).relative_to(tmp_path)) in step.outputs, step.name
    report = study.steps[-1]
    assert report.box_s == REPORT_RESERVE_S
    assert flag(report.argv, "--out") == str(tmp_path / "report")
    running = [s for s in study.steps if not s.na]
    assert sum(s.planned_s for s in running) <= study.deadline_s


def test_plan_without_a_gpu_marks_the_gpu_only_steps(tmp_path):
    steps = {s.name: s for s in plan_study(CPU, tmp_path).steps}
    for name, step in steps.items():
        if name in ("paper-capped", "oom-boundary"):
            assert step.na and step.na.startswith("n/a (no GPU)"), name
            assert len(step.na) > len("n/a (no GPU): "), name  # with its reason
        else:
            assert step.na is None, name
    assert steps["run-b1"].argv[steps["run-b1"].argv.index("--model") + 1] == "tiny"


def test_plan_on_a_gpu_fits_its_deadline(tmp_path):
    study = plan_study(GPU, tmp_path, python=PYTHON)
    assert all(s.na is None for s in study.steps)
    assert sum(s.planned_s for s in study.steps) <= GPU_DEADLINE_S == study.deadline_s
    run_b1 = " ".join(next(s for s in study.steps if s.name == "run-b1").argv)
    assert "--model llava-next-7b" in run_b1 and "--dtype float16" in run_b1
    assert f"--output {tmp_path / 'results' / 'run-b1.jsonl'}" in run_b1
    capped = next(s for s in study.steps if s.name == "oom-boundary")
    assert flag(capped.argv, "--memory-cap") == study_mod.CAP


# --- the trimmed paper grid -------------------------------------------------------------------------


def grid_key(p):
    return (p.method, p.budget, p.batch_size, p.new_tokens, p.image_sizes)


def test_paper_split_keeps_exactly_table4():
    points = load_sweep(Path("paper")).points
    kept, cut = paper_split()
    table4 = [p for p in points if in_table4(p)]
    assert sorted((p.method, p.budget, p.batch_size) for p in table4) == sorted(
        [(m, b, n) for n in (1, 2, 4) for m, b in (("none", 1.0), ("hired", 0.2), ("hired", 0.4))]
    )
    assert all(p.new_tokens == 15 for p in table4)
    assert len(kept) == 9 == len(table4)
    assert len(set(kept)) == len(kept)
    cut_count = sum(int(line.rsplit(": ", 1)[1].split()[0]) for line in cut)
    assert len(kept) + cut_count == len(points)


@pytest.mark.parametrize("cap", ["24GiB", None])
def test_trimmed_paper_sweep_loads_and_is_table4(cap, tmp_path):
    output = tmp_path / "x.jsonl"
    path = tmp_path / "trimmed.toml"
    path.write_text(trimmed_paper(GPU, cap, output, 2, 3))
    sweep = load_sweep(path)
    paper = {grid_key(p) for p in load_sweep(Path("paper")).points}
    assert len(sweep.points) == 9
    for p in sweep.points:
        assert grid_key(p) in paper
        assert in_table4(p)
        assert p.memory_cap == cap
        assert (p.model, p.dtype, p.warmup, p.repeats) == ("llava-next-7b", "float16", 2, 3)
    assert Path(sweep.output) == output


def test_prepare_writes_both_paper_sweeps_and_replaces_an_earlier_study(tmp_path):
    study = plan_study(CPU, tmp_path / "study")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "stale.txt").write_text("from before")
    prepare(study)
    assert not (tmp_path / "study" / "stale.txt").exists()
    for sub in ("sweeps", "results", "bench", "logs"):
        assert (tmp_path / "study" / sub).is_dir()
    capped = load_sweep(tmp_path / "study" / "sweeps" / "paper-capped.toml")
    uncapped = load_sweep(tmp_path / "study" / "sweeps" / "paper-uncapped.toml")
    assert {p.memory_cap for p in capped.points} == {study_mod.CAP}
    assert {p.memory_cap for p in uncapped.points} == {None}
    assert Path(uncapped.output) == tmp_path / "study" / "results" / "paper-uncapped.jsonl"


# --- the README -------------------------------------------------------------------------------------


def sections_of(markdown: str) -> dict[str, str]:
    """'## title' -> the text below it, up to the next heading of level 2."""
    out, title = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:]
            out[title] = ""
        elif title is not None:
            out[title] += line + "\n"
    return out


def fixture_point(method, budget, batch):
    for line in FIXTURE.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        c = r.get("config") or {}
        if r.get("kind", "point") == "point" and (c["method"], c["budget"], c["batch_size"]) == (
            method,
            budget,
            batch,
        ):
            return r
    raise LookupError((method, budget, batch))


@pytest.fixture
def fake_study(tmp_path):
    study = plan_study(CPU, tmp_path / "study")
    prepare(study)
    return study


def test_readme_from_a_fake_study(fake_study):
    folder = fake_study.folder
    env = {
        "hardware": {"gpu_name": "Fake GPU 9000", "cpu": "Fake CPU"},
        "measurable": {"nvml": "ok", "energy_counter": None},
    }
    (folder / "env.json").write_text(json.dumps(env))
    made = [
        judged("ttft_clock", 1.01, 1.0, "median of 5"),
        judged("sampler_rate", 150.0, SAMPLER_FLOOR_HZ),
        Check("energy_per_token", note=NO_GPU),
    ]
    for check in made:
        append_record(folder / "checks.jsonl", check_record(check, "run00000000", {}, {"model": "tiny"}))
    shutil.copy(FIXTURE, folder / "results" / "paper-uncapped.jsonl")
    shutil.copy(FIXTURE, folder / "results" / "run-b1.jsonl")
    (folder / "bench" / "select.txt").write_text("selection benchmark output line\n")
    steps = {s.name: s for s in fake_study.steps}
    fake_study.outcomes = [
        Outcome("env", "ok", 0.0, 1.5, 20),
        Outcome("run-b1", "ok", 1.5, 12.0, 60),
        Outcome("checks", "exit 1", 13.5, 9.0, 75, "profiler_overhead failed"),
        Outcome("paper-uncapped", "ok", 22.5, 10.0, 55),
        Outcome("paper-capped", "n/a", note=steps["paper-capped"].na),
        Outcome("oom-boundary", "n/a", note=steps["oom-boundary"].na),
    ]
    text = write_readme(fake_study).read_text()
    assert text == (folder / "README.md").read_text()
    found = sections_of(text)
    for title in SECTIONS:
        assert f"\n## {title}\n" in text, title
    assert list(found) == list(SECTIONS)  # each once, in order
    assert "Fake GPU 9000" in found["Machine"] and "Fake CPU" in found["Machine"]
    for check in made:
        assert check.check in found["Instrument checks"]
    assert "fail" in found["Instrument checks"] and "n/a (no GPU)" in found["Instrument checks"]
    # the headline and Table 4 come from the copied results (no "No results")
    headline = found["Headline: HiRED 20% against the full model"]
    assert "No results" not in headline
    full_ttft = fmt(fixture_point("none", 1.0, 1)["metrics"]["ttft_s"]["median"])
    hired_ttft = fmt(fixture_point("hired", 0.2, 1)["metrics"]["ttft_s"]["median"])
    assert f"| whole card | 1 | {full_ttft} | {hired_ttft} |" in headline
    assert "No results" not in found["Beside the HiRED paper (Table 4)"]
    assert "prumerge" in found["Every method at 20%"]
    # a step marked n/a says so, with its reason, where its results would be
    oom = found["Out-of-memory boundaries under the 24 GiB cap"]
    assert "oom-boundary" in oom and steps["oom-boundary"].na in oom
    assert steps["paper-capped"].na in found["Timeline"]
    assert "selection benchmark output line" in found["Selection step and decode roofline"]
    assert f"{len(fake_study.paper_kept)} points of the HiRED" in found["What was cut"]
    total = len(load_sweep(Path("paper")).points)
    assert f"`workloads/paper.toml`, {total} points per memory setting" in found["What was cut"]
    assert "results/run-b1.jsonl" in found["Files"]


def test_readme_of_an_empty_study_has_every_section(fake_study):
    path = write_readme(fake_study)
    text = path.read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in text, title
    found = sections_of(text)
    assert "not reached yet" in found["Headline: HiRED 20% against the full model"]
    assert "not reached yet" in found["Instrument checks"]


# --- steps in their own boxed processes ----------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def kill_if_alive(pid: int | None) -> None:
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGKILL)


def step(name, code, box=10.0, stdout=None):
    return Step(name, "a test step", 1, box, "none", (sys.executable, "-c", code), stdout=stdout)


def wait_for(path: Path, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.02)


LEADER = """
import os, subprocess, sys, time
from pathlib import Path
here = Path(sys.argv[1])
child = subprocess.Popen(["sh", "-c", sys.argv[2]])
while not (here / "ready").exists():
    time.sleep(0.01)
(here / "pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(60)
"""


def boxed_leader(tmp_path, grandchild: str) -> tuple[Step, Path]:
    argv = (sys.executable, "-c", LEADER, str(tmp_path), grandchild)
    return Step("sleepy", "sleeps", 1, 3.0, "none", argv), tmp_path / "pids"


def test_run_step_stops_at_its_box(tmp_path):
    box = 1.0
    start = time.monotonic()
    status, note = run_step(step("sleepy", "import time; time.sleep(60)", box=box), tmp_path, box)
    assert time.monotonic() - start < 20
    assert status == "timed out" and "1 s box" in note
    assert (tmp_path / "logs" / "sleepy.log").exists()


@pytest.mark.parametrize(
    "child",
    ["exec sleep 60", "trap '' INT; exec sleep 60"],
    ids=["child", "child-ignoring-sigint"],
)
@pytest.mark.slow
def test_run_step_stops_the_whole_process_group(tmp_path, child):
    # a leader with a child of its own (a sampler, a compiler, one that ignores SIGINT): all end at the box
    ready = tmp_path / "ready"
    step_, pids = boxed_leader(tmp_path, child.replace("exec", f"touch {ready}; exec"))
    grandchild = None
    try:
        status, _ = run_step(step_, tmp_path, step_.box_s)
        leader, grandchild = map(int, pids.read_text().split())
        assert status == "timed out"
        assert gone_within(leader, 5) and gone_within(grandchild, 5)
    finally:
        kill_if_alive(grandchild)


def test_run_step_exit_code_and_last_error_line(tmp_path):
    code = (
        "import sys; print('early', file=sys.stderr); print('the last words', file=sys.stderr); sys.exit(3)"
    )
    assert run_step(step("fails", code), tmp_path, 10) == ("exit 3", "the last words")
    assert run_step(step("fine", "pass"), tmp_path, 10) == ("ok", "")


def test_run_step_stdout_to_a_file_and_the_child_environment(tmp_path):
    code = "import os; print('hello from the step'); print(os.environ['HF_HUB_OFFLINE'])"
    assert run_step(step("talks", code, stdout="out.txt"), tmp_path, 10) == ("ok", "")
    assert (tmp_path / "out.txt").read_text().splitlines() == ["hello from the step", "1"]
    assert "hello" not in (tmp_path / "logs" / "talks.log").read_text()  # stdout went to its file


def test_run_step_that_cannot_start(tmp_path):
    missing = Step("nothing", "", 1, 5, "", (str(tmp_path / "no-such-program"),))
    status, note = run_step(missing, tmp_path, 5)
    assert status == "failed to start" and note


# --- --only, outputs, main ----------------------------------------------------------------------------


def test_remove_outputs_files_and_folders(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.jsonl").write_text("x")
    (tmp_path / "results" / "keep.jsonl").write_text("x")
    (tmp_path / "report" / "figures").mkdir(parents=True)
    (tmp_path / "report" / "figures" / "f.png").write_bytes(b"png")
    s = Step("s", "", 1, 1, "", outputs=("results/a.jsonl", "report", "never-written.txt"))
    remove_outputs(s, tmp_path)
    assert not (tmp_path / "results" / "a.jsonl").exists() and not (tmp_path / "report").exists()
    assert (tmp_path / "results" / "keep.jsonl").exists()


def test_earlier_outcomes_read_back(tmp_path):
    assert earlier_outcomes(tmp_path) == []
    outcomes = [Outcome("env", "ok", 0.0, 1.2, 20), Outcome("oom-boundary", "n/a", note="n/a (no GPU): x")]
    (tmp_path / "timeline.json").write_text(json.dumps([asdict(o) for o in outcomes]))
    assert earlier_outcomes(tmp_path) == outcomes
    (tmp_path / "timeline.json").write_text("{not json")
    assert earlier_outcomes(tmp_path) == []


def snapshot(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


def test_main_refuses_an_unknown_step_and_writes_nothing(capsys):
    before = snapshot(study_mod.STUDIES)
    assert study_mod.main(["--only", "nonsense"]) == 2
    assert "unknown step(s) nonsense" in capsys.readouterr().err
    assert snapshot(study_mod.STUDIES) == before


def test_main_plan_prints_and_writes_nothing(capsys):
    before = snapshot(study_mod.STUDIES)
    assert study_mod.main(["--plan"]) == 0
    out = capsys.readouterr().out
    for name in ORDER:
        assert f"\n{name} " in out, name
    assert "paper grid: 9 points kept per cap setting" in out
    assert snapshot(study_mod.STUDIES) == before


def tiny_study(folder: Path, deadline_s: float) -> Study:
    kept, cut = paper_split()
    steps = [
        step("sleeper", "import time; print('slept'); time.sleep(1.5)", box=10, stdout="bench/sleeper.txt"),
        replace(step("gpu-only", "raise SystemExit(9)"), na="n/a (no GPU): a test reason"),
        step("late", "pass", box=10),
        replace(step("report", "print('report')"), box_s=REPORT_RESERVE_S),
    ]
    steps[0] = replace(steps[0], outputs=("bench/sleeper.txt",))
    return Study(CPU, folder, steps, deadline_s, kept, cut)


@pytest.mark.slow
def test_run_study_boxes_skips_and_only(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    folder = tmp_path / "study"
    # 6 s of steps before the report's reserve: the sleeper runs, `late` has < 5 s left and is skipped
    study = tiny_study(folder, REPORT_RESERVE_S + 6)
    run_study(study)
    statuses = {o.name: (o.status, o.note) for o in study.outcomes}
    assert [o.name for o in study.outcomes] == ["sleeper", "gpu-only", "late", "report"]
    assert statuses["sleeper"] == ("ok", "")
    assert statuses["gpu-only"] == ("n/a", "n/a (no GPU): a test reason")
    assert statuses["late"][0] == "skipped" and "deadline" in statuses["late"][1]
    assert statuses["report"] == ("ok", "")
    assert (folder / "bench" / "sleeper.txt").read_text() == "slept\n"
    assert earlier_outcomes(folder) == study.outcomes
    assert "## Timeline" in (folder / "README.md").read_text()
    assert [p.name for p in out.iterdir()] == ["study.tar.gz"]
    # --only: the step and the report again, the rest of the timeline kept, the folder not wiped
    (folder / "bench" / "sleeper.txt").write_text("stale")
    (folder / "marker").write_text("kept")
    again = tiny_study(folder, 100)
    run_study(again, only={"sleeper"})
    outcomes = {o.name: o for o in again.outcomes}
    assert [o.name for o in again.outcomes] == ["sleeper", "gpu-only", "late", "report"]
    assert outcomes["sleeper"].status == "ok" and "run again (--only)" in outcomes["sleeper"].note
    assert outcomes["late"].status == "skipped"  # from the first run, not run again
    assert (folder / "bench" / "sleeper.txt").read_text() == "slept\n"
    assert (folder / "marker").exists()


# --- pack ------------------------------------------------------------------------------------------


def test_pack_writes_one_tarball_in_out(tmp_path, monkeypatch):
    folder = tmp_path / "nvidia-h200"
    (folder / "results").mkdir(parents=True)
    (folder / "README.md").write_text("# study\n")
    (folder / "results" / "a.jsonl").write_text("{}\n")
    monkeypatch.delenv("OUT", raising=False)
    assert pack(folder) is None
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    packed = pack(folder)
    assert packed == out / "nvidia-h200.tar.gz"
    assert sorted(p.name for p in out.iterdir()) == ["nvidia-h200.tar.gz"]  # no .partial left
    with tarfile.open(packed) as tar:
        names = tar.getnames()
        assert "nvidia-h200/README.md" in names and "nvidia-h200/results/a.jsonl" in names
        assert tar.extractfile("nvidia-h200/README.md").read() == b"# study\n"
    assert pack(folder) == packed  # packed again after the next step: replaced, still one file
    assert sorted(p.name for p in out.iterdir()) == ["nvidia-h200.tar.gz"]


# --- instrument checks ----------------------------------------------------------------------------


def test_judged_relative_tolerance():
    tolerance = CHECKS["ttft_clock"][2]
    inside = judged("ttft_clock", 1.0 + tolerance / 2, 1.0)
    assert inside.verdict == "pass" and inside.difference == pytest.approx(tolerance / 2)
    assert judged("ttft_clock", 1.0 - tolerance / 2, 1.0).verdict == "pass"
    assert judged("ttft_clock", 1.0 + 2 * tolerance, 1.0).verdict == "fail"
    assert judged("ttft_clock", 1.0 - 2 * tolerance, 1.0).verdict == "fail"
    # relative: the same absolute gap passes on a large reference and fails on a small one
    gap = 0.5
    assert judged("energy_per_token", 100 + gap, 100).verdict == "pass"
    assert judged("energy_per_token", 1 + gap, 1).verdict == "fail"


def test_sampler_rate_is_a_floor():
    assert judged("sampler_rate", 5000.0, SAMPLER_FLOOR_HZ).verdict == "pass"  # far above: still a pass
    assert judged("sampler_rate", 201.0, SAMPLER_FLOOR_HZ).verdict == "pass"
    assert judged("sampler_rate", 199.0, SAMPLER_FLOOR_HZ).verdict == "fail"


def check_records(tmp_path) -> tuple[Path, list[Check]]:
    made = [
        judged("ttft_clock", 0.101, 0.1),
        judged("sampler_rate", 150.0, SAMPLER_FLOOR_HZ),
        Check("oom_recovery_peak", note=NO_GPU),
        Check("energy_per_token", verdict="error", note="RuntimeError: no counter"),
    ]
    path = tmp_path / "checks.jsonl"
    for check in made:
        append_record(path, check_record(check, "run00000000", {"gpu_name": None}, {"model": "tiny"}))
    return path, made


def test_check_records_load_as_checks(tmp_path):
    path, made = check_records(tmp_path)
    record = check_record(made[0], "run00000000", {}, {})
    assert problem(record) is None
    assert record["kind"] == "instrument_check" and record["difference"] == pytest.approx(0.01)
    assert record["tolerance"] == CHECKS["ttft_clock"][2]
    results = load_results([path])
    assert results.points == [] and results.skipped_lines == 0
    assert [(r["check"], r["verdict"]) for r in results.checks] == [(c.check, c.verdict) for c in made]
    bad = dict(record, verdict="maybe")
    assert problem(bad)
    append_record(path, bad)
    again = load_results([path])
    assert len(again.checks) == len(made) and again.skipped_lines == 1
    [(_, why)] = again.skipped
    assert "unknown verdict" in why


def test_checks_section(tmp_path):
    assert checks_section(Results()) is None
    path, made = check_records(tmp_path)
    section = checks_section(load_results([path]))
    assert section.title == "Instrument checks"
    [table] = [p for p in section.parts if isinstance(p, Table)]
    assert len(table.rows) == len(made)
    by_check = {row[0]: row for row in table.rows}
    assert set(by_check) == {c.check for c in made}
    column = table.columns.index("verdict")
    assert [row[column] for row in table.rows] == [c.verdict for c in made]
    assert by_check["sampler_rate"][table.columns.index("tolerance")] == "floor"
    assert by_check["oom_recovery_peak"][table.columns.index("measured")] == "–"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU behaviour: GPU checks n/a")
def test_checks_main_on_the_cpu(tmp_path, capsys):
    path = tmp_path / "checks.jsonl"
    args = ["--model", "tiny", "--dtype", "float32", "--out", str(path)]
    rc = checks.main([*args, "--overhead-rounds", "1", "--overhead-tokens", "4", "--overhead-batch", "1"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["check"] for r in records] == list(CHECKS)  # all 7, in order
    assert all(problem(r) is None for r in records)
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        if r["check"] == "profiler_overhead":
            assert isinstance(r["measured"], float) and isinstance(r["reference"], float)
            assert r["measured"] > 0 and r["reference"] > 0
            assert r["verdict"] in ("pass", "fail") and "1 paired rounds" in r["note"], r["note"]
        else:
            assert r["verdict"] == "n/a" and r["note"].startswith("n/a (no GPU)"), r["check"]
            assert r["measured"] is None and r["reference"] is None
    assert rc == (1 if any(r["verdict"] in ("fail", "error") for r in records) else 0)


# --- the sampler: the counter and the power integral side by side ---------------------------------


@pytest.mark.parametrize("power_always", [True, False])
def test_sampler_power_always(power_always, fake_nvml):
    watts = 100.0
    module = fake_nvml(used=[2**30], energy_mj=1000, energy_step_mj=5, power_mw=[int(watts * 1000)])
    with SamplerProcess("GPU-fake", nvml_module=module, power_always=power_always) as sampler:
        assert sampler.energy_supported
        sampler.begin()
        time.sleep(0.1)
        reading = sampler.end()
    assert reading.energy_mj is not None and reading.energy_mj == 5 * reading.samples
    if power_always:
        assert reading.power_energy_mj is not None
        # a constant draw integrated over (nearly) the whole window: W x s = J, so mJ = mW x s
        assert (
            0.5 * watts * 1000 * reading.seconds <= reading.power_energy_mj <= watts * 1000 * reading.seconds
        )
    else:
        assert reading.power_energy_mj is None


def test_sampler_integrates_power_without_the_counter(fake_nvml):
    module = fake_nvml(used=[2**30], energy_mj=None, power_mw=[50_000])
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        sampler.begin()
        time.sleep(0.1)
        reading = sampler.end()
    assert reading.energy_mj is None and reading.power_energy_mj is not None
    assert reading.energy == (reading.power_energy_mj, "power_integral")


@pytest.mark.slow
def test_stop_sends_sigint_first(tmp_path):
    # SIGINT first: the suite's commands catch it to keep and report what they recorded
    code = (
        "import signal, sys, time\n"
        "def said(*_):\n"
        "    print('interrupted: kept what was recorded', file=sys.stderr); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, said)\n"
        "time.sleep(60)\n"
    )
    status, _ = run_step(step("polite", code, box=1.5), tmp_path, 1.5)
    assert status == "timed out"
    assert "interrupted: kept what was recorded" in (tmp_path / "logs" / "polite.log").read_text()


@pytest.mark.slow
def test_stop_kills_a_leader_that_ignores_sigint(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(0.5)  # the handler installed
        start = time.monotonic()
        study_mod.stop(proc)
        assert proc.poll() == -signal.SIGKILL
        assert time.monotonic() - start < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_failed_step_says_what_it_recorded(tmp_path):
    """A step that exits 1 is described by its results (statuses, the first error), not its last log line."""
    from profiler.bench.checks import Check, check_record
    from profiler.results.store import append_record, read_records

    points = tmp_path / "r.jsonl"
    fixture = [r for r in read_records(FIXTURE) if "kind" not in r and r.get("config")][:2]
    failed = {**fixture[1], "status": "error", "error": "AttributeError: no cache"}
    for record in (fixture[0], failed):
        append_record(points, record)
    checks = tmp_path / "c.jsonl"
    append_record(checks, check_record(Check("sampler_rate", 10.0, 200.0, "fail"), "r", {}, {}))
    step_ = Step(
        "s", "t", 1, 1, "b", (sys.executable, "-c", "raise SystemExit(1)"), outputs=("r.jsonl", "c.jsonl")
    )
    status, note = run_step(step_, tmp_path, 10)
    assert status == "exit 1"
    assert note == "1 ok, 1 error; 1 fail; first error: AttributeError: no cache"
