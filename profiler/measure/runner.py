"""Measuring points on a model built once: warm-up, repeats, statistics, one record per point.

A point is (method, budget, parameters) on a workload (images, prompt, new tokens). A failure
inside a point (out of memory, any exception) becomes that point's record; the caller goes on.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from hired.glue import PreparedBatch, vision_shape
from hired.methods import METHODS, method_params
from profiler.instruments.nvml import Nvml, SamplerProcess, SamplerReading
from profiler.instruments.torch_memory import (
    HOST_PEAK_UNAVAILABLE,
    host_peak_rss_gib,
    reset_host_peak,
    reset_torch_peak,
    torch_peak_gib,
)
from profiler.measure.metrics import PHASES, SCALAR_METRICS, agreement, request_metrics
from profiler.measure.request import run_request
from profiler.measure.settings import MeasureSettings
from profiler.measure.stats import coefficient_of_variation, summarize
from profiler.results.schema import PointConfig, gib
from profiler.results.store import error_message, make_record
from workloads.models import LoadedModel
from workloads.plan import Workload, build_workload
from workloads.point import Point


def aggregate(per_request: list[dict]) -> dict:
    """Stats objects over the measured requests, per docs/metrics.md. A metric measured per sample (a
    list: vLLM's TTFT and TPOT of each request of a batch) contributes every sample's value."""
    out = {name: summarize([v for r in per_request for v in _values(r[name])]) for name in SCALAR_METRICS}
    out["itl_s"] = summarize([gap for r in per_request for gap in r["itl_s"]])
    if all("phases_s" in r for r in per_request):
        out["phases_s"] = {phase: summarize([r["phases_s"][phase] for r in per_request]) for phase in PHASES}
    return out


def _values(value) -> list:
    return value if isinstance(value, list) else [value]


@dataclass
class Runner:
    """Measures points on one loaded model and turns each into a result record."""

    lm: LoadedModel
    run_id: str
    hardware: dict
    sampler: SamplerProcess | None = None  # NVML device/process memory and energy, per request
    nvml: Nvml | None = None  # in-process NVML: memory at the moment of an OOM
    nvml_reason: str | None = "not opened"  # why there is no sampler
    baseline_device_gib: float | None = None  # NVML device use before the model was loaded
    memory_cap_gib: float | None = None
    on_request: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.perf_counter  # what --min-duration is counted on
    _references: dict = field(default_factory=dict, init=False, repr=False)  # baseline outputs per input

    def __post_init__(self) -> None:
        # what the model alone holds: an OOM clean-up must get back to this
        self.resident_gib = (
            gib(torch.cuda.memory_allocated(self.lm.device)) if self.lm.device.type == "cuda" else None
        )

    def config(self, workload: Workload, point: Point, settings: MeasureSettings) -> dict:
        """The record's config: what was measured, resolved (model name, dtype, device, parameters)."""
        return PointConfig.from_point(
            point,
            lm=self.lm,
            workload=workload,
            warmup=settings.warmup,
            repeats=settings.repeats,
            memory_cap_gib=self.memory_cap_gib,
            seed=settings.seed,
            min_duration_s=settings.min_duration,
        ).to_dict()

    def measure_point(self, point: Point, policy: MeasureSettings | None = None) -> dict:
        """A planned point: its own inputs, warm-up, repeats and seed; always returns a record."""
        return self.measure(build_workload(point), point, (policy or MeasureSettings()).for_point(point))

    def measure(self, workload: Workload, point: Point, settings: MeasureSettings) -> dict:
        """Warm-up, then measured repeats; always returns a record (status ok, oom or error)."""
        config = self.config(workload, point, settings)
        try:
            shape = vision_shape(self.lm.model)
            params = method_params(METHODS[point.method], shape, point.params, settings.seed)
            point = replace(point, params=params)
            config["method_params"] = params
            torch.manual_seed(settings.seed)
            compile_s = self._compile(workload, point)
            results, torch_peaks, readings, host_window = self.repeat(
                lambda: run_request(self.lm, workload, point), settings
            )
            per_request = [
                request_metrics(
                    r.times, r.steps, workload.batch_size, workload.new_tokens, r.batch.prompt_tokens
                )
                for r in results
            ]
            result = results[-1]
            traced = self._trace(workload, point, settings.trace_path(point))
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            failure = ("oom", error_message(exc), self._memory_now())
        except Exception as exc:
            failure = ("error", error_message(exc), None)
        else:
            failure = None
        if failure:  # cleaned up here, outside `except`: the traceback's frames held the tensors
            status, message, memory = failure
            metrics = {"peak_memory_gib": memory, "cleanup": self._release()} if status == "oom" else None
            return make_record(self.run_id, status, config, self.hardware, metrics, error=message)
        config["prompt_tokens"] = result.batch.prompt_tokens
        metrics = aggregate(per_request)
        notes: dict[str, str] = {}
        generated = workload.batch_size * workload.new_tokens
        metrics.update(self.memory_and_energy(torch_peaks, readings, host_window, generated, notes))
        metrics["visual_tokens"] = _visual_tokens(result.batch, point, vision_shape(self.lm.model).llm_depth)
        metrics["unavailable"] = self._unavailable(metrics)
        metrics["estimated"] = notes
        metrics["warnings"] = variance_warnings(metrics) + traced + isolation_warnings(readings)
        metrics["requests"] = len(per_request)
        metrics["compile_s"] = compile_s
        metrics["agreement"], missing = self._agreement(workload, point, settings.agreement)
        if missing:
            metrics["unavailable"]["agreement"] = missing
        outputs = result.tokens.tolist() if settings.save_outputs else None
        return make_record(self.run_id, "ok", config, self.hardware, metrics, outputs=outputs)

    def memory_and_energy(
        self,
        torch_peaks: list,
        readings: list[SamplerReading],
        host_window: bool,
        generated: int,
        notes: dict,
    ) -> dict:
        """peak_memory_gib, energy_j (per request and per generated token), energy_method, nvml_sample_hz
        of the measured requests (`notes`: the peaks that are estimates, and why)."""
        peaks = self._peaks(torch_peaks, readings, notes)
        peaks["host_rss"] = host_peak_rss_gib() if host_window else None
        measured = [r.energy for r in readings if r.energy[0] is not None]
        energy = [mj / 1e3 for mj, _ in measured]
        return {
            "peak_memory_gib": peaks,
            "energy_j": {
                "per_request": summarize(energy),
                "per_token": summarize([j / generated for j in energy]),
            },
            "energy_method": measured[0][1] if measured else None,
            "nvml_sample_hz": summarize([r.hz for r in readings]),
        }

    def repeat(
        self, request: Callable[[], object], settings: MeasureSettings
    ) -> tuple[list, list, list, bool]:
        """The warm-up requests, then measured ones until both the repeats and the minimum duration are
        reached: (their results, torch peaks, NVML sampler readings, whether the host peak covers them)."""
        for _ in range(settings.warmup):
            request()
            self.on_request()
        results, torch_peaks, readings = [], [], []
        host_window = reset_host_peak()  # the host peak covers the measured requests only
        started = self.clock()
        while len(results) < settings.repeats or self.clock() - started < settings.min_duration:
            reset_torch_peak(self.lm.device)
            if self.sampler:
                self.sampler.begin()
            try:
                results.append(request())
            finally:  # the sampler stops even when the request fails
                if self.sampler:
                    readings.append(self.sampler.end())
            torch_peaks.append(torch_peak_gib(self.lm.device))
            self.on_request()
        return results, torch_peaks, readings, host_window

    def _agreement(self, workload: Workload, point: Point, asked: bool) -> tuple[dict | None, str | None]:
        """(metrics.agreement, why it is missing): one more request, after the timed ones and outside
        every statistic, against the baseline's outputs on the same pictures and prompt (those are
        computed once per input set and kept). Both run on the eager engine: agreement is the method's."""
        if not asked:
            return None, "not asked for (--no-agreement)"
        key = inputs_key(workload, point.fidelity)
        try:
            if key not in self._references:
                if len(self._references) >= 4:  # a sweep moves on: keep the latest few input sets
                    self._references.pop(next(iter(self._references)))
                baseline = replace(point, method="none", budget=1.0, params={}, engine="eager")
                self._references[key] = self._outputs(workload, baseline)
            ours = self._outputs(workload, replace(point, engine="eager"))
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            failure = f"the agreement request ran out of memory: {error_message(exc)}"
        except Exception as exc:
            return None, f"the agreement request failed: {error_message(exc)}"
        else:
            return agreement(*self._references[key], *ours), None
        self._release()  # outside `except`: the traceback's frames held the tensors
        return None, failure

    def _outputs(self, workload: Workload, point: Point) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated ids (B, T), first-token logits (B, V)) of one unmeasured request."""
        first_logits: list = []
        result = run_request(self.lm, workload, point, first_logits)
        return result.tokens, first_logits[0]

    def _compile(self, workload: Workload, point: Point) -> float | None:
        """The compiled engine's first request of this shape, untimed: it compiles. Returns its wall
        time (tracing, compiling, one run), kept out of every timed request; None for eager."""
        if point.engine != "compiled":
            return None
        start = time.perf_counter()
        run_request(self.lm, workload, point)
        return time.perf_counter() - start

    def _trace(self, workload: Workload, point: Point, path: Path | None) -> list[str]:
        """One more request under the torch profiler, if asked; a trace that cannot be written is a
        warning on the point, never a lost measurement."""
        if not path:
            return []
        try:
            trace_request(self.lm, workload, point, path)
        except OSError as exc:
            return [f"torch trace not written: {exc.strerror or exc}"]
        return []

    def _peaks(self, torch_peaks: list, readings: list[SamplerReading], notes: dict) -> dict:
        allocated = [a for a, _ in torch_peaks if a is not None]
        reserved = [r for _, r in torch_peaks if r is not None]
        device = gib(max((r.device_bytes for r in readings if r.device_bytes is not None), default=None))
        process = gib(max((r.process_bytes for r in readings if r.process_bytes is not None), default=None))
        if process is None and device is not None and self.baseline_device_gib is not None:
            process = device - self.baseline_device_gib  # PIDs hidden (containers): what this run added
            notes["peak_memory_gib.nvml_process"] = (
                "NVML does not list this PID (container PID namespace?): device peak minus the idle baseline"
            )
        return {
            "torch_allocated": max(allocated, default=None),
            "torch_reserved": max(reserved, default=None),
            "nvml_device": device,
            "nvml_process": process,
            "baseline_device": self.baseline_device_gib,
        }

    def _memory_now(self) -> dict:
        allocated, reserved = torch_peak_gib(self.lm.device)
        device = gib(self.nvml.device_used_bytes()) if self.nvml else None
        return {
            "torch_allocated": allocated,
            "torch_reserved": reserved,
            "nvml_device": device,
            "nvml_process": None,
            "baseline_device": self.baseline_device_gib,
        }

    def _unavailable(self, metrics: dict) -> dict:
        """Why a metric is null on this machine (a null metric is never a made-up 0)."""
        reasons = {}
        peaks = metrics["peak_memory_gib"]
        if self.lm.device.type != "cuda":
            reasons["peak_memory_gib.torch_allocated"] = "no CUDA device: torch tracks no CPU peak"
            reasons["peak_memory_gib.torch_reserved"] = "no CUDA device: torch tracks no CPU peak"
        if self.sampler is None:
            for key in (
                "peak_memory_gib.nvml_device",
                "peak_memory_gib.nvml_process",
                "energy_j",
                "nvml_sample_hz",
            ):
                reasons[key] = self.nvml_reason
        elif metrics["energy_j"]["per_request"] is None:
            reasons["energy_j"] = "this GPU has neither NVML's total-energy counter nor a power reading"
        if self.baseline_device_gib is None:
            reasons["peak_memory_gib.baseline_device"] = self.nvml_reason
        if peaks.get("host_rss") is None:
            reasons["peak_memory_gib.host_rss"] = HOST_PEAK_UNAVAILABLE
        if self.sampler is not None and peaks["nvml_process"] is None:
            reasons["peak_memory_gib.nvml_process"] = (
                "NVML lists no memory for this PID and there is no baseline"
            )
        return reasons

    def close(self) -> None:
        """End the sampler process (the model stays)."""
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    def _release(self) -> dict | None:
        """Free what a failed point left behind, so the next point measures like a fresh one.

        Returns the check: memory allocated after the clean-up against the model-only level
        measured after loading (clean when within 1%).
        """
        gc.collect()
        if self.lm.device.type != "cuda":
            return None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.lm.device)
        after = gib(torch.cuda.memory_allocated(self.lm.device))
        resident = self.resident_gib
        clean = None if resident is None else after <= resident * 1.01 + 1e-9
        return {"allocated_after_gib": after, "resident_gib": resident, "clean": clean}


def inputs_key(workload: Workload, fidelity: str) -> str:
    """What a baseline's outputs are valid for: the pictures (pixels), prompt, new tokens, fidelity."""
    digest = hashlib.sha1(f"{workload.prompt}\0{workload.new_tokens}\0{fidelity}".encode())
    for image in workload.images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


