"""Task accuracy through lmms-eval ([eval] extra): the adapter under lmms-eval's own model interface,
its plugin entry, and `hired-bench eval` end to end on the 3-question local task in tests/fixtures."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from profiler.cli import app
from tests.conftest import need_extra

pytestmark = pytest.mark.eval  # make test-fast leaves these out

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "fixtures" / "lmms_tasks"
COLOURS = TASKS / "hired_colours"
HIRED = "alpha=0.5;l_init=0;l_final=2"
MAX_NEW = 8  # hired_colours.yaml's max_new_tokens


def fixture_utils():
    spec = importlib.util.spec_from_file_location("hired_colours_utils", COLOURS / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs():
    return [json.loads(line) for line in (COLOURS / "questions.jsonl").read_text().splitlines()]


def requests(doc_list, max_new=MAX_NEW, until=("\n",)):
    """Instances as lmms-eval builds them for a simple model's generate_until."""
    need_extra("lmms_eval")
    from lmms_eval.api.instance import Instance

    utils = fixture_utils()
    return [
        Instance(
            request_type="generate_until",
            arguments=(
                utils.doc_to_text(doc),
                {"until": list(until), "max_new_tokens": max_new},
                utils.doc_to_visual,
                i,
                "hired_colours",
                "validation",
            ),
            idx=0,
            metadata={"task": "hired_colours", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(doc_list)
    ]


def adapter(tiny, method="hired", budget=0.2, param=HIRED, batch_size=1):
    need_extra("lmms_eval")
    from profiler.accuracy.model import HiredLlavaNext

    model = HiredLlavaNext(loaded=tiny, method=method, budget=budget, param=param, batch_size=batch_size)
    model.task_dict = {"hired_colours": {"validation": docs()}}
    return model


def test_answers_come_from_the_measured_path(tiny):
    """What the adapter answers is what `run` measures: the same pictures and question through the
    runner's own request give the same tokens."""
    from profiler.measure.request import run_request
    from workloads.plan import Workload
    from workloads.point import Point

    model = adapter(tiny)
    answers = model.generate_until(requests(docs()))
    utils = fixture_utils()
    eos = tiny.model.generation_config.eos_token_id
    for doc, answer in zip(docs(), answers, strict=True):
        workload = Workload(utils.doc_to_visual(doc), utils.doc_to_text(doc), MAX_NEW)
        tokens = run_request(tiny, workload, model.point).tokens[0].tolist()
        assert eos not in tokens  # else exact-T decoding would part from the answer's
        assert answer == " ".join(f"<{i}>" for i in tokens)
    assert model.point == Point("hired", 0.2, model.point.params, "paper")
    assert model.point.params == {"alpha": 0.5, "l_init": 0, "l_final": 2}
    shares = model.kept_share["hired_colours"]
    assert len(shares) == 3 and all(abs(s - 0.2) < 0.01 for s in shares)


def test_batches_stop_strings_and_full_budget(tiny):
    one = adapter(tiny).generate_until(requests(docs()))
    assert adapter(tiny, batch_size=3).generate_until(requests(docs())) == one  # mixed sizes, padded
    full = adapter(tiny, budget=1.0).generate_until(requests(docs()))
    assert full == adapter(tiny, method="none", budget=1.0, param="").generate_until(requests(docs()))
    cut = one[0].split()[2]  # the third generated token as a stop string: the answer ends before it
    stopped = adapter(tiny).generate_until(requests(docs()[:1], until=(cut,)))
    assert stopped == [one[0].split(cut)[0].strip()]
    assert adapter(tiny).generate_until(requests(docs()[:1], max_new=2)) == [" ".join(one[0].split()[:2])]


def test_refusals(tiny):
    need_extra("lmms_eval")
    from profiler.accuracy.model import HiredLlavaNext

    with pytest.raises(ValueError, match="unknown model_args budegt"):
        HiredLlavaNext(loaded=tiny, budegt=0.2)
    with pytest.raises(ValueError, match="alpha must be"):
        HiredLlavaNext(loaded=tiny, method="hired", budget=0.2, param="alpha=7")
    with pytest.raises(ValueError, match="needs a numeric budget"):
        HiredLlavaNext(loaded=tiny, method="hired", budget="adaptive")
    model = adapter(tiny)
    model.task_dict["hired_colours"]["validation"][0] = {"two": True}
    two = requests(docs()[:1])
    two[0].arguments = (
        *two[0].arguments[:2],
        lambda doc: [Image.new("RGB", (8, 8))] * 2,
        *two[0].arguments[3:],
    )
    with pytest.raises(ValueError, match="comes with 2 pictures"):
        model.generate_until(two)
    with pytest.raises(NotImplementedError, match="generation tasks"):
        model.loglikelihood([])


def test_lmms_eval_finds_the_model_by_name():
    need_extra("lmms_eval")
    from lmms_eval.models import get_model

    from profiler.accuracy.model import HiredLlavaNext

    cls = get_model("hired_llava_next")
    assert cls is HiredLlavaNext
    model = cls.create_from_arg_string(
        f"pretrained=tiny,method=hired,budget=0.3,param={HIRED},weights=random,dtype=float32,device=cpu",
        {"batch_size": 2, "max_batch_size": None, "device": None},
    )
    assert model.lm.name == "tiny" and model.lm.weights == "random" and model.batch_size == 2
    assert (model.point.method, model.point.budget, model.point.params["l_final"]) == ("hired", 0.3, 2)
    with pytest.raises(ValueError, match="--batch_size must be a whole number of at least 1, got 'auto'"):
        cls.create_from_arg_string("pretrained=tiny,weights=random", {"batch_size": "auto"})


def cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", "from reports.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", **(env or {})},
    )


def test_eval_end_to_end_on_a_local_task(tiny, tmp_path):
    """The first question's answer is set to what hired at 20% says: its exact match must be 1/3, and the
    baseline's 1/3 only if it says the same."""
    hired = adapter(tiny).generate_until(requests(docs()[:1]))[0]
    none = adapter(tiny, method="none", budget=1.0, param="").generate_until(requests(docs()[:1]))[0]
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    rows = docs()
    rows[0]["answers"] = [hired]
    (tasks / "hired_colours" / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "acc.jsonl"
    args = ["eval", "--model", "tiny", "--device", "cpu", "--tasks", "hired_colours"]
    args += ["--include-path", str(tasks), "--method", "hired", "--budget", "0.2", "--limit", "3"]
    args += ["--param", "alpha=0.5", "--param", "l_init=0", "--param", "l_final=2", "--output", str(out)]
    result = cli(*args, env={"HF_DATASETS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r["status"], r["config"]["method"]) for r in records] == [
        ("accuracy", "ok", "none"),
        ("accuracy", "ok", "hired"),
    ]
    base, ours = (r["metrics"] for r in records)
    assert (ours["task"], ours["metric"], ours["samples"]) == ("hired_colours", "exact_match", 3)
    assert ours["value"] == pytest.approx(1 / 3)
    assert base["value"] == pytest.approx(1 / 3 if none == hired else 0.0)
    assert abs(ours["achieved_budget"] - 0.2) < 0.01
    from profiler.accuracy.evaluate import lmms_eval_version

    assert records[1]["config"]["weights"] == "random"
    assert records[1]["config"]["lmms_eval_version"] == lmms_eval_version()
    assert "random weights" in result.stdout  # the table says the numbers mean nothing here


def test_offline_reaches_a_hub_client_already_imported(monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    from profiler.accuracy import evaluate as accuracy

    for name in accuracy.OFFLINE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as imported online
    accuracy.stay_offline()
    with pytest.raises(OfflineModeIsEnabled):  # refused here, before any connection is tried
        huggingface_hub.HfApi().model_info("llava-hf/llava-v1.6-vicuna-7b-hf")


def test_a_dataset_missing_from_the_cache_is_one_line(tmp_path):
    need_extra("lmms_eval")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "hired_missing.yaml").write_text(
        "task: hired_missing\ndataset_path: hired-bench/no-such-dataset\ntest_split: validation\n"
        "output_type: generate_until\ndoc_to_text: question\ndoc_to_target: answers\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = cli("eval", "--model", "tiny", "--device", "cpu", "--tasks", "hired_missing",
                 "--include-path", str(tasks), "--output", str(tmp_path / "a.jsonl"), env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "task hired_missing: its dataset could not be loaded from the Hugging Face cache" in lines[0]
    assert "--allow-download" in lines[0]
    assert not (tmp_path / "a.jsonl").exists()


RUNNER = CliRunner()


def test_without_lmms_eval_the_command_says_how_to_get_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lmms_eval" else real(name, *a)
    )
    result = RUNNER.invoke(app, ["eval", "--tasks", "textvqa_val", "--output", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2
    assert "lmms-eval is not installed: pip install 'hired-bench[eval]'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", " , "], "--tasks is empty"),
        (["--tasks", "hired_colours", "--limit", "0"], "--limit must be at least 1"),
        (["--tasks", "hired_colours", "--batch", "0"], "--batch must be at least 1"),
        (["--tasks", "hired_colours", "--method", "hird"], "unknown method 'hird'"),
        (["--tasks", "hired_colours", "--include-path", "/no/such/folder"], "not a folder"),
    ],
)
def test_bad_eval_input(args, message, tmp_path):
    result = RUNNER.invoke(app, ["eval", "--model", "tiny", *args, "--output", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_an_unknown_task_is_named_with_the_closest(tmp_path):
    need_extra("lmms_eval")
    args = ["eval", "--model", "tiny", "--device", "cpu", "--tasks", "hired_colour"]
    result = RUNNER.invoke(app, [*args, "--include-path", str(TASKS), "--output", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2
    assert "unknown lmms-eval task 'hired_colour' (did you mean hired_colours" in result.stderr


def test_a_task_file_that_does_not_parse_is_one_line(tmp_path):
    need_extra("lmms_eval")
    (tmp_path / "broken.yaml").write_text("task: broken\ndataset_path: [unclosed\n  : : :\n")
    args = [
        "eval",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--tasks",
        "broken",
        "--output",
        str(tmp_path / "a.jsonl"),
    ]
    result = RUNNER.invoke(app, [*args, "--include-path", str(tmp_path)])
    said = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert said[-1].startswith("error: --include-path") and "cannot read its task files" in said[-1], said
