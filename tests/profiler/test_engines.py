"""The compiled engine beside eager, --min-duration, energy without the counter, GPU isolation."""

import time

import pytest
import torch
from typer.testing import CliRunner

import profiler.measure.runner
from hired.glue import prepare_batch, vision_shape
from hired.methods import METHODS, method_params
from profiler.cli import app
from profiler.instruments.nvml import SamplerProcess, SamplerReading
from profiler.instruments.nvml_sampler import trapezoid_mj
from profiler.measure.request import generate_tokens
from profiler.measure.runner import Runner
from profiler.measure.settings import MeasureSettings
from profiler.results.schema import GIB
from workloads.images import synthetic_images
from workloads.plan import Workload
from workloads.point import Point

PROMPT = "What is shown in this image?"
STEPS = 6


def logits_and_tokens(lm, batch, engine):
    from transformers import LogitsProcessor

    seen = []

    class Keep(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(scores.clone())
            return scores

    tokens = generate_tokens(lm.model, batch, STEPS, [Keep()], engine)
    return torch.stack(seen), tokens


def prepared(lm, image):
    pixels = lm.image_processor([image], return_tensors="pt")
    sizes = [tuple(s) for s in pixels["image_sizes"].tolist()]
    params = method_params(METHODS["hired"], vision_shape(lm.model))
    ids = [lm.prompt_ids(PROMPT)]
    return prepare_batch(lm.model, pixels["pixel_values"], sizes, ids, METHODS["hired"], 0.2, params)


def test_eos_is_neither_a_stop_nor_masked(tiny):
    """Exactly T tokens even where greedy picks EOS at every step, and EOS reaches the logits as the
    model scored it: no min-length processor rescans the vocabulary per step (a bare generate's cost)."""
    from transformers import LogitsProcessor

    eos = tiny.model.generation_config.eos_token_id
    arrived = []

    class ForceEos(LogitsProcessor):
        def __call__(self, input_ids, scores):
            arrived.append(bool(torch.isfinite(scores[:, eos]).all()))
            forced = torch.full_like(scores, -1e9)
            forced[:, eos] = 0.0
            return forced

    batch = prepared(tiny, synthetic_images([(600, 600)], 1)[0])
    tokens = generate_tokens(tiny.model, batch, STEPS, [ForceEos()])
    assert tokens.tolist() == [[eos] * STEPS]
    assert arrived == [True] * STEPS


@pytest.mark.slow
def test_compiled_engine_gives_eager_results_and_compiles_outside_the_timed_requests(tiny):
    # an input whose greedy choice is clear at every step (top-2 logit margin > 0.05), so numerical
    # differences between the engines cannot flip a token: the first synthetic picture that has one
    for seed in range(20):
        image = synthetic_images([(600, 600)], 1, seed=seed)[0]
        batch = prepared(tiny, image)
        eager, eager_tokens = logits_and_tokens(tiny, batch, "eager")
        top2 = eager.topk(2, dim=-1).values
        if float((top2[..., 0] - top2[..., 1]).min()) > 0.05:
            break
    else:
        pytest.fail("no input with a clear greedy choice at every step")
    runner = Runner(tiny, "r", {})
    record = runner.measure(
        Workload([image], PROMPT, STEPS),
        Point("hired", 0.2, engine="compiled"),
        MeasureSettings(warmup=0, repeats=2),
    )
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    assert record["config"]["engine"] == "compiled" and m["requests"] == 2
    # the compile request ran first, untimed: it took longer than any measured request end to end
    assert m["compile_s"] > 5 * max(m["e2e_s"]["values"])
    compiled, compiled_tokens = logits_and_tokens(tiny, batch, "compiled")  # the same shape: no recompile
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-4)  # first-token logits
    assert compiled_tokens.tolist() == eager_tokens.tolist()


