"""Nothing lost, nothing hung: the results writer under kills, races and full disks; readers that
never crash; guards that answer before anything loads; Ctrl-C that says what was kept."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import profiler.capacity.guards
import profiler.results.store
from profiler.results.store import append_record, make_record, read_records
from reports.cli import app
from reports.data import load_results
from tests.conftest import QUICK, TINY

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()
FAST = [
    *TINY,
    *QUICK,
    "--batch",
    "1",
]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def record(i: int, **extra) -> dict:
    return {**make_record("r", "error", {"method": "none", "i": i}, {}, None, error="E: x"), **extra}


def whole_lines(path: Path) -> list[dict]:
    text = path.read_bytes()
    assert text.endswith(b"\n")
    return [json.loads(line) for line in text.splitlines()]


# --- the writer -------------------------------------------------------------------------------


def test_a_writer_killed_mid_line_loses_nothing_else(tmp_path):
    out = tmp_path / "r.jsonl"
    killer = f"""
        import os, signal
        from profiler.results.store import append_record, make_record
        for i in range(2):
            append_record({str(out)!r}, make_record("dead", "error", {{"i": i}}, {{}}, None))
        fd = os.open({str(out)!r}, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b'{{"schema_version": 1, "run_id": "dead", "sta')
        os.kill(os.getpid(), signal.SIGKILL)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(killer)], env=ENV, capture_output=True)
    assert done.returncode == -signal.SIGKILL
    result = RUNNER.invoke(app, ["run", *FAST, "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "moved a half-written last line" in result.stderr
    lines = whole_lines(out)
    assert [r["run_id"] for r in lines[:2]] == ["dead", "dead"] and len(lines) == 4  # 2 kept + none + hired
    assert (tmp_path / "r.jsonl.damaged").read_text() == '{"schema_version": 1, "run_id": "dead", "sta\n'


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_complete_last_record_without_newline_is_kept(tmp_path, command):
    out = tmp_path / "r.jsonl"
    append_record(out, record(0))
    append_record(out, record(1))
    out.write_bytes(out.read_bytes()[:-1])  # `head -c -1`: whole records, the last without its newline
    grid = tmp_path / "s.toml"
    grid.write_text(
        'models = ["tiny"]\nweights = "random"\ndevice = "cpu"\nbatch_sizes = [1]\nnew_tokens = [2]\n'
        'warmup = 0\nrepeats = 1\n[[methods]]\nname = "random"\nbudgets = [0.2]\n'
    )
    args = ["run", *FAST] if command == "run" else ["sweep", str(grid)]
    result = RUNNER.invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    lines = whole_lines(out)
    assert [r["config"].get("i") for r in lines[:2]] == [0, 1] and len(lines) == 4
    assert not (tmp_path / "r.jsonl.damaged").exists() and "moved" not in result.stderr


def test_two_writers_at_once_interleave_no_line(tmp_path):
    out = tmp_path / "new.jsonl"
    writer = f"""
        import sys
        from profiler.results.store import append_record, make_record
        for i in range(200):
            config = {{"i": i, "pad": "x" * 3000}}  # lines longer than a pipe's atomic 4 KiB
            append_record({str(out)!r}, make_record(sys.argv[1], "error", config, {{}}, None))
    """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), name], env=ENV)
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lines = whole_lines(out)
    assert len(lines) == 400
    for name in ("a", "b"):
        assert [r["config"]["i"] for r in lines if r["run_id"] == name] == list(range(200))


def test_a_full_disk_keeps_the_file_whole_and_prints_what_was_not_written(tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    append_record(out, record(0))
    before = out.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the line
        if bytes(data[:1]) == b"{":
            real_write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(profiler.results.store.os, "write", half_then_full)
    result = RUNNER.invoke(app, ["run", *FAST, "--output", str(out)])
    assert result.exit_code == 1
    said = result.stderr.strip().splitlines()[-1]
    assert (
        said.startswith("error: cannot write to") and "No space left on device" in said and str(out) in said
    )
    assert out.read_bytes() == before  # the half line was taken back
    unwritten = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["config"]["method"] for r in unwritten] == ["none"] and unwritten[0]["status"] == "ok"


def test_a_real_64k_tmpfs_fills(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()[:120]}")
    try:
        (disk / "filler").write_bytes(b"x" * (64 * 1024 - 6 * 1024))  # about one record of room left
        out = disk / "r.jsonl"
        result = RUNNER.invoke(app, ["run", *FAST, "--method", "all", "--output", str(out)])
        assert result.exit_code == 1, result.stderr
        assert "No space left on device" in result.stderr.strip().splitlines()[-1]
        written = whole_lines(out) if out.exists() and out.stat().st_size else []
        printed = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(written) + len(printed) >= 1 and all(r["status"] == "ok" for r in written + printed)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --- readers ----------------------------------------------------------------------------------

GOOD = json.loads(
    (REPO / "tests" / "fixtures" / "results" / "results_gpu_a.jsonl").read_text().splitlines()[0]
)


def variant(**config_or_top) -> bytes:
    r = json.loads(json.dumps(GOOD))
    for key, value in config_or_top.items():
        if key.startswith("config."):
            name = key.split(".", 1)[1]
            if value is ...:
                del r["config"][name]
            else:
                r["config"][name] = value
        else:
            r[key] = value
    return json.dumps(r).encode()