TTFT_CV_LIMIT = 0.05


def variance_warnings(metrics: dict) -> list[str]:
    """Run-to-run spread a reader should know about."""
    cv = coefficient_of_variation(metrics.get("ttft_s"))
    if cv is not None and cv > TTFT_CV_LIMIT:
        return [
            f"TTFT varies {cv:.1%} run to run (over {TTFT_CV_LIMIT:.0%}): add --repeats or quiet the machine"
        ]
    return []


def isolation_warnings(readings: list[SamplerReading]) -> list[str]:
    """Other processes that used the GPU during a measured request (their work skews every figure)."""
    foreign: dict[str, int] = {}
    for reading in readings:
        for pid, used in (reading.foreign or {}).items():
            foreign[pid] = max(foreign.get(pid, 0), used)
    if not foreign:
        return []
    listed = ", ".join(f"PID {pid} ({used / 2**30:.2f} GiB)" for pid, used in sorted(foreign.items()))
    return [f"other processes used this GPU during the measurement: {listed}"]


def trace_request(lm: LoadedModel, workload: Workload, point: Point, path: Path) -> None:
    """One more request (not counted) under the torch profiler, exported as a Chrome trace."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if lm.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_request(lm, workload, point)
    prof.export_chrome_trace(str(path))


def _visual_tokens(batch: PreparedBatch, point: Point, llm_depth: int) -> dict:
    """Visual tokens per sample: full (N_full), kept (what the LLM receives; for an LLM-stage method,
    what layers >= K see), and the share of token-layers computed, (K n0 + (L - K) kept) / (L N_full)
    with n0 the visual tokens entering layer 0 (= the achieved budget for a vision-stage method)."""
    full, kept = batch.full, list(batch.kept)
    entering = batch.entering
    if entering is None:
        share = [k / f for k, f in zip(kept, full, strict=True)]
    else:
        k = point.params["layer"]
        share = [
            (k * e + (llm_depth - k) * n) / (llm_depth * f)
            for e, n, f in zip(entering, kept, full, strict=True)
        ]
    return {
        "full": full,
        "kept": kept,
        "achieved_budget": [n / f for n, f in zip(kept, full, strict=True)],
        "token_layer_share": share,
    }