def test_llm_stage_methods_are_refused_for_compiled_before_loading(tmp_path, monkeypatch):
    import workloads.models

    monkeypatch.setattr(workloads.models, "load_model", lambda *a, **k: pytest.fail("a model was built"))
    for method in ("fastv", "dart"):
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--model",
                "tiny",
                "--method",
                method,
                "--engine",
                "compiled",
                "--output",
                str(tmp_path / "r"),
            ],
        )
        assert result.exit_code == 2 and "cannot run on the compiled engine" in result.stderr


def test_all_on_both_engines_passes_llm_stage_methods_over_for_compiled_only():
    from workloads.plan import plan_points
    from workloads.point import Inputs, MethodEntry

    points = plan_points(
        [MethodEntry("all", (0.2,))], models=["tiny"], inputs=[Inputs()], batch_sizes=[1],
        engines=("eager", "compiled"),
    ).points  # fmt: skip
    by_engine = {e: {p.method for p in points if p.engine == e} for e in ("eager", "compiled")}
    assert {"fastv", "dart"} <= by_engine["eager"]
    assert by_engine["compiled"] == by_engine["eager"] - {"fastv", "dart"}


@pytest.mark.parametrize(("repeats", "min_duration", "expected"), [(2, 4.5, 5), (7, 4.5, 7), (3, 0.0, 3)])
def test_min_duration_runs_until_both_count_and_time(tiny, monkeypatch, repeats, min_duration, expected):
    calls = {"n": 0}
    real = profiler.measure.runner.run_request

    def one_second_each(lm, workload, point, *rest):
        calls["n"] += 1
        return real(lm, workload, point, *rest)

    monkeypatch.setattr(profiler.measure.runner, "run_request", one_second_each)
    runner = Runner(tiny, "r", {}, clock=lambda: float(calls["n"]))
    images = synthetic_images([(336, 336)], 1)
    settings = MeasureSettings(warmup=0, repeats=repeats, min_duration=min_duration)
    record = runner.measure(Workload(images, PROMPT, 2), Point("none", 1.0), settings)
    assert record["metrics"]["requests"] == expected == len(record["metrics"]["ttft_s"]["values"])
    assert record["config"]["min_duration_s"] == min_duration
    assert set(record["metrics"]["ttft_s"]) >= {"p90", "p99"}


def test_power_integral_by_the_trapezoid_rule():
    assert trapezoid_mj([(0.0, 100_000), (1.0, 300_000), (3.0, 300_000)]) == pytest.approx(800_000)
    assert trapezoid_mj([(0.0, 5)]) is None
    counter = SamplerReading(0, 0, True, 10, 1.0, energy_mj=42, power_energy_mj=99.0)
    assert counter.energy == (42.0, "counter")  # the counter is preferred when the GPU has one
    integral = SamplerReading(0, 0, True, 10, 1.0, energy_mj=None, power_energy_mj=99.0)
    assert integral.energy == (99.0, "power_integral")


def test_sampler_integrates_power_where_there_is_no_counter(fake_nvml):
    module = fake_nvml(used=[GIB], processes=[], energy_mj=None, power_mw=[250_000])  # a steady 250 W
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        sampler.begin()
        time.sleep(0.3)
        reading = sampler.end()
    joules, method = reading.energy
    assert method == "power_integral" and joules / 1e3 == pytest.approx(250 * reading.seconds, rel=0.1)


def test_a_foreign_process_on_the_gpu_is_a_warning(tiny, fake_nvml):
    module = fake_nvml(used=[GIB], processes=[["$PID", GIB], [4242, 3 * GIB]], energy_mj=0, energy_step_mj=1)
    with SamplerProcess("GPU-fake", nvml_module=module) as sampler:
        runner = Runner(tiny, "r", {}, sampler=sampler, baseline_device_gib=0.0)
        images = synthetic_images([(336, 336)], 1)
        record = runner.measure(
            Workload(images, PROMPT, 2), Point("none", 1.0), MeasureSettings(warmup=0, repeats=1)
        )
    warnings = [w for w in record["metrics"]["warnings"] if "other processes" in w]
    assert warnings == ["other processes used this GPU during the measurement: PID 4242 (3.00 GiB)"]
    assert record["metrics"]["energy_method"] == "counter"
