"""The vLLM engine: one engine per point's method (its method reaches vLLM's model through `hf_overrides`),
B requests submitted together, and each request's timestamps, prompt length, KV-cache blocks and tokens.

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): its scheduler, and so the KV-cache
blocks each request holds, can be read between engine steps, and vLLM's own timestamps (engine-core
monotonic time) share the clock of t0. The loop is the one `LLM.generate` runs (`add_request`, then
`step` until every request is done), with each request's first and last token times taken from vLLM's
per-request stats. docs/engines.md says what this measures and what a server adds (hired-bench serve-bench).
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise

import torch

from hired.layout import image_layout
from hired.methods import expected_tokens
from hired.vllm_plugin import engine_overrides
from profiler.measure import torchvision_cpu
from workloads.folder import ModelFolder
from workloads.point import Point

# in this process: the scheduler is readable and vLLM's timestamps share t0's clock; on a CPU, no core
# is held back for a separate engine process (vLLM reserves one by default)
IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
CPU_KV_CACHE_GIB = "4"  # VLLM_CPU_KVCACHE_SPACE unless the user set it: vLLM's KV cache on a CPU, in GiB


@dataclass
class Engine:
    """A started vLLM engine for one (method, budget, parameters) and what it reported at start-up."""

    llm: object
    key: tuple
    start_s: float  # LLM(...) to ready: weights, profiling, KV-cache allocation, CUDA graphs on a GPU
    options: dict  # what it was started with (the record's config.engine_options)
    block_size: int
    num_blocks: int

    def max_concurrency(self, tokens: int) -> float:
        return max_concurrency(self.num_blocks, self.block_size, tokens)

    def close(self) -> None:
        from vllm.distributed import cleanup_dist_env_and_memory

        engine = self.llm.llm_engine
        del self.llm
        del engine
        gc.collect()
        cleanup_dist_env_and_memory()


def import_vllm():
    """vLLM, imported so that a closed engine is freed. vLLM keeps some optional imports' errors in module
    globals (e.g. torchcodec's, which a CPU install lacks); their tracebacks pin every frame that was on
    the stack at the first import, with the locals those frames end with (an engine, its KV cache). The
    tracebacks are dropped; the errors stay."""
    torchvision_cpu.install()
    import vllm
    from vllm import LLM, SamplingParams  # noqa: F401  (the heavy, lazy part of the import)

    drop_import_tracebacks()
    return vllm


def drop_import_tracebacks() -> None:
    """The tracebacks of exceptions vLLM's modules keep (see import_vllm); the model's modules load later."""
    for name, module in list(sys.modules.items()):
        if name == "vllm" or name.startswith("vllm."):
            for value in list(vars(module).values()):
                if isinstance(value, BaseException):
                    value.__traceback__ = None


def max_concurrency(num_blocks: int, block_size: int, tokens: int) -> float:
    """Requests of `tokens` tokens a cache of `num_blocks` holds at once: vLLM's own formula (its start-up
    log's "maximum concurrency"; one full-attention group: blocks / blocks per request) at that length."""
    return num_blocks / -(-tokens // block_size)


def engine_options(folder: ModelFolder, device_type: str) -> dict:
    """What every vLLM engine of the suite starts with, in `run` and in `serve-bench` alike."""
    return {
        "enable_prefix_caching": False,  # every request computes its prompt, as the other engines do
        "mm_processor_cache_gb": 0,  # and preprocesses its pictures
        "limit_mm_per_prompt": {"image": 1},
        # transformers' PIL image processor, as the other engines use: the same pixels on every engine
        "mm_processor_kwargs": {"backend": "pil"},
        "enforce_eager": device_type == "cpu",  # CUDA graphs on a GPU, as deployed; no compile step on a CPU
        "load_format": folder.load_format,
    }


def vllm_version() -> str:
    """The installed vLLM's version, from its distribution: vllm (GPU) or vllm-cpu."""
    for name in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def sequence_tokens(folder: ModelFolder, point: Point, params: dict, images: list, prompt: str) -> int:
    """The longest request's tokens: text, kept visual tokens and new tokens."""
    text = len(folder.prompt_ids(prompt)) - 1
    counts = [
        expected_tokens(
            point.method,
            point.budget,
            point.fidelity,
            image_layout((img.height, img.width), folder.config),
            params,
        )
        for img in images
    ]
    return text + max(counts) + point.new_tokens


def start_engine(
    folder: ModelFolder,
    point: Point,
    params: dict,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
    keep_selections: bool = False,
) -> Engine:
    """An engine whose model runs the point's method; the start-up is timed (keep_selections: for tests,
    the model keeps each picture's kept positions). Every other setting is vLLM's default for the model,
    the same for every method: the context, the batch limits and chunked prefill's token budget."""
    for name, value in IN_PROCESS.items():
        os.environ[name] = value
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its per-step notes would bury the table
    LLM = import_vllm().LLM

    overrides = engine_overrides(point.method, point.budget, point.fidelity, params, keep_selections)
    options = {"hf_overrides": overrides, **engine_options(folder, device.type)}
    started = time.perf_counter()
    llm = LLM(
        model=str(folder.path),
        dtype=dtype,
        seed=seed,
        disable_log_stats=False,  # per-request timestamps
        **options,
    )
    options["vllm_version"] = vllm_version()
    start_s = time.perf_counter() - started
    drop_import_tracebacks()
    vllm_config = llm.llm_engine.vllm_config
    scheduler = vllm_config.scheduler_config
    options.update(  # what vLLM chose for this model and machine
        max_model_len=vllm_config.model_config.max_model_len,
        max_num_seqs=scheduler.max_num_seqs,
        max_num_batched_tokens=scheduler.max_num_batched_tokens,  # chunked prefill's budget per step
        kv_cache_dtype=vllm_config.cache_config.cache_dtype,
    )
    cache = vllm_config.cache_config
    return Engine(llm, engine_key(point, params), start_s, options, cache.block_size, cache.num_gpu_blocks)


def engine_key(point: Point, params: dict) -> tuple:
    """What an engine is started for: a point with the same key reuses it (other batch sizes, inputs)."""
    return (point.method, point.budget, point.fidelity, tuple(sorted(params.items())))


@dataclass
class RequestTrace:
    """One request of a batch, in seconds from t0 (the batch's submission, before preprocessing)."""

    prompt_tokens: int  # what vLLM scheduled: text + the visual placeholders
    first_s: float  # vLLM's first-token timestamp
    last_s: float  # vLLM's last-token timestamp
    token_s: list[float] = field(default_factory=list)  # when each token reached this process
    kv_blocks: int = 0  # the most KV-cache blocks the scheduler held for it between engine steps
    tokens: list[int] = field(default_factory=list)
    visual_tokens: int = 0


def run_batch(
    engine: Engine, folder: ModelFolder, images: list, prompt: str, new_tokens: int
) -> list[RequestTrace]:
    """B requests (one picture each) submitted together, greedy, exactly `new_tokens` each."""
    from vllm import SamplingParams

    llm_engine = engine.llm.llm_engine
    scheduler = llm_engine.engine_core.engine_core.scheduler
    sampling = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    ids = folder.prompt_ids(prompt)
    t0 = time.monotonic()
    names = [f"hired-{time.monotonic_ns()}-{i}" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):
        llm_engine.add_request(
            name, {"prompt_token_ids": ids, "multi_modal_data": {"image": image}}, sampling
        )
    seen = {name: 0 for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    blocks = dict.fromkeys(names, 0)
    finished = {}
    while llm_engine.has_unfinished_requests():
        outputs = llm_engine.step()
        now = time.monotonic() - t0
        for output in outputs:
            count = len(output.outputs[0].token_ids)
            times[output.request_id] += [now] * (count - seen[output.request_id])
            seen[output.request_id] = count
            if output.finished:
                finished[output.request_id] = output
        for internal in scheduler.requests:  # vLLM's own ids: ours with a random suffix
            name = internal.rsplit("-", 1)[0]
            if name in blocks:
                held = scheduler.kv_cache_manager.get_block_ids(internal)
                blocks[name] = max(blocks[name], sum(len(group) for group in held))
    image_id = folder.config.image_token_id
    traces = []
    for name in names:
        output = finished[name]
        stats = output.metrics
        traces.append(
            RequestTrace(
                prompt_tokens=len(output.prompt_token_ids),
                first_s=stats.first_token_ts - t0,
                last_s=stats.last_token_ts - t0,
                token_s=times[name],
                kv_blocks=blocks[name],
                tokens=list(output.outputs[0].token_ids),
                visual_tokens=sum(1 for token in output.prompt_token_ids if token == image_id),
            )
        )
    return traces


def batch_metrics(traces: list[RequestTrace], new_tokens: int) -> dict:
    """The suite's metrics (docs/metrics.md) on vLLM's per-request timestamps: TTFT and TPOT per request;
    e2e and the throughputs over the batch (decode from its last first token to its last token)."""
    batch = len(traces)
    first = max(t.first_s for t in traces)  # every sample has its first token: the batch's prefill is done
    end = max(t.last_s for t in traces)
    decode_steps = new_tokens - 1
    return {
        "ttft_s": [t.first_s for t in traces],
        "tpot_s": [(t.last_s - t.first_s) / decode_steps if decode_steps > 0 else None for t in traces],
        "e2e_s": end,
        "decode_tokens_per_s": batch * decode_steps / (end - first)
        if decode_steps > 0 and end > first
        else None,
        "e2e_tokens_per_s": batch * new_tokens / end,
        "prefill_tokens_per_s": None,  # vLLM times no prefill apart from preprocessing and the vision tower
        "itl_s": [b - a for t in traces for a, b in pairwise(t.token_s)],
    }
