"""Sweeps on Ray ([ray] extra), against a real local cluster started by the test (2 CPUs): the same
records as a local sweep, a worker killed mid-point, the driver killed and resumed, GPU types."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from profiler.cli import app, optional_values
from profiler.results.store import read_records
from tests.conftest import need_extra
from workloads.errors import InputError
from workloads.sweep import load_sweep

pytestmark = pytest.mark.ray  # make test-fast leaves these out

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()
SLOW = """
models = ["tiny"]
weights = "random"
batch_sizes = [1]
image_sizes = ["600x600"]
new_tokens = [4]
warmup = 0
repeats = 12
[[methods]]
name = "all"
budgets = [0.2]
"""


def cli(*args, timeout=600, extra_env=None, **popen):
    """The real command line in a process of its own (Ray's processes are its children)."""
    command = [sys.executable, "-c", "from reports.cli import main; main()", *args]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "RAY_DEDUP_LOGS": "0", **(extra_env or {})}
    if popen:
        return subprocess.Popen(command, cwd=REPO, env=env, text=True, **popen)
    return subprocess.run(command, cwd=REPO, env=env, text=True, capture_output=True, timeout=timeout)


def comparable(record: dict) -> tuple:
    """What must not depend on where a point ran: its config, status and visual tokens kept."""
    m = record["metrics"] or {}
    return (json.dumps(record["config"], sort_keys=True), record["status"], str(m.get("visual_tokens")))


