"""The GPU study: the suite's first real numbers on a lent GPU, in one command that fits its minutes.

    make gpu-study            # on a GPU image: PYTHONPATH=. python3 -m reports.study, no install
    python -m reports.study --plan   # the steps, their time boxes and the trimmed paper grid; runs nothing

Each step is one of the suite's own commands in its own process, with its own time box (stopped at
the box, keeping what it recorded), in this order: env; `run --method all` at batch 1 and 4; the
instrument checks; the HiRED paper grid, trimmed to Table 4's cells, uncapped and under a 24 GiB
cap (the P40); `predict` and `oom-boundary` under the cap; the selection and decode benchmarks;
`report`. A timeline is printed as it goes. Everything lands in reports/studies/<gpu>/ with a
README.md the study writes itself, and is packed after every step into $OUT/<gpu>.tar.gz when OUT
is set, so one file brings it home even if the machine is taken away half-way.

Without a GPU the same script is a rehearsal: the tiny preset on the CPU, the GPU-only steps and
checks marked "n/a (no GPU)" with the reason, into reports/studies/rehearsal-cpu/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workloads.paper import PAPER_NEW_TOKENS, PAPER_REPEATS, PAPER_WARMUP

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "reports" / "studies"
CAP = "24GiB"  # the HiRED paper's Tesla P40
GPU_DEADLINE_S = 480.0  # the whole study on a GPU: 8 minutes of a 15-minute lease
CPU_DEADLINE_S = 570.0  # the rehearsal on a 2-core machine: under 10 minutes
REPORT_RESERVE_S = 40.0  # kept back for `report`, the README and the tarball
NEEDS = ("torch", "transformers", "matplotlib", "rich", "typer", "PIL", "numpy", "tokenizers")


@dataclass(frozen=True)
class Target:
    """Where the study runs: the model and dtype it measures."""

    gpu: bool
    gpu_name: str | None
    model: str
    dtype: str
    slug: str  # the study folder's name

    @classmethod
    def here(cls) -> Target:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return cls(True, name, "llava-next-7b", "float16", slugify(name))
        return cls(False, None, "tiny", "float32", "rehearsal-cpu")


def slugify(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


@dataclass(frozen=True)
class Step:
    name: str
    title: str  # what it measures, one line
    planned_s: float  # the estimate, from `basis`
    box_s: float  # stopped there, keeping what it recorded
    basis: str  # the arithmetic behind planned_s
    argv: tuple[str, ...] = ()
    stdout: str | None = None  # file (in the study folder) that receives stdout; else the log
    outputs: tuple[str, ...] = ()  # what it writes (in the study folder): removed before it runs
    na: str | None = None  # why it does not run here


@dataclass
class Outcome:
    name: str
    status: str  # "ok", "exit N", "timed out", "n/a", "skipped"
    started_s: float | None = None
    took_s: float | None = None
    box_s: float | None = None
    note: str = ""


@dataclass
class Study:
    target: Target
    folder: Path
    steps: list[Step]
    deadline_s: float
    paper_kept: list[str]  # the paper grid's points measured, as labels
    paper_cut: list[str]  # and the ones cut, grouped
    outcomes: list[Outcome] = field(default_factory=list)


# the trimmed paper grid: HiRED Table 4's cells (full, HiRED 40% and 20% at batch 1, 2, 4, 15 new tokens)
PAPER_BATCHES = (1, 2, 4)
PAPER_BUDGETS = (0.2, 0.4)


def in_table4(point) -> bool:
    return (
        point.new_tokens == PAPER_NEW_TOKENS
        and point.batch_size in PAPER_BATCHES
        and (point.method == "none" or (point.method == "hired" and point.budget in PAPER_BUDGETS))
    )


def trimmed_paper(target: Target, cap: str | None, output: Path, warmup: int, repeats: int) -> str:
    """The sweep file of the trimmed paper grid for this target (TOML text)."""
    lines = [
        f'description = "HiRED Table 4 cells of workloads/paper.toml{", capped at " + cap if cap else ""}"',
        f'models = ["{target.model}"]',
        'weights = "random"',
        f'dtype = "{target.dtype}"',
        f"batch_sizes = {list(PAPER_BATCHES)}",
        'image_sizes = ["600x600"]',
        f"new_tokens = [{PAPER_NEW_TOKENS}]",
        f"warmup = {warmup}",
        f"repeats = {repeats}",
        f'output = "{output}"',
        *([f'memory_cap = "{cap}"'] if cap else []),
        "",
        "[[methods]]",
        'name = "hired"',
        f"budgets = {list(PAPER_BUDGETS)}",
        "",
    ]
    return "\n".join(lines)


def paper_split() -> tuple[list[str], list[str]]:
    """(points of workloads/paper.toml kept, what was cut grouped by what it is) for one cap setting."""
    from collections import Counter

    from workloads.sweep import load_sweep

    points = load_sweep(Path("paper")).points
    kept = [f"{p.method} {p.label} batch {p.batch_size}" for p in points if in_table4(p)]
    cut = Counter()
    for p in points:
        if in_table4(p):
            continue
        if p.new_tokens != PAPER_NEW_TOKENS:
            cut[f"{p.new_tokens} new tokens (every method and batch)"] += 1
        elif p.batch_size not in PAPER_BATCHES:
            cut[f"batch {p.batch_size} (every method)"] += 1
        else:
            cut[f"{p.method} {p.label} (batch {', '.join(map(str, PAPER_BATCHES))})"] += 1
    return kept, [f"{what}: {n} points" for what, n in cut.items()]


def plan_study(target: Target, folder: Path, python: str = sys.executable) -> Study:
    """The steps, in order, with their time boxes; GPU-only ones marked n/a without a GPU."""
    gpu, m, dtype = target.gpu, target.model, target.dtype
    cli = (python, "-m", "reports")
    model = ("--model", m, "--dtype", dtype, "--weights", "random")
    run = (*cli, "run", *model, *["--method", "all", "--budget", "0.2", "--warmup", "1", "--repeats", "3"])
    no_gpu = "n/a (no GPU): {}"

    def out(name: str) -> tuple[str, str]:
        return "--output", str(folder / name)

    def sweep(name: str, *extra: str) -> tuple[str, ...]:
        return (*cli, "sweep", str(folder / "sweeps" / f"{name}.toml"), "--no-agreement", *extra)

    steps = [
        Step(
            "env",
            "hardware fingerprint and what can be measured",
            6,
            20,
            "imports and NVML",
            (*cli, "env", "--json"),
            stdout="env.json",
            outputs=("env.json",),
        ),
        Step(
            "run-b1",
            "every method at 20% against the full model, batch 1 (1 warm-up, 3 measured, 1 agreement)",
            46 if gpu else 15,
            60,
            "build the 7B on the GPU ~12 s; 12 points x 5 requests x ~0.45 s (full prefill 2 x 7.06e9 x 2950 "
            "FLOP = 42 TFLOP ~ 0.1 s at ~400 TFLOP/s; 14 eager decode steps ~ 25 ms each)",
            (*run, "--batch", "1", *out("results/run-b1.jsonl")),
            outputs=("results/run-b1.jsonl",),
        ),
        Step(
            "run-b4",
            "every method at 20% against the full model, batch 4",
            53 if gpu else 20,
            75,
            "12 points x 5 requests x ~0.6 s (full prefill 4 x 0.1 s; decode steps barely slower at batch 4) "
            "+ build ~12 s",
            (*run, "--batch", "4", *out("results/run-b4.jsonl")),
            outputs=("results/run-b4.jsonl",),
        ),
        Step(
            "checks",
            "instrument checks: TTFT clock, NVML peak, sampler rate, energy, OOM recovery, overhead",
            65 if gpu else 15,
            85,
            "build ~12 s; ~25 requests at batch 1 (~12 s), a 6 s energy window, twice 6 paired overhead "
            "rounds of 32 + 1 tokens at batch 4 (~12 s each; 55 s in all without the second on an H200)",
            (
                python,
                "-m",
                "profiler.bench.checks",
                "--model",
                m,
                "--dtype",
                dtype,
                "--out",
                str(folder / "checks.jsonl"),
                *(() if gpu else ("--overhead-rounds", "4")),
            ),
            outputs=("checks.jsonl",),
        ),
        Step(
            "paper-uncapped",
            "the HiRED Table 4 cells (full, HiRED 40%, 20% at batch 1, 2, 4), the whole card",
            60 if gpu else 20,
            80,
            f"9 points x {PAPER_WARMUP + PAPER_REPEATS} requests ({PAPER_WARMUP} warm-up, {PAPER_REPEATS} "
            "measured) x ~0.6 s + build ~12 s (51 s with 3 measured on an H200)",
            sweep("paper-uncapped"),
            outputs=("results/paper-uncapped.jsonl",),
        ),
        Step(
            "paper-capped",
            f"the same cells with PyTorch capped at {CAP} (the paper's Tesla P40)",
            60,
            80,
            "as uncapped; the full model at batch 4 may run out of memory (recorded, not fatal)",
            sweep("paper-capped", "--force"),
            outputs=("results/paper-capped.jsonl",),
            na=None if gpu else no_gpu.format("--memory-cap emulates a smaller card with CUDA's allocator"),
        ),
        Step(
            "predict",
            f"the memory model's peak and largest batch on a {CAP} card (arithmetic, no GPU)",
            13,
            20,
            "imports and configuration only (13 s on the H200 machine)",
            (
                *cli,
                "predict",
                "--gpu-memory",
                CAP,
                "--overhead",
                "0",
                "--model",
                m,
                "--dtype",
                dtype if gpu else "float16",
                "--method",
                "hired",
                "--budget",
                "0.1,0.2,0.4",
                *out("results/predict.jsonl"),
            ),
            outputs=("results/predict.jsonl",),
        ),
        Step(
            "oom-boundary",
            f"the largest batch under the {CAP} cap: full and HiRED 10/20/40%",
            60,
            75,
            "4 searches x ~9 one-request probes (doubling, then bisecting, up to 64); a probe at batch ~40 "
            "takes ~2 s (600x600 pictures preprocessed on the CPU, ~15 ms each) + build ~12 s",
            (
                *cli,
                "oom-boundary",
                *model,
                "--method",
                "hired",
                "--budget",
                "0.1,0.2,0.4",
                "--memory-cap",
                CAP,
                "--max-batch",
                "64",
                *out("results/oom-boundary.jsonl"),
            ),
            outputs=("results/oom-boundary.jsonl",),
            na=None if gpu else no_gpu.format("out-of-memory boundaries are a GPU's"),
        ),
        Step(
            "bench-select",
            "each method's selection step alone at 7B shapes, and against its loop oracle",
            30 if gpu else 45,
            45 if gpu else 75,
            "13 settings x 2 batches (1, 8; reference fidelity at 1 only) x 13 runs of 0.1-30 ms; the "
            "released per-token loops once each",
            (
                python,
                "-m",
                "profiler.bench.select",
                *("--batches 1 8 --repeats 10" if gpu else "--batches 1 --repeats 3").split(),
            ),
            stdout="bench/select.txt",
            outputs=("bench/select.txt",),
        ),
        Step(
            "bench-decode",
            "decode ms/token, eager against compiled (static cache, CUDA graphs) vs the HBM bound",
            54 if gpu else 30,
            90,
            "build ~12 s; eager 4 x 33 tokens x ~25 ms; compiled: torch.compile of the decode step ~60 s, "
            "then 4 x 33 tokens (the bound: 13.5 GB of LLM weights / 4.8 TB/s = 2.8 ms per token on an H200)",
            (
                python,
                "-m",
                "profiler.bench.decode",
                "--model",
                m,
                "--dtype",
                dtype,
                *["--batches", "1", "--lengths", "600", "--engines", "eager", "compiled", "--rounds", "3"],
            ),
            stdout="bench/decode.txt",
            outputs=("bench/decode.txt",),
        ),
        Step(
            "report",
            "the Markdown + HTML report with figures over every results file",
            15,
            REPORT_RESERVE_S,
            "matplotlib figures on the CPU",
            (
                *cli,
                "report",
                str(folder / "results"),
                str(folder / "checks.jsonl"),
                "--out",
                str(folder / "report"),
            ),
            outputs=("report",),
        ),
    ]
    kept, cut = paper_split()
    deadline = GPU_DEADLINE_S if gpu else CPU_DEADLINE_S
    return Study(target, folder, steps, deadline, kept, cut)


def missing_modules(gpu: bool) -> list[str]:
    """What this Python lacks to run the study (pynvml only matters on a GPU)."""
    missing = []
    for name in (*NEEDS, *(("pynvml",) if gpu else ())):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def child_env() -> dict:
    """The suite from this checkout, whatever the current folder; output unbuffered; no downloads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(
        PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    return env


def run_step(step: Step, folder: Path, box_s: float) -> tuple[str, str]:
    """(status, note) of one step in its own process group, stopped at box_s: SIGINT first (the suite
    keeps what it recorded and says so), then SIGKILL for the whole group (samplers, compilers)."""
    log = folder / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err, open(folder / step.stdout if step.stdout else os.devnull, "wb") as out:
        try:
            proc = subprocess.Popen(
                step.argv,
                stdout=out if step.stdout else err,
                stderr=err,
                env=child_env(),
                cwd=REPO,
                start_new_session=True,
            )
        except OSError as exc:
            return "failed to start", str(exc)
        try:
            code = proc.wait(timeout=box_s)
        except subprocess.TimeoutExpired:
            stop(proc)
            return "timed out", f"stopped at its {box_s:.0f} s box; what it recorded is kept"
    return ("ok", "") if code == 0 else (f"exit {code}", recorded(step, folder) or last_line(log))


def recorded(step: Step, folder: Path) -> str:
    """What a step's results files hold, said in one line: points by status (the first error's
    message) and checks by verdict; empty where it writes no results file."""
    from collections import Counter

    from reports.data import load_results

    files = [path for name in step.outputs if (path := folder / name).suffix == ".jsonl" and path.is_file()]
    results = load_results(files)
    counts = [Counter(r["status"] for r in results.points), Counter(r["verdict"] for r in results.checks)]
    said = [", ".join(f"{n} {what}" for what, n in c.items()) for c in counts if c]
    if error := next((r["error"] for r in results.points if r.get("error")), None):
        said.append(f"first error: {error}")
    return "; ".join(said)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the step's process group (the suite keeps what it recorded), then SIGKILL to whatever of
    the group is left (compile workers ignore SIGINT)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def prepare(study: Study) -> None:
    """A clean study folder with the trimmed paper sweeps written into it."""
    folder = study.folder
    if folder.exists():
        print(f"replacing the earlier study in {folder}", flush=True)
        shutil.rmtree(folder)
    for sub in ("sweeps", "results", "bench", "logs"):
        (folder / sub).mkdir(parents=True)
    write_sweeps(study)


def write_sweeps(study: Study) -> None:
    """The trimmed paper grid, uncapped and capped, as the sweep files the paper steps run."""
    folder = study.folder
    for name, cap in (("paper-uncapped", None), ("paper-capped", CAP)):
        text = trimmed_paper(
            study.target, cap, folder / "results" / f"{name}.jsonl", PAPER_WARMUP, PAPER_REPEATS
        )
        (folder / "sweeps" / f"{name}.toml").write_text(text)


def earlier_outcomes(folder: Path) -> list[Outcome]:
    """The timeline of the study already in `folder` (for --only)."""
    try:
        return [Outcome(**o) for o in json.loads((folder / "timeline.json").read_text())]
    except (OSError, ValueError, TypeError):
        return []


def remove_outputs(step: Step, folder: Path) -> None:
    for name in step.outputs:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def pack(folder: Path) -> Path | None:
    """The study folder as one .tar.gz in $OUT (written beside, then renamed: never half a file)."""
    out = os.environ.get("OUT")
    if not out:
        return None
    target = Path(out) / f"{folder.name}.tar.gz"
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(folder, arcname=str(folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder.name))
    partial.replace(target)
    return target


def run_study(study: Study, only: set[str] | None = None) -> None:
    """Every step in order (or, with `only`, those steps and the report again, into the study already
    in the folder, keeping the rest of its timeline); README and tarball after every step."""
    from reports.study_readme import write_readme

    if only:
        study.outcomes = [o for o in earlier_outcomes(study.folder) if o.name not in only | {"report"}]
        write_sweeps(study)  # as this version plans them
    else:
        prepare(study)
    start = time.monotonic()
    print(f"study: {len(study.steps)} steps, deadline {study.deadline_s:.0f} s -> {study.folder}", flush=True)
    for step in study.steps:
        if only and step.name not in only | {"report"}:
            continue
        elapsed = time.monotonic() - start
        reserve = 0.0 if step.name == "report" else REPORT_RESERVE_S
        box = min(step.box_s, study.deadline_s - reserve - elapsed)
        if step.na:
            outcome = Outcome(step.name, "n/a", note=step.na)
        elif box < 5:
            outcome = Outcome(step.name, "skipped", note=f"the study's {study.deadline_s:.0f} s deadline")
        else:
            remove_outputs(step, study.folder)
            status, note = run_step(step, study.folder, box)
            took = time.monotonic() - start - elapsed
            note = "; ".join(filter(None, ["run again (--only)" if only else "", note]))
            outcome = Outcome(step.name, status, round(elapsed, 1), round(took, 1), round(box), note)
        order = [s.name for s in study.steps]
        study.outcomes = sorted([*study.outcomes, outcome], key=lambda o: order.index(o.name))
        print(timeline_line(outcome, step), flush=True)
        (study.folder / "timeline.json").write_text(json.dumps([asdict(o) for o in study.outcomes], indent=1))
        try:  # a README that cannot be written must not cost the measurements: they are on disk
            write_readme(study)
        except Exception as exc:
            print(f"README not written after {step.name}: {type(exc).__name__}: {exc}", flush=True)
        pack(study.folder)
    print(f"study done in {time.monotonic() - start:.0f} s: {study.folder / 'README.md'}", flush=True)
    if packed := pack(study.folder):
        print(f"packed: {packed} ({packed.stat().st_size / 2**20:.1f} MiB)", flush=True)


def timeline_line(outcome: Outcome, step: Step) -> str:
    if outcome.started_s is None:
        return f"[   --  ] {step.name:15s} {outcome.status}: {outcome.note}"
    note = f" · {outcome.note}" if outcome.note else ""
    return (
        f"[{outcome.started_s:6.1f} s] {step.name:15s} {outcome.status} in {outcome.took_s:.1f} s "
        f"(planned {step.planned_s:.0f} s, box {outcome.box_s} s){note}"
    )


def print_plan(study: Study) -> None:
    where = study.target.gpu_name or "no GPU: a rehearsal on the CPU"
    print(f"GPU study plan on {where}: {study.target.model} ({study.target.dtype}) -> {study.folder}")
    print(f"deadline {study.deadline_s:.0f} s ({REPORT_RESERVE_S:.0f} s kept for the report)\n")
    for step in study.steps:
        shown = step.na or f"planned {step.planned_s:3.0f} s, box {step.box_s:3.0f} s: {step.basis}"
        print(f"{step.name:15s} {shown}")
    runs = [s for s in study.steps if not s.na]
    print(f"\nplanned {sum(s.planned_s for s in runs):.0f} s, boxes {sum(s.box_s for s in runs):.0f} s")
    print(
        f"paper grid: {len(study.paper_kept)} points kept per cap setting; cut: {'; '.join(study.paper_cut)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", action="store_true", help="print the plan and run nothing")
    parser.add_argument("--out", type=Path, default=None, help="study folder (default reports/studies/<gpu>)")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds for the whole study (default: 480 on a GPU)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated steps to run again into the study already in the folder (the report follows)",
    )
    args = parser.parse_args(argv)
    gpu_hint = shutil.which("nvidia-smi") is not None
    if missing := missing_modules(gpu_hint):
        print(
            f"error: the study needs {', '.join(missing)}, which this Python ({sys.executable}) lacks",
            file=sys.stderr,
        )
        return 2
    target = Target.here()
    study = plan_study(target, (args.out or STUDIES / target.slug).resolve())
    if args.deadline is not None:
        study.deadline_s = args.deadline
    only = None
    if args.only:
        only = {name.strip() for name in args.only.split(",")}
        names = [s.name for s in study.steps]
        if unknown := sorted(only - set(names)):
            print(f"error: unknown step(s) {', '.join(unknown)} (steps: {', '.join(names)})", file=sys.stderr)
            return 2
        if not (study.folder / "sweeps").is_dir():
            print(
                f"error: --only runs steps again into a study; there is none in {study.folder}",
                file=sys.stderr,
            )
            return 2
    print_plan(study)
    if args.plan:
        return 0
    print(flush=True)
    run_study(study, only)
    return 0 if all(o.status in ("ok", "n/a") for o in study.outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