BAD_LINES = {
    "not UTF-8": b'{"schema_version": 1, "\xff\xfe": 1}',
    "not JSON (a half-written line?)": b'{"schema_version": 1, "sta',
    "NaN or infinity": variant(metrics={**GOOD["metrics"], "ttft_s": {"median": float("nan")}}),
    "an ok record with null metrics": variant(metrics=None),
    "config.batch_size is not a whole number in 0..1048576": variant(**{"config.batch_size": "4"}),
    "no config.method": variant(**{"config.method": ...}),
    "schema version 2 is newer than this suite's 1": variant(schema_version=2),
    "unknown kind 'banana'": variant(kind="banana"),
    "not a JSON object": b"[1, 2, 3]",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
}


def test_every_bad_line_is_skipped_and_counted_by_reason(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "good.jsonl").write_bytes(variant() + b"\n")
    (folder / "copy.jsonl").write_bytes(variant() + b"\n")  # the same record in another file
    for i, line in enumerate(BAD_LINES.values()):
        (folder / f"bad{i}.jsonl").write_bytes(line + b"\n")
    loaded = load_results([folder, folder / "good.jsonl"])  # good.jsonl named twice: read once
    assert len(loaded.points) == 1 and loaded.duplicates == 1 and len(loaded.files) == 2 + len(BAD_LINES)
    assert sorted(why for _, why in loaded.skipped) == sorted(BAD_LINES)
    result = RUNNER.invoke(app, ["report", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"{len(BAD_LINES)} line(s) not used" in text and "schema version 2 is newer" in text
    only_bad = RUNNER.invoke(app, ["report", str(folder / "bad3.jsonl"), "--out", str(tmp_path / "o2")])
    assert only_bad.exit_code == 2 and "no usable result records" in only_bad.stderr


@pytest.mark.slow
def test_a_200mb_file_reads_in_bounded_memory(tmp_path):
    big = tmp_path / "big.jsonl"
    r = json.loads(json.dumps(GOOD))
    r["metrics"]["itl_s"]["values"] = [0.0123456789] * 16_000  # ~200 KB of raw values per record
    line = json.dumps(r).encode() + b"\n"
    with open(big, "wb") as f:
        for _ in range(200_000_000 // len(line) + 1):
            f.write(line)
    reader = (  # VmHWM: the peak RSS; reading may add at most a bounded amount to what imports took
        "import sys, pathlib; from reports.data import load_results\n"
        "def vm(k): return next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith(k))\n"
        "before = vm('VmHWM'); n = len(load_results([pathlib.Path(sys.argv[1])]).points)\n"
        "print(n, vm('VmHWM') - before)"
    )
    done = subprocess.run([sys.executable, "-c", reader, str(big)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    points, peak_kib = map(int, done.stdout.split())
    assert points == 1 and big.stat().st_size >= 200_000_000  # identical lines are one record
    assert peak_kib < 100 * 1024, f"reading 200 MB raised the peak RSS by {peak_kib / 1024:.0f} MiB"


# --- guards -----------------------------------------------------------------------------------


def test_a_7b_float32_on_a_24gib_host_is_refused_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(profiler.capacity.guards, "host_available_gib", lambda: 24.0)
    start = time.perf_counter()
    result = RUNNER.invoke(
        app, ["run", "--model", "llava-next-7b", "--device", "cpu", "--output", str(tmp_path / "r")]
    )
    took = time.perf_counter() - start
    assert result.exit_code == 2 and "needs about" in result.stderr and "24.0 GiB" in result.stderr
    assert took < 5, f"the guard took {took:.1f} s"
    monkeypatch.setattr(profiler.capacity.guards, "host_available_gib", lambda: 200.0)
    result = RUNNER.invoke(
        app, ["run", "--model", "llava-next-7b", "--device", "cpu", "--output", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "is a GPU workload" in result.stderr and "minutes" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_during_a_slow_load_says_what_was_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    slow = f"""
        import time, profiler.measure.session
        def slow_load(*args, **kwargs):
            print("loading", flush=True)
            time.sleep(60)
        profiler.measure.session.load_model = slow_load
        from profiler.cli import main
        import sys
        sys.argv = ["hired-bench", "run", "--model", "tiny", "--device", "cpu", "--output", {str(out)!r}]
        main()
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(slow)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"loading"
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=10)
    took = time.perf_counter() - start
    said = proc.stderr.read().decode().strip().splitlines()
    # prompt, not after the 60 s load (a bound loose enough for a loaded CI machine)
    assert code == 130 and said[-1] == "interrupted: no point recorded" and took < 10, (code, said, took)


@pytest.mark.slow
def test_ctrl_c_after_some_points_counts_them(tmp_path):
    out = tmp_path / "r.jsonl"
    slow = f"""
        import time, profiler.measure.runner
        real = profiler.measure.runner.run_request
        def slow_for_hired(lm, workload, point, *rest):
            if point.method == "hired":
                print("measuring hired", flush=True)
                time.sleep(60)
            return real(lm, workload, point, *rest)
        profiler.measure.runner.run_request = slow_for_hired
        from profiler.cli import main
        import sys
        sys.argv = ["hired-bench", "run", {", ".join(repr(a) for a in FAST)}, "--output", {str(out)!r}]
        main()
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(slow)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"measuring hired"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert proc.stderr.read().decode().strip().splitlines()[-1] == f"interrupted: 1 points recorded in {out}"
    assert [r["config"]["method"] for r in read_records(out)] == ["none"]


def test_a_child_process_dies_with_the_command_that_started_it(tmp_path):
    """The NVML sampler, an isolated point and py-spy start through die_with_parent: a command killed
    outright (SIGKILL, no clean-up runs) leaves no child behind."""
    parent = textwrap.dedent(
        """
        import subprocess, sys, time
        from profiler.instruments.processes import die_with_parent
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        child = subprocess.Popen(sleeper, preexec_fn=die_with_parent)
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, env=ENV, text=True)
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is gone
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
