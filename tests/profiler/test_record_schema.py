"""The records stay byte-compatible: what every writer writes, and every point's key (what --resume matches),
compared with goldens recorded before the record schema took over the writers (tests/fixtures/make_golden.py
writes them; rerun it only for a change to the records that is meant, and say so in the commit)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from profiler.accuracy.evaluate import eval_config
from profiler.bench.checks import Check, check_record
from profiler.capacity.boundary import find_boundaries
from profiler.measure.runner import Runner
from profiler.measure.settings import MeasureSettings
from profiler.orchestrate.local import failed_load
from profiler.results.schema import ABSENT, CONFIG, KIND_SPECS, MAP, PointConfig, problem
from profiler.results.store import iter_lines
from tests.conftest import need_extra
from workloads.images import synthetic_images
from workloads.plan import Workload
from workloads.point import Point
from workloads.sweep import find_sweep, load_sweep, shipped_sweeps

FIXTURES = Path(__file__).parents[1] / "fixtures"
RESULTS = FIXTURES / "results"
POINT_KEYS = FIXTURES / "point_keys.json"
WRITERS = FIXTURES / "writer_records.json"

# sweep-file keys the shipped files leave at their defaults (fields added after 0.1.0 among them), put in
# front of smoke.toml: their points' keys are pinned too
KEY_VARIANTS = {
    "smoke+engines": 'engines = ["eager", "compiled"]\nmin_duration = 2.5\n',
    "smoke+accelerators": 'accelerators = ["A100", "H100"]\nmemory_cap = "24GiB"\nseed = 7\n',
}


def direct_points() -> list[Point]:
    """Points no sweep file plans: a folder of pictures, an adaptive budget, parameters given."""
    return [
        Point(method="hired", budget=0.2, images="pictures", image_sizes=None),
        Point(method="prumerge", budget=None, fidelity="reference", batch_size=4),
        Point(method="hired", budget=0.4, params={"alpha": 0.3, "l_final": 20}, model="llava-next-7b"),
    ]


def point_keys(tmp: Path) -> dict[str, list[str]]:
    """Every point's key, in plan order: of each shipped sweep file, each variant, and direct_points."""
    keys = {name: [p.key for p in load_sweep(find_sweep(name)).points] for name in shipped_sweeps()}
    smoke = find_sweep("smoke").read_text()
    for name, prefix in KEY_VARIANTS.items():
        path = tmp / f"{name}.toml"
        path.write_text(prefix + smoke)
        keys[name] = [p.key for p in load_sweep(path).points]
    keys["direct"] = [p.key for p in direct_points()]
    return keys