def test_smoke_on_ray_records_what_a_local_sweep_records(tmp_path):
    need_extra("ray")
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    done = cli("sweep", "smoke", "--output", str(local))
    assert done.returncode == 0, done.stderr[-2000:]
    # with RAY_ADDRESS pointing nowhere: --ray local starts a cluster of its own all the same
    done = cli(
        "sweep", "smoke", "--ray", "local", "--output", str(remote), extra_env={"RAY_ADDRESS": "127.0.0.1:1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 workers, each on 1 CPU(s)" in done.stderr
    planned = [p.key for p in load_sweep(REPO / "workloads" / "smoke.toml").points]
    on_ray = read_records(remote)
    assert sorted(r["config"]["point_key"] for r in on_ray) == sorted(planned)  # each exactly once
    assert sorted(map(comparable, on_ray)) == sorted(map(comparable, read_records(local)))
    assert len({r["run_id"] for r in on_ray}) == 1


def ray_processes() -> list[int]:
    """PIDs of processes Ray titles `ray::...` (its workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def worker_measuring(timeout: float = 120) -> int:
    """The PID of a Ray worker process inside PointWorker.measure (Ray titles its processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in ray_processes():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::PointWorker.measure"):
                    return pid
        time.sleep(0.1)
    raise AssertionError("no Ray worker started measuring")


def wait_for_records(out: Path, n: int, run: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (out.exists() and len(out.read_bytes().splitlines()) >= n):
        assert time.monotonic() < deadline and run.poll() is None, f"fewer than {n} records written"
        time.sleep(0.05)


def test_a_worker_killed_mid_point_is_an_error_and_the_rest_goes_on(tmp_path):
    need_extra("ray")
    grid, out = tmp_path / "slow.toml", tmp_path / "r.jsonl"
    grid.write_text(SLOW)
    run = cli("sweep", str(grid), "--ray", "local", "--output", str(out), stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)  # fmt: skip
    try:
        victim = worker_measuring()
        time.sleep(1.0)  # inside the point's requests
        os.kill(victim, signal.SIGKILL)
        _, stderr = run.communicate(timeout=600)
    finally:
        run.kill()
    assert run.returncode == 1, stderr[-2000:]  # a point with status error
    records = read_records(out)
    planned = [p.key for p in load_sweep(grid).points]
    assert sorted(r["config"]["point_key"] for r in records) == sorted(planned)
    failed = [r for r in records if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["status"] == "error"
    assert failed[0]["error"].startswith(f"the Ray worker measuring this point died (pid {victim},")
    assert "Worker exit type" in failed[0]["error"]


def test_driver_stopped_or_killed_then_resumed_measures_each_point_once(tmp_path):
    need_extra("ray")
    grid, out = tmp_path / "slow.toml", tmp_path / "r.jsonl"
    grid.write_text(SLOW.replace("repeats = 12", "repeats = 3"))
    planned = [p.key for p in load_sweep(grid).points]
    args = ("sweep", str(grid), "--ray", "local", "--resume", "--output", str(out))
    # SIGTERM: the driver stops its workers and says what it recorded
    run = cli(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_records(out, 2, run)
    run.terminate()
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr[-2000:]
    assert "interrupted: " in stderr and "points recorded in" in stderr
    assert not ray_processes()
    # kill -9: nothing can be said, nothing is lost
    before = len(read_records(out))
    run = cli(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_records(out, before + 2, run)
        os.kill(run.pid, signal.SIGKILL)  # the driver only
        run.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # what Ray left of its session
    assert before + 2 <= len(read_records(out)) < len(planned)
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = out.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole
    keys = Counter(r["config"]["point_key"] for r in read_records(out))
    assert sorted(keys) == sorted(planned) and set(keys.values()) == {1}


@pytest.fixture
def typed_cluster():
    """A Ray session in this process whose one node advertises two (fake) GPUs of two types."""
    ray = need_extra("ray")
    ray.init(
        num_cpus=2,
        num_gpus=2,
        resources={"accelerator_type:A100": 1, "accelerator_type:L4": 1},
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        logging_level="WARNING",
    )
    yield ray
    ray.shutdown()


def typed_grid(tmp_path, types):
    grid = tmp_path / "typed.toml"
    text = SLOW.replace("repeats = 12", "repeats = 1").replace('name = "all"', 'name = "hired"')
    grid.write_text(f"accelerators = {json.dumps(types)}\n" + text)
    return grid


def test_a_gpu_type_the_cluster_lacks_is_refused_before_anything_runs(tmp_path, typed_cluster):
    out = tmp_path / "r.jsonl"
    result = RUNNER.invoke(app, ["sweep", str(typed_grid(tmp_path, ["H100"])), "--ray", "auto", "--output",
                                 str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert "this Ray cluster has no H100 GPUs (it has A100 (2 GPU), L4 (2 GPU)); nothing was measured" in (
        result.stderr
    )
    assert not out.exists()


def test_the_grid_runs_once_per_gpu_type(tmp_path, typed_cluster):
    out = tmp_path / "r.jsonl"
    grid = typed_grid(tmp_path, ["A100", "L4"])
    result = RUNNER.invoke(app, ["sweep", str(grid), "--ray", "auto", "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    records = read_records(out)
    assert Counter(r["config"]["accelerator"] for r in records) == {"A100": 2, "L4": 2}
    assert len({r["config"]["point_key"] for r in records}) == 4 and all(r["status"] == "ok" for r in records)
    assert all(r["hardware"].get("cpu") for r in records)  # each record carries its fingerprint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "local", "--isolate"], "--isolate and --ray exclude each other"),
        (["--ray", "local", "--ray-cpus-per-point", "0"], "--ray-cpus-per-point must be at least 1"),
    ],
)
def test_bad_ray_input(tmp_path, args, message):
    result = RUNNER.invoke(app, ["sweep", "smoke", *args, "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and message in result.stderr


def test_gpu_types_need_ray_and_ray_needs_its_extra(tmp_path, monkeypatch):
    grid = typed_grid(tmp_path, ["A100"])
    result = RUNNER.invoke(app, ["sweep", str(grid), "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "accelerators: GPU types are a Ray cluster's; add --ray" in result.stderr
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    result = RUNNER.invoke(app, ["sweep", "smoke", "--ray", "local", "--output", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "Ray is not installed: pip install 'hired-bench[ray]'" in result.stderr


def test_ray_alone_means_auto():
    assert optional_values(["sweep", "smoke", "--ray"]) == ["sweep", "smoke", "--ray", "auto"]
    assert optional_values(["sweep", "smoke", "--ray", "--resume"]) == [
        "sweep",
        "smoke",
        "--ray",
        "auto",
        "--resume",
    ]
    assert optional_values(["sweep", "smoke", "--ray", "local"]) == ["sweep", "smoke", "--ray", "local"]


@pytest.mark.parametrize("address", ["127.0.0.1:1", "nowhere"])  # nothing answers; not an address Ray takes
def test_no_cluster_at_the_address_is_one_line(tmp_path, address):
    need_extra("ray")
    result = cli("sweep", "smoke", "--ray", address, "--output", str(tmp_path / "r.jsonl"), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: no Ray cluster at '{address}'" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no Ray cluster")  # the last word, alone


def test_what_no_worker_could_run_is_refused_once_the_cluster_is_known(tmp_path, typed_cluster):
    out = tmp_path / "r.jsonl"
    grid = typed_grid(tmp_path, ["A100"])
    result = RUNNER.invoke(app, ["sweep", str(grid), "--ray", "auto", "--ray-cpus-per-point", "4", "--output",
                                 str(out)])  # fmt: skip
    assert result.exit_code == 2 and not out.exists()
    refused = "--ray-cpus-per-point 4: no A100 GPU node of this Ray cluster has 4 CPUs for a worker"
    assert f"{refused} (the largest has 2)" in result.stderr
    grid.write_text(
        grid.read_text().replace('name = "hired"', 'name = "hired"\nl_final = 9')
    )  # tiny has 4 layers
    result = RUNNER.invoke(app, ["sweep", str(grid), "--ray", "auto", "--output", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "l_final" in result.stderr and "Traceback" not in result.stderr


def test_workers_take_whole_cpus_on_one_node():
    from profiler.orchestrate.ray import Cluster, Node, plan_workers
    from workloads.point import Point

    points = [Point("none", 1.0, {}, "paper", seed=s) for s in range(8)]
    two_nodes = Cluster([Node(3, 0), Node(3, 0)])  # 6 CPUs, but a 2-CPU worker fits once per node
    assert plan_workers(points, two_nodes, 2) == ({None: 2}, False)
    typed = [Point("none", 1.0, {}, "paper", seed=s, accelerator="L4") for s in range(8)]
    mixed = Cluster([Node(16, 4, ("A100",)), Node(2, 2, ("L4",))])
    assert plan_workers(typed, mixed, 1) == ({"L4": 2}, True)
    with pytest.raises(
        InputError, match=r"no L4 GPU node of this Ray cluster has 4 CPUs for a worker \(the largest has 2\)"
    ):
        plan_workers(typed, mixed, 4)


def test_a_failed_worker_is_named_in_the_record():
    ray = need_extra("ray")
    from profiler.orchestrate.ray import failure

    oom = ray.exceptions.OutOfMemoryError(
        "Task was killed due to the node running low on memory.\nMemory on the node"
    )
    assert failure(oom) == (
        "the Ray worker measuring this point was killed as its node ran low on host memory: "
        "Task was killed due to the node running low on memory."
    )
    raised = ray.exceptions.RayTaskError(
        "measure", "Traceback ...", RuntimeError("CUDA error: misaligned address")
    )
    assert failure(raised) == "RuntimeError: CUDA error: misaligned address"


def test_dry_run_plans_each_gpu_type_as_a_gpu(tmp_path):
    from dataclasses import replace

    from profiler.capacity.model import plan_predictions

    grid = tmp_path / "typed.toml"
    grid.write_text('accelerators = ["A100", "L4"]\nmodels = ["llava-next-7b"]\nbatch_sizes = [1]\n'
                    '[[methods]]\nname = "hired"\nbudgets = [0.2]\n')  # fmt: skip
    result = RUNNER.invoke(app, ["sweep", str(grid), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "│ llava-next-7b" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["A100", "A100", "L4", "L4"]
    # planned as the workers will run it: float16 on a GPU, whatever this machine has
    as_gpu = [replace(p, accelerator=None, dtype="float16") for p in load_sweep(grid).points[:2]]
    peaks = [f"{row['peak_gib']:.1f}" for row in plan_predictions(as_gpu)]
    assert [row.split("│")[-3].strip() for row in rows[:2]] == peaks
    assert "running it here would be refused" not in result.stdout
    # a CUDA device, a memory cap and the 7B's layers: the workers' GPUs, not this machine, are asked
    grid.write_text('accelerators = ["A100"]\nmodels = ["auto"]\ndevice = "cuda"\nmemory_cap = "20GiB"\n'
                    'batch_sizes = [1]\n[[methods]]\nname = "hired"\nbudgets = [0.2]\n'
                    'l_final = 20\n')  # fmt: skip
    result = RUNNER.invoke(app, ["sweep", str(grid), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "│ A100 │ llava-next-7b │ hired" in result.stdout and "l_final=20" in result.stdout
