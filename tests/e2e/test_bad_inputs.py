"""Bad input through the real command line: one line, the right exit code, no traceback, and a results
file given beforehand that is byte-identical afterwards (or grew only by whole valid lines)."""

import json
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

import profiler.capacity.guards
from reports.cli import app
from tests.conftest import TINY, TINY_SWEEP

RUNNER = CliRunner()
R = "results.jsonl"
SMALL_SWEEP = (
    TINY_SWEEP
    + """[[methods]]
name = "hired"
budgets = [0.2]
"""
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A garbage file, a fake picture, a folder of broken pictures, a bomb, sweep files."""
    tmp_path = tmp_path_factory.mktemp("bad")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "garbage.jsonl").write_bytes(b'\x00\xff\xfe not json\n{"a": NaN}\n')
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_text("not a png")
    (tmp_path / "empty").mkdir()
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")  # 144 megapixels, a few KiB on disk
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "x.png")  # reading it would block for ever
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    many = ", ".join(str(round(0.00005 * i, 5)) for i in range(1, 20_001))
    for name, text in {
        "ok.toml": SMALL_SWEEP,
        "typo.toml": SMALL_SWEEP.replace("batch_sizes", "batch_size"),
        "cap.toml": 'memory_cap = "24GiB"\n' + SMALL_SWEEP,
        "prompt.toml": 'prompt = "<image> what?"\n' + SMALL_SWEEP,
        "seed.toml": "seed = -1\n" + SMALL_SWEEP,
        "budget.toml": SMALL_SWEEP.replace("[0.2]", "[0.2, 7]"),
        "broken.toml": "models = [",
        "big.toml": SMALL_SWEEP.replace('["tiny"]', '["llava-next-7b"]'),
        "deep.toml": "models = " + "[" * 5000 + "]" * 5000 + "\n",
        "huge.toml": SMALL_SWEEP.replace("[0.2]", f"[{many}]"),
        "long.toml": SMALL_SWEEP.replace("repeats = 1", "repeats = 10000").replace("[2]", "[64]"),
        "endless.toml": "min_duration = inf\n" + SMALL_SWEEP,
    }.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def place(files, monkeypatch):
    """`files`, the working folder, with a fresh results file holding two records."""
    monkeypatch.setattr(profiler.capacity.guards, "host_available_gib", lambda: 24.0)  # one host
    lines = [
        {"schema_version": 1, "kind": "prediction", "model": "tiny", "dtype": "float32", "method": m,
         "budget": 0.2, "budget_label": "20%", "memory_gib": 24}
        for m in "ab"
    ]  # fmt: skip
    (files / R).write_text("".join(json.dumps(line) + "\n" for line in lines))
    monkeypatch.chdir(files)
    return files


CASES = [
    # run: numbers
    (["run", *TINY, "--budget", "0"], 2, "--budget must be in (0, 1]"),
    (["run", *TINY, "--budget", "1.5"], 2, "--budget must be in (0, 1]"),
    (["run", *TINY, "--budget", "-0.2"], 2, "--budget must be in (0, 1]"),
    (["run", *TINY, "--budget", "nan"], 2, "--budget must be in (0, 1]"),
    (["run", *TINY, "--budget", "inf"], 2, "--budget must be in (0, 1]"),
    (["run", *TINY, "--budget", "lots"], 2, "--budget must be a fraction"),
    (["run", *TINY, "--budget", "0.2,,0.4"], 2, "got ''"),
    (["run", *TINY, "--budget", ""], 2, "got ''"),
    (["run", *TINY, "--budget", "1e-9"], 2, "keeps 0 of the 2880 visual tokens"),
    (["run", *TINY, "--batch", "0"], 2, "--batch must be at least 1"),
    (["run", *TINY, "--batch", "-3"], 2, "--batch must be at least 1"),
    (["run", *TINY, "--batch", "99999"], 2, "the inputs of one request alone take"),
    (["run", *TINY, "--new-tokens", "0"], 2, "--new-tokens must be at least 1"),
    (["run", *TINY, "--new-tokens", "100000"], 2, "beyond the model's 4096-token context"),
    (["run", *TINY, "--warmup", "-1"], 2, "--warmup must be in 0..10000"),
    (["run", *TINY, "--repeats", "0"], 2, "--repeats must be in 1..10000"),
    (["run", *TINY, "--seed", "-1"], 2, "--seed must be in 0..2**63-1"),
    (["run", *TINY, "--seed", str(2**70)], 2, "--seed must be in 0..2**63-1"),
    (["run", *TINY, "--min-duration", "inf"], 2, "--min-duration must be in 0..3600 seconds"),
    (["run", *TINY, "--min-duration", "1e308"], 2, "--min-duration must be in 0..3600 seconds"),
    (["run", *TINY, "--min-duration", "nan"], 2, "--min-duration must be in 0..3600 seconds"),
    (["run", *TINY, "--min-duration", "-1"], 2, "--min-duration must be in 0..3600 seconds"),
    (["run", *TINY, "--warmup", "10001"], 2, "--warmup must be in 0..10000"),
    (["run", *TINY, "--repeats", "10001"], 2, "--repeats must be in 1..10000"),
    (["run", *TINY, "--repeats", "10000", "--new-tokens", "64"], 2, "pass --yes to start it"),
    # run: methods and their parameters
    (["run", *TINY, "--method", "magic"], 2, "unknown method 'magic'"),
    (["run", *TINY, "--method", "hired", "--budget", "adaptive"], 2, "needs a numeric budget"),
    (["run", *TINY, "--method", "prumerge", "--fidelity", "reference"], 2, "adaptive only"),
    (["run", *TINY, "--method", "random", "--fidelity", "reference"], 2, "no 'reference' fidelity"),
    (["run", *TINY, "--fidelity", "exact"], 2, "unknown fidelity 'exact'"),
    (["run", *TINY, "--param", "alpha"], 2, "--param must look like NAME=VALUE"),
    (["run", *TINY, "--param", "alpha=lots"], 2, "alpha must be a float"),
    (["run", *TINY, "--param", "alpha=2"], 2, "alpha must be in [0, 1]"),
    (["run", *TINY, "--param", "l_final=99"], 2, "l_final must be a vision layer in 0..3"),
    (["run", *TINY, "--method", "all", "--param", "colour=1"], 2, "no method measured takes"),
    (["run", *TINY, "--method", "none", "--param", "alpha=0.3"], 2, "none takes no such parameter"),
    # run: the vllm engine (the main venv has no vLLM: make test-vllm runs it in its own)
    (["run", *TINY, "--engine", "vllm"], 2, "needs vLLM, which is not installed: pip install"),
    (
        ["run", *TINY, "--engine", "vllm", "--method", "prumerge", "--budget", "adaptive"],
        2,
        "prumerge adaptive cannot run on the vllm engine",
    ),
    (["run", *TINY, "--engine", "vllm", "--method", "fastv"], 2, "fastv cannot run on the vllm engine"),
    (["run", *TINY, "--engine", "vllm", "--method", "dart"], 2, "dart cannot run on the vllm engine"),
    (
        ["run", *TINY, "--engine", "vllm", "--fidelity", "reference"],
        2,
        "the vllm engine runs paper fidelity only",
    ),
    (["oom-boundary", *TINY, "--engine", "vllm"], 2, "vLLM schedules what fits in its KV cache"),
    (["run", *TINY, "--engine", "vllm", "--memory-cap", "8GiB"], 2, "vLLM sizes its own KV cache"),
    # serve-bench: its load, and what vLLM cannot serve (before any server starts)
    (["serve-bench", *TINY, "--rate", "0"], 2, "--rate must be above 0 requests per second"),
    (["serve-bench", *TINY, "--rate", "-2"], 2, "--rate must be above 0 requests per second"),
    (["serve-bench", *TINY, "--rate", "nan"], 2, "--rate must be above 0 requests per second"),
    (
        ["serve-bench", *TINY, "--rate", "1,fast"],
        2,
        "--rate must be requests per second (or inf), got 'fast'",
    ),
    (["serve-bench", *TINY, "--requests", "0"], 2, "--requests must be at least 1"),
    (["serve-bench", *TINY, "--concurrency", "0"], 2, "--concurrency must be at least 1"),
    (["serve-bench", *TINY, "--slo-ttft-ms", "-5"], 2, "--slo-ttft-ms must be above 0"),
    (["serve-bench", *TINY, "--method", "fastv"], 2, "fastv cannot run on the vllm engine"),
    (
        ["serve-bench", *TINY, "--method", "prumerge", "--budget", "adaptive"],
        2,
        "cannot run on the vllm engine",
    ),
    (["serve-bench", *TINY], 2, "(--engine vllm, serve-bench) needs vLLM, which is not installed"),
    # run: model, weights, device
    (["run", "--model", "no-such-model"], 2, "unknown model 'no-such-model'"),
    (["run", *TINY, "--weights", "pretrained"], 2, "no local weights for tiny"),
    (["run", *TINY, "--weights", "sometimes"], 2, "unknown --weights"),
    (["run", *TINY, "--dtype", "int3"], 2, "unknown dtype"),
    (["run", "--model", "tiny", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["run", "--model", "tiny", "--device", "cuda"], 2, "torch sees no CUDA GPU"),
    (["run", "--model", "tiny", "--device", "cuda:7"], 2, "torch sees no CUDA GPU"),
    (["run", *TINY, "--memory-cap", "24GiB"], 2, "needs a CUDA device"),
    (["run", *TINY, "--memory-cap", "lots"], 2, "--memory-cap: memory size must look like"),
    (["run", "--model", "llava-next-7b", "--device", "cpu"], 2, "needs about"),
    (
        ["run", "--model", "llava-next-7b", "--device", "cpu", "--dtype", "bfloat16", "--batch", "1"],
        2,
        "is a GPU workload",
    ),
    # run: images and prompt
    (["run", *TINY, "--images", "/nonexistent/folder"], 2, "image folder not found"),
    (["run", *TINY, "--images", "empty"], 2, "no images"),
    (["run", *TINY, "--images", "broken"], 2, "cannot read image"),
    (["run", *TINY, "--images", ".", "--batch", "1"], 2, "cannot read image"),
    (["run", *TINY, "--images", "broken", "--image-size", "600x600"], 2, "exclude each other"),
    (["run", *TINY, "--image-size", "600by600"], 2, "must look like WIDTHxHEIGHT"),
    (["run", *TINY, "--image-size", "0x600"], 2, "must look like WIDTHxHEIGHT"),
    (["run", *TINY, "--image-size", "100000x100000"], 2, "decompression-bomb limit"),
    (["run", *TINY, "--prompt", "<image> what is it?"], 2, "must not contain <image>"),
    (["run", *TINY, "--prompt", "  "], 2, "--prompt is empty"),
    # run: outputs
    (["run", *TINY, "--output", "empty"], 2, "not a regular file"),
    (["run", *TINY, "--output", "photo.jpg"], 2, "is not a hired-bench results file"),
    (["run", *TINY, "--output", "ok.toml"], 2, "is not a hired-bench results file"),
    (["run", *TINY, "--output", "garbage.jsonl"], 2, "is not a hired-bench results file"),
    (["run", *TINY, "--output", "/dev/full"], 2, "not a regular file"),
    (["run", *TINY, "--output", "photo.jpg/r.jsonl"], 2, "is not a folder"),
    (["run", *TINY, "--output", "/proc/nope/r.jsonl"], 2, "cannot hold new files"),
    (["run", *TINY, "--images", "fifo"], 2, "not a regular file"),
    (["run", *TINY, "--py-spy", "host.txt"], 2, "expected a .svg file"),
    (["run", *TINY, "--py-spy", "/nonexistent/host.svg"], 2, "folder does not exist"),
    (["run", *TINY, "--torch-trace", "trace.txt"], 2, "expected a .json file"),
    # sweep
    (["sweep", "no-such.toml"], 2, "sweep file not found"),
    (["sweep", "empty"], 2, "sweep file not found"),
    (["sweep", "broken.toml"], 2, "not valid TOML"),
    (["sweep", "typo.toml"], 2, "did you mean 'batch_sizes'"),
    (["sweep", "budget.toml"], 2, 'budgets are fractions in (0, 1] or "adaptive"'),
    (["sweep", "cap.toml"], 2, "needs a CUDA device"),
    (["sweep", "prompt.toml"], 2, "prompt: must not contain <image>"),
    (["sweep", "seed.toml"], 2, "seed: out of range"),
    (["sweep", "big.toml"], 2, "llava-next-7b"),
    (["sweep", "ok.toml", "--output", "photo.jpg"], 2, "is not a hired-bench results file"),
    (["sweep", "ok.toml", "--output", "/proc/nope/r.jsonl"], 2, "cannot hold new files"),
    (["sweep", "deep.toml"], 2, "nested too deep"),
    (["sweep", "huge.toml"], 2, "the grid has 20,001 points, more than the 20,000"),
    (["sweep", "huge.toml", "--dry-run"], 2, "the grid has 20,001 points, more than the 20,000"),
    (["sweep", "long.toml"], 2, "pass --yes to start it"),
    (["sweep", "endless.toml"], 2, "min_duration: out of range"),
    # oom-boundary, predict
    (["oom-boundary", *TINY], 2, "use hired-bench predict"),
    (["oom-boundary", *TINY, "--max-batch", "0"], 2, "--max-batch must be at least 1"),
    (["oom-boundary", *TINY, "--output", "/proc/nope/b.jsonl"], 2, "cannot hold new files"),
    (["oom-boundary", *TINY, "--output", "photo.jpg/b.jsonl"], 2, "is not a folder"),
    (["predict", "--gpu-memory", "0"], 2, "leaves nothing for PyTorch"),
    (["predict", "--gpu-memory", "lots"], 2, "memory size must look like"),
    (["predict", "--gpu-memory", "24GiB", "--dtype", "int8"], 2, "unknown --dtype"),
    (["predict", "--gpu-memory", "24GiB", "--output", "/proc/nope/p.jsonl"], 2, "cannot hold new files"),
    (["eval", *TINY, "--tasks", "mme", "--output", "/proc/nope/e.jsonl"], 2, "cannot hold new files"),
    (
        ["predict", "--gpu-memory", "24GiB", "--method", "hired", "--budget", "0.2,adaptive"],
        2,
        "needs a numeric budget",
    ),
    # show-selection
    (["show-selection", "--image", "bomb.png", *TINY], 2, "decompression bomb"),
    (["show-selection", "--image", "missing.png", *TINY], 2, "cannot read image"),
    (["show-selection", "--image", "fifo/x.png", *TINY], 2, "not a regular file"),
    # methods
    (["methods", "--update", "/dev/full"], 2, "not a regular file"),
    (["methods", "--update", "fifo/x.png"], 2, "not a regular file"),
    (["show-selection", "--image", "bomb.png", *TINY, "--method", "all"], 2, "one method at a time"),
    (["show-selection", "--image", "bomb.png", *TINY, "--out", "sel.txt"], 2, "--out must end in .png"),
    (["show-selection", "--image", "bomb.png", *TINY, "--seed", "-1"], 2, "--seed must be in 0..2**63-1"),
    # report, compare, env
    (["report", "nope.jsonl"], 2, "results not found"),
    (["report", "empty"], 2, "no .jsonl result files"),
    (["report", "garbage.jsonl"], 2, "no usable result records"),
    (["report", "deep.jsonl"], 2, "nested too deep"),
    (["report", R, "--out", "photo.jpg"], 2, "is not a folder"),
    (["compare", R], 2, "needs results from two machines"),
    (["env", "--device", "cuda"], 2, "torch sees no CUDA GPU"),
]


@pytest.mark.parametrize(("args", "code", "message"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input(place, args, code, message):
    results = place / R
    before = results.read_bytes()
    output = (
        []
        if {"--output", "report", "compare", "env", "predict", "show-selection", "methods"} & set(args)
        else ["--output", R]
    )
    result = RUNNER.invoke(app, [*args, *output])
    said = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr + result.stdout
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    assert len(said) == 1 and said[0].startswith("error:") and message in said[0], said
    after = results.read_bytes()
    assert after.startswith(before)
    assert all(json.loads(line)["schema_version"] == 1 for line in after[len(before) :].splitlines())


def test_enough_bad_inputs():
    assert len(CASES) >= 90


def test_help_and_an_early_refusal_load_neither_torch_nor_transformers():
    """`hired-bench --help` and a refused --budget answer before the heavy libraries load (they take
    seconds): the real entry point in a fresh interpreter, with the modules it loaded listed."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from reports.cli import main\n"
        "sys.argv = ['hired-bench', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    heavy = sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules)\n"
        "    print('exit', exit.code, 'heavy', heavy, file=sys.stderr)\n"
    )
    for args, code in ((["--help"], 0), (["run", "--budget", "7"], 2), (["sweep", "no-such.toml"], 2)):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        last = done.stderr.strip().splitlines()[-1]
        assert last == f"exit {code} heavy []", (args, done.stderr[-500:])