def line(value) -> str:
    """A value as profiler.results.store.append_record writes it (its JSON, byte for byte)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def stamped(record: dict) -> dict:
    """The time and the installed versions a record carries are the machine's, not the writer's."""
    out = {
        k: f"<{k}>" if k in ("created_at", "suite_version") and v is not None else v
        for k, v in record.items()
    }
    if isinstance(out.get("config"), dict) and out["config"].get("lmms_eval_version") is not None:
        out["config"] = {**out["config"], "lmms_eval_version": "<lmms_eval_version>"}
    return out


def measured(record: dict) -> dict:
    """A measured record without its measurements: its keys in order, config (the prompt's token counts,
    the model's business, as their number), and the metrics' names (the values are timings)."""
    config = dict(record["config"])
    if isinstance(config.get("prompt_tokens"), list):
        config["prompt_tokens"] = f"<{len(config['prompt_tokens'])} counts>"
    metrics = record["metrics"]
    if record.get("kind") != "oom_boundary" and isinstance(metrics, dict):
        metrics = list(metrics)
    return {**stamped(record), "config": config, "hardware": record["hardware"], "metrics": metrics}


def planned_points() -> list[Point]:
    return [
        Point(method="hired", budget=0.2, model="tiny", weights="random"),
        Point(
            method="prumerge",
            budget=None,
            fidelity="reference",
            memory_cap="24GiB",
            batch_size=2,
            image_sizes=((600, 600), (336, 1000)),
            seed=3,
            engine="compiled",
            min_duration=1.5,
            accelerator="A100",
        ),
        Point(method="none", images="pictures", image_sizes=None, params={}),
    ]


def model_free_writers(tmp: Path) -> dict[str, str]:
    """What the writers that need no model write: a planned point's record (a failed load), an eval config,
    the prediction lines (their keys: the numbers are the memory model's), an instrument check."""
    out = {}
    for i, point in enumerate(planned_points()):
        for sweep in (None, "smoke"):
            exc = RuntimeError("CUDA out of memory" if i == 1 else "no such model")
            out[f"planned {i} sweep={sweep}"] = line(stamped(failed_load(point, sweep, "r", exc)))
        out[f"eval {i}"] = line(stamped({"config": eval_config(point, None, ["textvqa_val"], 50, 1)}))

    class Loaded:  # what eval_config reads of a loaded model
        name, weights, dtype, device = (
            "llava-hf/llava-v1.6-vicuna-7b-hf",
            "pretrained",
            "torch.float16",
            "cuda:0",
        )

    config = eval_config(planned_points()[1], Loaded(), ["a", "b"], None, 4)
    out["eval loaded"] = line(stamped({"config": config}))
    path = tmp / "predictions.jsonl"
    args = ["predict", "--gpu-memory", "24GiB", "--model", "tiny", "--method", "hired", "--budget", "0.2"]
    from profiler.cli import app

    result = CliRunner().invoke(app, [*args, "--output", str(path)])
    assert result.exit_code == 0, result.output
    for i, text in enumerate(path.read_text().splitlines()):
        record = json.loads(text)
        out[f"prediction {i}"] = line(
            {"keys": list(record), "kind": record["kind"], "v": record["schema_version"]}
        )
    check = Check("ttft_clock", 1.0, 1.01, "pass", "a note")
    out["instrument_check"] = line(stamped(check_record(check, "r", {"gpu_name": "GPU A"}, {"model": "x"})))
    return out


def model_writers(tiny, tmp: Path) -> dict[str, str]:
    """What the runner writes on the tiny preset (a measured point, a point measured on inputs built
    apart from it, a point that fails, an OOM-boundary search with its probe)."""
    runner = Runner(tiny, "r", {})
    policy = MeasureSettings(agreement=False)
    point = Point(
        method="hired",
        budget=0.2,
        model="tiny",
        weights="random",
        dtype="float32",
        device="cpu",
        batch_size=2,
        image_sizes=((600, 600), (336, 1000)),
        new_tokens=2,
        warmup=0,
        repeats=1,
        seed=1,
    )
    out = {"runner point": line(measured(runner.measure_point(point, policy)))}
    workload = Workload(synthetic_images([(600, 600)], 2, seed=0), "What is this?", 2)
    # the golden was written when the runner kept the previous point's counts; now they are said
    out["runner workload"] = line(
        measured(
            runner.measure(workload, Point(method="none"), MeasureSettings(0, 1, seed=1, agreement=False))
        )
    )
    failing = Point(method="hired", budget=0.2, params={"alpha": 7.0}, new_tokens=2, warmup=0, repeats=1)
    out["runner error"] = line(stamped(runner.measure_point(failing, policy)))
    path = tmp / "boundary.jsonl"
    probe = Point(method="hired", budget=0.2, new_tokens=2, warmup=0, repeats=1)
    find_boundaries(runner, [probe], 1, path, None, lambda text: None)
    for i, text in enumerate(path.read_text().splitlines()):
        out[f"boundary line {i}"] = line(measured(json.loads(text)))
    return out


def eval_writers(tmp: Path) -> dict[str, str]:
    """What `eval` writes for a point whose model does not load (the records of a task's metrics need
    lmms-eval to run a task: tests/test_accuracy.py)."""
    from profiler.accuracy.evaluate import run_eval

    path = tmp / "eval.jsonl"
    points = [
        Point(method="hired", budget=0.2, model="no-such-model"),
        Point(method="none", model="no-such-model"),
    ]
    list(run_eval(points, ["textvqa_val"], None, 50, 1, path, "r"))
    return {
        f"eval line {i}": line({**stamped(json.loads(text)), "error": "<error>"})
        for i, text in enumerate(path.read_text().splitlines())
    }


def test_every_planned_point_keeps_its_key(tmp_path):
    """--resume matches records by Point.key: a point must keep its key across any rework of Point."""
    golden = json.loads(POINT_KEYS.read_text())
    now = point_keys(tmp_path)
    assert list(now) == list(golden)
    for name, keys in now.items():
        assert keys == golden[name], f"{name}: a point's key moved (or the shipped sweep file changed)"


def test_the_writers_without_a_model_write_what_they_wrote(tmp_path):
    golden = json.loads(WRITERS.read_text())["model_free"]
    now = model_free_writers(tmp_path)
    assert list(now) == list(golden)
    for name, text in now.items():
        assert text == golden[name], name


def test_the_runner_writes_what_it_wrote(tiny, tmp_path):
    golden = json.loads(WRITERS.read_text())["model"]
    now = model_writers(tiny, tmp_path)
    assert list(now) == list(golden)
    for name, text in now.items():
        assert text == golden[name], name


@pytest.mark.eval
def test_eval_writes_what_it_wrote(tmp_path):
    need_extra("lmms_eval")
    golden = json.loads(WRITERS.read_text())["eval"]
    assert eval_writers(tmp_path) == golden


@pytest.mark.parametrize("name", ["runner point", "runner workload", "runner error", "boundary line 0"])
def test_a_runner_config_has_the_old_builders_keys_in_order(name):
    """The keys of Runner.config before the schema (profiler/measure/runner.py), in its order."""
    old = [
        "model", "weights", "dtype", "device", "method", "budget", "fidelity", "method_params", "batch_size",
        "image_sizes", "image_source", "prompt", "prompt_tokens", "new_tokens", "warmup", "repeats",
        "memory_cap_gib", "seed", "engine", "min_duration_s", "accelerator", "point_key",
    ]  # fmt: skip
    config = json.loads(json.loads(WRITERS.read_text())["model"][name])["config"]
    assert [k for k in config if k != "boundary_search"] == old


def fixture_records() -> list[dict]:
    """Every record of the committed result files (their half-written last line left out)."""
    return [r for path in sorted(RESULTS.glob("*.jsonl")) for r, why, _ in iter_lines(path) if why is None]


def golden_configs() -> list[dict]:
    """The config of every record the writers wrote, as recorded (every kind that has one)."""
    written = [
        json.loads(text) for part in json.loads(WRITERS.read_text()).values() for text in part.values()
    ]
    return [r["config"] for r in written if isinstance(r.get("config"), dict)]


def test_every_fixture_record_passes_the_one_validator():
    records = fixture_records()
    assert len(records) == 27  # 12 + 1 failed + a boundary + a prediction on GPU A, 12 on GPU B
    assert {r.get("kind", "point") for r in records} == {"point", "oom_boundary", "prediction"}
    assert [problem(r) for r in records] == [None] * len(records)


@pytest.mark.parametrize("source", ["fixtures", "writers"])
def test_configs_round_trip_byte_for_byte(source):
    """PointConfig holds every key a config has, in the order written: renaming, dropping or moving a field
    changes these lines (a renamed key would come back among the unknown ones, at the end)."""
    configs = (
        [r["config"] for r in fixture_records() if "config" in r]
        if source == "fixtures"
        else golden_configs()
    )
    assert len(configs) > 10
    for config in configs:
        typed = PointConfig.from_dict(config)
        assert typed.extra == {}, f"keys PointConfig does not know: {list(typed.extra)}"
        assert line(typed.to_dict()) == line(config)


def test_unknown_keys_are_kept_after_the_known_ones():
    config = {"model": "m", "newer": {"a": 1}, "budget": 0.2, "sweep": "s"}
    typed = PointConfig.from_dict(config)
    assert typed.model == "m" and typed.budget == 0.2 and typed.sweep == "s" and typed.dtype is ABSENT
    assert list(typed.to_dict()) == ["model", "budget", "sweep", "newer"]


def test_from_point_fills_each_kind_with_its_keys():
    point = Point(method="hired", budget=None, memory_cap="800MiB")
    planned = PointConfig.from_point(point).to_dict()
    assert planned["budget"] == "adaptive" and planned["memory_cap_gib"] == 800 / 1024
    assert "sweep" not in planned and PointConfig.from_point(point, sweep="s").to_dict()["sweep"] == "s"
    accuracy = PointConfig.from_point(point, "accuracy", tasks=["t"], limit=None).to_dict()
    assert list(accuracy) == [
        "model", "weights", "dtype", "device", "method", "budget", "fidelity", "method_params", "tasks",
        "limit", "batch_size", "seed", "point_key",
    ]  # fmt: skip
    with pytest.raises(TypeError):
        PointConfig.from_point(point, no_such_key=1)


def test_the_readers_config_types_are_derived_from_point_config():
    """The types readers check (and the order they check them in) are those declared before they were
    derived from PointConfig's fields."""
    assert list(CONFIG.items()) == [
        ("model", "text"), ("weights", "text"), ("dtype", "text"), ("device", "text"), ("method", "text"),
        ("budget", ("fraction", "text")), ("fidelity", "text"), ("method_params", CONFIG["method_params"]),
        ("batch_size", "size"), ("image_sizes", ["pair"]), ("image_source", "text"), ("prompt", "text"),
        ("prompt_tokens", ["size"]), ("new_tokens", "size"), ("warmup", "size"), ("repeats", "size"),
        ("memory_cap_gib", "number"), ("seed", "whole"), ("engine", "text"), ("min_duration_s", "number"),
        ("point_key", "text"), ("engine_options", CONFIG["engine_options"]),
    ]  # fmt: skip
    assert isinstance(CONFIG["method_params"], MAP) and CONFIG["method_params"].spec == "any"
    assert isinstance(CONFIG["engine_options"], MAP) and CONFIG["engine_options"].spec == "any"  # vllm's
    accuracy = KIND_SPECS["accuracy"]["config"]
    assert accuracy == {**CONFIG, "limit": "size", "task": "text", "tasks": ["text"]}
    assert KIND_SPECS["point"]["config"] is CONFIG and KIND_SPECS["oom_boundary"]["config"] is CONFIG


def test_the_schema_version_is_stamped_in_one_place():
    """Every writer stamps profiler.results.schema.SCHEMA_VERSION through profiler.results.store."""
    root = Path(__file__).resolve().parents[2] / "profiler"
    stamping = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if '"schema_version":' in path.read_text() or "SCHEMA_VERSION" in path.read_text()
    )
    assert stamping == ["results/schema.py", "results/store.py"]
