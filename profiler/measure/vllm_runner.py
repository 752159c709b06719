"""Measuring points on the vLLM engine: the Runner's record (config, memory, warnings, failures) with
vLLM's requests in place of transformers' generate. One engine per method, budget and parameters (the
method is part of vLLM's model); the baseline's outputs are kept for the agreement of the methods after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from hired.methods import METHODS, method_params
from hired.shape import shape_of
from profiler.measure.metrics import agreement
from profiler.measure.runner import Runner, aggregate, inputs_key, isolation_warnings, variance_warnings
from profiler.measure.settings import MeasureSettings
from profiler.measure.vllm_engine import (
    Engine,
    RequestTrace,
    batch_metrics,
    engine_key,
    run_batch,
    sequence_tokens,
    start_engine,
)
from profiler.results.store import error_message, make_record
from workloads.folder import ModelFolder
from workloads.plan import Workload
from workloads.point import Point

NO_PHASES = (
    "vLLM's engine times no phases inside a request: TTFT covers preprocessing, vision, selection and prefill"
)


@dataclass
class ServedModel:
    """What a record says of the model vLLM serves (the fields PointConfig reads of a loaded model)."""

    folder: ModelFolder
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def weights(self) -> str:
        return self.folder.weights

    @property
    def notes(self) -> list[str]:
        return self.folder.notes


@dataclass
class VllmRunner(Runner):
    engine: Engine | None = None
    _baseline_tokens: dict = field(default_factory=dict, init=False, repr=False)

    def measure(self, workload: Workload, point: Point, settings: MeasureSettings) -> dict:
        config = self.config(workload, point, settings)
        folder = self.lm.folder
        try:
            params = method_params(
                METHODS[point.method], shape_of(folder.config), point.params, settings.seed
            )
            point = replace(point, params=params)
            config["method_params"] = params
            started = self._engine_for(point, params, workload, settings.seed)
            config["engine_options"] = self.engine.options
            batches, torch_peaks, readings, host_window = self.repeat(
                lambda: run_batch(self.engine, folder, workload.images, workload.prompt, workload.new_tokens),
                settings,
            )
            per_request = [batch_metrics(traces, workload.new_tokens) for traces in batches]
            traces = batches[-1]
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            failure = ("oom", error_message(exc))
        except Exception as exc:
            failure = ("error", error_message(exc))
        else:
            failure = None
        if failure:
            self._close_engine()  # a failed engine may hold memory the next point needs
            return make_record(self.run_id, failure[0], config, self.hardware, None, error=failure[1])
        config["prompt_tokens"] = [t.prompt_tokens for t in traces]
        metrics = aggregate(per_request)
        notes: dict[str, str] = {}
        generated = workload.batch_size * workload.new_tokens
        metrics.update(self.memory_and_energy(torch_peaks, readings, host_window, generated, notes))
        metrics["visual_tokens"] = self._visual_tokens(workload, traces)
        length = sequence_tokens(self.lm.folder, point, point.params, workload.images, workload.prompt)
        metrics["kv_cache"] = {
            "block_size": self.engine.block_size,
            "blocks": [t.kv_blocks for t in traces],
            "num_blocks": self.engine.num_blocks,
            "sequence_tokens": length,
            "max_concurrency": self.engine.max_concurrency(length),
        }
        metrics["engine_start_s"] = started
        metrics["unavailable"] = self._unavailable(metrics)
        metrics["unavailable"]["phases_s"] = NO_PHASES
        metrics["unavailable"]["prefill_tokens_per_s"] = NO_PHASES
        metrics["estimated"] = notes
        metrics["warnings"] = variance_warnings(metrics) + isolation_warnings(readings)
        metrics["requests"] = len(per_request)
        metrics["compile_s"] = None
        metrics["agreement"], missing = self._agreement(workload, point, traces, settings.agreement)
        if missing:
            metrics["unavailable"]["agreement"] = missing
        outputs = [t.tokens for t in traces] if settings.save_outputs else None
        return make_record(self.run_id, "ok", config, self.hardware, metrics, outputs=outputs)

    def _engine_for(self, point: Point, params: dict, workload: Workload, seed: int) -> float | None:
        """Start the point's engine unless the one running serves it; its start-up time, or None if reused."""
        if self.engine is not None and self.engine.key == engine_key(point, params):
            return None
        self._close_engine()
        self.engine = start_engine(self.lm.folder, point, params, self.lm.dtype, self.lm.device, seed)
        return self.engine.start_s

    def _visual_tokens(self, workload: Workload, traces: list[RequestTrace]) -> dict:
        from hired.layout import image_layout

        config = self.lm.folder.config
        full = [image_layout((img.height, img.width), config).n_full for img in workload.images]
        kept = [t.visual_tokens for t in traces]
        share = [k / f for k, f in zip(kept, full, strict=True)]
        return {"full": full, "kept": kept, "achieved_budget": share, "token_layer_share": share}

    def _agreement(self, workload, point, traces, asked) -> tuple[dict | None, str | None]:
        """The baseline's tokens on the same inputs (kept when it was measured) against this point's last
        request: first token and common prefix (vLLM returns no full first-token distribution: no KL)."""
        if not asked:
            return None, "not asked for (--no-agreement)"
        key = inputs_key(workload, point.fidelity)
        tokens = torch.tensor([t.tokens for t in traces])
        if point.method == "none":
            self._baseline_tokens[key] = tokens
        reference = self._baseline_tokens.get(key)
        if reference is None:
            return None, "the vllm baseline was not measured on these inputs in this run"
        return agreement(reference, None, tokens, None), None

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def close(self) -> None:
        self._close_engine()
        super().close()


def open_vllm_runner(
    *,
    model: str,
    weights: str,
    dtype: str,
    device: str,
    seed: int,
    run_id: str,
    memory_cap_gib: float | None = None,
    nvml_module: str = "pynvml",
) -> VllmRunner:
    """A VllmRunner for a model group (its engines start per point): the model folder, NVML, hardware.
    A memory cap is refused when planning (vLLM sizes its own KV cache)."""
    assert memory_cap_gib is None, "refused when planning: workloads.plan.engine_refusal"
    from profiler.instruments.hardware import fingerprint
    from profiler.measure.session import open_nvml, open_sampler
    from workloads.device import resolve_device, resolve_dtype, resolve_model_name
    from workloads.folder import model_folder

    dev = resolve_device(device)
    name = resolve_model_name(model, dev, engine="vllm")
    folder = model_folder(name, weights)
    if model == "auto":
        where = "a GPU" if dev.type == "cuda" else "no GPU found, CPU"
        folder.notes.insert(0, f"model auto -> {name} ({where})")
    nvml, reason, baseline = open_nvml(dev)
    sampler, reason = open_sampler(nvml, reason, nvml_module)
    served = ServedModel(folder, dev, resolve_dtype(dtype, dev))
    hardware = fingerprint(dev, nvml)
    return VllmRunner(
        served,
        run_id,
        hardware,
        sampler=sampler,
        nvml=nvml,
        nvml_reason=reason,
        baseline_device_gib=baseline,
    )
