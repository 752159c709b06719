"""The vllm engine against transformers on the same saved random-weight model (tiny-vllm, float32, CPU):
the stock model gives the same tokens and first-token log-probabilities, and each vision-stage method
keeps the very positions, and counts, that `run` keeps with transformers. Needs the [vllm] extra."""

import sys

import pytest
import torch

from tests.conftest import need_extra
from workloads.images import synthetic_images
from workloads.point import Point

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
MIXED = [(600, 600), (1000, 300), (336, 1008)]
METHODS_IN_VLLM = (
    "hired",
    "prumerge",
    "prumerge+",
    "visionzip",
    "divprune",
    "globalcom2",
    "random",
    "pool",
    "resize",
)
PROMPT = "What is shown in this image?"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(transformers model, vLLM folder) of one random-weight tiny-vllm saved as a local folder."""
    need_extra("vllm")
    from workloads.folder import model_folder, save_model_folder
    from workloads.models import load_model

    path = save_model_folder(
        load_model("tiny-vllm", "random", "float32", "cpu", seed=0), tmp_path_factory.mktemp("tiny-vllm")
    )
    return load_model(str(path), "pretrained", "float32", "cpu"), model_folder(str(path), "pretrained")


def engine(folder, point, keep_selections=False):
    from hired.methods import METHODS, method_params
    from hired.shape import shape_of
    from profiler.measure.vllm_engine import start_engine

    images = synthetic_images(list(point.image_sizes), point.batch_size)
    params = method_params(METHODS[point.method], shape_of(folder.config), point.params)
    device = torch.device("cpu")
    return (
        start_engine(folder, point, params, torch.float32, device, 0, keep_selections),
        params,
        images,
    )


def test_stock_llava_next_in_vllm_equals_transformers_eager(saved):
    from vllm import SamplingParams

    from profiler.measure.request import generate_tokens, prepare_request

    lm, folder = saved
    steps = 6
    for seed in range(20):  # a picture whose greedy choice is clear at every step (top-2 margin > 0.05)
        image = synthetic_images([(600, 600)], 1, seed=seed)[0]
        batch = prepare_request(lm, [image], [PROMPT], Point("none"))
        out = lm.model.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        logits = torch.stack(out.logits, dim=1)[0]
        top2 = logits.topk(2, dim=-1).values
        if float((top2[:, 0] - top2[:, 1]).min()) > 0.05:
            break
    else:
        pytest.fail("no picture with a clear greedy choice at every step")
    eager_tokens = generate_tokens(lm.model, batch, steps)[0].tolist()
    started, _, _ = engine(folder, Point("none", image_sizes=((600, 600),)))
    try:
        sampling = SamplingParams(
            temperature=0.0, max_tokens=steps, min_tokens=steps, ignore_eos=True, logprobs=5
        )
        prompt = {"prompt_token_ids": folder.prompt_ids(PROMPT), "multi_modal_data": {"image": image}}
        (result,) = started.llm.generate([prompt], sampling, use_tqdm=False)
    finally:
        started.close()
    assert list(result.outputs[0].token_ids) == eager_tokens
    reference = torch.log_softmax(logits[0].double(), dim=-1)
    first = result.outputs[0].logprobs[0]
    for token, logprob in first.items():
        assert abs(logprob.logprob - float(reference[token])) < 1e-3, token
    assert len(result.prompt_token_ids) == batch.prompt_tokens[0]


@pytest.mark.parametrize("method", METHODS_IN_VLLM)
def test_each_method_keeps_the_transformers_positions_and_counts_inside_vllm(saved, method):
    from hired.methods import METHODS, budget_tokens
    from profiler.measure.request import prepare_request
    from profiler.measure.vllm_engine import run_batch

    lm, folder = saved
    point = Point(method, 0.2, batch_size=3, image_sizes=tuple(MIXED))
    started, params, images = engine(folder, point, keep_selections=True)
    try:
        traces = run_batch(started, folder, images, PROMPT, 2)
        kept_inside = started.llm.apply_model(lambda model: model.selections)[0]
    finally:
        started.close()
    from dataclasses import replace

    batch = prepare_request(lm, images, [PROMPT] * 3, replace(point, params=params))
    text = len(folder.prompt_ids(PROMPT)) - 1
    assert [
        t.visual_tokens for t in traces
    ] == batch.kept  # vLLM's placeholders: exactly what the method keeps
    if METHODS[method].budgets["paper"] == ("exact",):
        assert batch.kept == [budget_tokens(0.2, n) for n in batch.full]
    assert [t.prompt_tokens for t in traces] == [text + k for k in batch.kept]
    # the profiling run's dummy picture comes first; the last three are ours, in order
    ours = kept_inside[-3:]
    assert [size for size, _ in ours] == [batch.layouts[i].image_size for i in range(3)]
    for (_, kept), selection in zip(ours, batch.selections, strict=True):
        if selection.kept is None:  # pooled tokens: no positions to compare, the counts above
            assert kept is None
        else:
            assert kept.tolist() == selection.kept.tolist()


def test_run_on_the_vllm_engine_writes_whole_records_with_what_only_an_engine_has(tmp_path):
    need_extra("vllm")
    import json
    import math

    from typer.testing import CliRunner

    from profiler.results.schema import problem
    from reports.cli import app

    out = tmp_path / "r.jsonl"
    args = [
        "run",
        "--engine",
        "eager,vllm",
        "--device",
        "cpu",
        "--method",
        "hired",
        "--budget",
        "0.2",
        "--batch",
        "2",
    ]
    result = CliRunner().invoke(
        app, [*args, "--warmup", "0", "--repeats", "2", "--new-tokens", "3", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "model auto -> tiny-vllm" in result.output
    assert (
        "hired [vllm]" in result.output and "hired [eager]" in result.output
    )  # each beside its own baseline
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["config"]["model"] == "tiny"  # the eager engine's auto model
    records = [r for r in records if r["config"]["engine"] == "vllm"]
    budget = records[0]["config"]["engine_options"]["max_num_batched_tokens"]
    assert [(r["config"]["method"], r["config"]["engine"], r["status"]) for r in records] == [
        ("none", "vllm", "ok"),
        ("hired", "vllm", "ok"),
    ]
    for record in records:
        assert problem(record) is None
        config, m = record["config"], record["metrics"]
        options = config["engine_options"]
        overrides = options["hf_overrides"]["hired_bench"]
        # vLLM's defaults, the same for every method (the method changes the prompts, not the engine)
        assert options["max_model_len"] == 4096 and options["max_num_batched_tokens"] == budget
        assert (overrides["method"], overrides["budget"]) == (config["method"], config["budget"])
        assert len(m["ttft_s"]["values"]) == 2 * 2  # per request: 2 samples x 2 repeats
        assert len(m["e2e_s"]["values"]) == 2  # per batch
        kv = m["kv_cache"]
        for prompt, blocks in zip(config["prompt_tokens"], kv["blocks"], strict=True):
            assert (
                math.ceil(prompt / kv["block_size"]) <= blocks <= math.ceil((prompt + 3) / kv["block_size"])
            )
        assert kv["sequence_tokens"] == max(config["prompt_tokens"]) + 3
        assert kv["max_concurrency"] == pytest.approx(
            kv["num_blocks"] / math.ceil(kv["sequence_tokens"] / kv["block_size"])
        )
        assert m["engine_start_s"] > 0 and "phases_s" in m["unavailable"]
    assert records[1]["metrics"]["visual_tokens"]["kept"] == [576, 576]  # round(0.2 * 2880)
    assert records[1]["metrics"]["agreement"]["kl_first"] is None
    assert records[1]["metrics"]["kv_cache"]["blocks"][0] < records[0]["metrics"]["kv_cache"]["blocks"][0]


FREED = """
import gc, weakref, torch
from profiler.measure.vllm_engine import start_engine
from workloads.folder import model_folder
from workloads.point import Point
folder = model_folder("tiny-vllm", "random")
started = start_engine(folder, Point("none"), {}, torch.float32, torch.device("cpu"), 0)
gone = weakref.ref(started.llm)
started.close()
del started
gc.collect()
print("freed" if gone() is None else "alive")
"""


def test_a_closed_engine_is_freed():
    """vLLM keeps some import errors with their tracebacks, which would pin the frame that started the
    first engine, and so that engine and its KV cache, for ever: a closed engine must be garbage (in a
    fresh process, where the first engine is the one at stake)."""
    import subprocess

    need_extra("vllm")
    done = subprocess.run([sys.executable, "-c", FREED], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1:] == ["freed"], done.stderr[-2000:]
