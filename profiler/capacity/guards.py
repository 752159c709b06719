"""Refusals before anything heavy loads: what cannot fit, cannot finish, or cannot mean anything.

Each guard answers from the configuration, the memory model and the machine alone (no model is
built, no weights are read) and raises InputError with the need, the limit and what to change.
`--force` skips the two that are estimates (memory and CPU time); the others are facts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from workloads.errors import InputError

GPU_CLASS_PARAMETERS = 1e9  # above this, a CPU run of one point takes minutes to hours
PIXEL_BYTES = 3 * 4  # the processor's float32 RGB
RAM_SHARE_FOR_INPUTS = 0.5  # inputs must leave room for the model and the activations


@dataclass(frozen=True)
class Need:
    """What the largest planned point of a model needs, from the memory model."""

    weights_gib: float
    peak_gib: float  # weights + the largest phase
    point: object  # the Point that needs it


def host_available_gib() -> float | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), in GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def cpu_gflops(seconds: float = 0.05) -> float:
    """This CPU's float32 matmul rate in GFLOP/s, measured on a small product (about 50 ms)."""
    import torch

    a = torch.randn(384, 384)
    flops, start, runs = 2 * 384**3, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or runs < 3:
        a @ a
        runs += 1
    return flops * runs / (time.perf_counter() - start) / 1e9


def check_inputs_fit(point) -> None:
    """The inputs of one request alone must leave host memory for the model: pictures and pixel values."""
    available = host_available_gib()
    if available is None or point.image_sizes is None:
        return
    sizes = point.image_sizes
    # each picture in RGB, plus at most 5 partitions of 336 x 336 float32 pixels (the anyres maximum)
    per_image = [w * h * 3 + 5 * 336 * 336 * PIXEL_BYTES for w, h in sizes]
    need = sum(per_image[i % len(per_image)] for i in range(point.batch_size)) / 2**30
    if need > available * RAM_SHARE_FOR_INPUTS:
        raise InputError(
            f"the inputs of one request alone take {need:.1f} GiB of host memory "
            f"({point.batch_size} images), more than half of the {available:.1f} GiB available: "
            "use a smaller --batch or --image-size"
        )


def check_point_shape(point, config, text_tokens: int, params: dict) -> None:
    """Every image keeps at least one visual token, and prompt + new tokens fit the model's context."""
    from hired.layout import image_layout
    from hired.methods import METHODS, expected_tokens

    context = getattr(config.text_config, "max_position_embeddings", None)
    for width, height in point.image_sizes or []:
        layout = image_layout((height, width), config)
        kept = expected_tokens(point.method, point.budget, point.fidelity, layout, params)
        if kept is not None and kept < 1:
            raise InputError(
                f"--budget {point.budget:g} keeps {kept} of the {layout.n_full} visual tokens of a "
                f"{width}x{height} image ({point.method}): the smallest budget that keeps one is "
                f"{0.5 / layout.n_full:.2g}"
            )
        llm_stage = METHODS[point.method].stage == "llm"  # every visual token enters the LLM
        visual = kept if kept is not None and not llm_stage else layout.stock_tokens
        longest = text_tokens + visual + point.new_tokens
        if context and longest > context:
            raise InputError(
                f"prompt ({text_tokens} text + {visual} visual tokens) plus "
                f"{point.new_tokens} new tokens is {longest} tokens, beyond the model's {context}-token "
                "context: use fewer --new-tokens, a smaller budget or a smaller image"
            )


def largest_need(points, config, dtype: str, text_tokens: int) -> Need:
    """Weights + the largest phase over the points (adaptive counts bounded by the stock count)."""
    from dataclasses import replace

    from profiler.capacity.model import BYTES, model_shape, point_peak
    from profiler.results.schema import GIB

    shape = model_shape(config)
    weights = shape.parameters * BYTES[dtype] / GIB
    best = Need(weights, weights, points[0])
    for point in points:
        if point.image_sizes is None:
            continue
        peak = point_peak(config, dtype, text_tokens, point, point.seed) or point_peak(
            config, dtype, text_tokens, replace(point, method="none", budget=1.0, params={}), point.seed
        )
        gib = peak(point.batch_size)
        if gib > best.peak_gib:
            best = Need(weights, gib, point)
    return best


def check_model_fits(points, force: bool, generates: bool = True) -> None:
    """Per model: the planned points fit the device's memory, their prompts its context, each image
    keeps a visual token, and (when the language model runs) a CPU is not asked for a GPU workload."""
    from hired.methods import METHODS
    from hired.shape import shape_of
    from hired.spec import method_params
    from profiler.capacity.model import CUDA_CONTEXT_GIB
    from profiler.results.schema import GIB
    from workloads.device import resolve_device, resolve_dtype, resolve_model_name
    from workloads.models import model_config, prompt_text_tokens

    groups: dict[tuple, list] = {}
    for point in points:
        groups.setdefault(point.runner_group, []).append(point)
    for (model, _weights, dtype_name, device_name, cap, vllm), mine in groups.items():
        device = resolve_device(device_name)
        name = resolve_model_name(model, device, "vllm" if vllm else "eager")
        dtype = str(resolve_dtype(dtype_name, device)).removeprefix("torch.")
        config = model_config(name)
        text = prompt_text_tokens(name, mine[0].prompt)
        for point in mine:
            check_inputs_fit(point)
            params = method_params(METHODS[point.method], shape_of(config), point.params, point.seed)
            check_point_shape(point, config, text, params)
        if force:
            continue
        need = largest_need(mine, config, dtype, text)
        if device.type == "cuda":
            import torch

            from profiler.results.schema import parse_gib

            card = torch.cuda.get_device_properties(device).total_memory / GIB
            limit = parse_gib(cap) if cap else card - CUDA_CONTEXT_GIB
            where = f"the {cap} cap" if cap else f"this {card:.0f} GiB GPU (less its CUDA context)"
        else:
            limit = host_available_gib()
            where = "this host's available memory"
        if limit is not None and need.peak_gib > limit:
            p = need.point
            raise InputError(
                f"{name} in {dtype} needs about {need.peak_gib:.1f} GiB "
                f"({need.weights_gib:.1f} GiB of weights + the largest point, {p.method} at batch "
                f"{p.batch_size}) but {where} has {limit:.1f} GiB: "
                "use a smaller --batch or model, float16/bfloat16, a GPU with more memory, or --force to try"
            )
        if device.type == "cpu" and generates:
            check_cpu_time(name, config, mine, text)


def check_cpu_time(name: str, config, points, text_tokens: int) -> None:
    """A 7B-class model on a CPU is a GPU workload: say how long one point would take, from its FLOPs."""
    from profiler.capacity.model import model_shape

    parameters = model_shape(config).parameters
    if parameters < GPU_CLASS_PARAMETERS:
        return
    from hired.layout import image_layout

    point = max(points, key=lambda p: p.batch_size)
    visual = max(image_layout((h, w), config).stock_tokens for w, h in point.image_sizes or [(600, 600)])
    tokens = point.batch_size * (text_tokens + visual + point.new_tokens)
    flops = 2 * parameters * tokens * (point.warmup + point.repeats)
    rate = cpu_gflops()
    minutes = flops / (rate * 1e9) / 60
    raise InputError(
        f"{name} ({parameters / 1e9:.1f} B parameters) is a GPU workload: one point here ({point.batch_size} "
        f"images, {point.warmup + point.repeats} requests) is about {flops / 1e12:.0f} TFLOP, some "
        f"{minutes:.0f} minutes at this CPU's {rate:.0f} GFLOP/s: use --device cuda on a GPU, the tiny "
        "preset, or --force to run it anyway"
    )


LONG_RUN_S = 3600.0  # a plan estimated above this asks for --yes (or a yes on a terminal) before it starts
# per-request floors, from measurements: generate of 2-16 tokens with the tiny preset on a 2-core CPU
# (~0.1 s + ~10 ms per token), and of 15 tokens with llava-next-7b on an H200 (21.9 ms per token eager,
# 6.5 ms compiled); a point adds ~0.3 s of set-up and one untimed agreement request
REQUEST_FLOOR_S = {"cpu": 0.1, "cuda": 0.05}
STEP_FLOOR_S = {
    ("cpu", "eager"): 0.01,
    ("cpu", "compiled"): 0.01,
    ("cuda", "eager"): 0.02,
    ("cuda", "compiled"): 0.006,
    ("cpu", "vllm"): 0.01,
    ("cuda", "vllm"): 0.006,
}
POINT_OVERHEAD_S = 0.3
VLLM_START_S = {"cpu": 10.0, "cuda": 60.0}  # an engine per method: weights, profiling, KV cache, CUDA graphs
GPU_EFFECTIVE_FLOPS = 2e14  # dense half precision an H100/H200 sustains in prefill, roughly


def estimate_seconds(points, agreement: bool = True) -> float:
    """A rough, low estimate of how long measuring `points` takes, before anything is built: per request
    the larger of its FLOPs at this CPU's (or a GPU's typical) rate and the per-token floors above."""
    from hired.layout import image_layout
    from profiler.capacity.model import model_shape
    from workloads.device import resolve_device, resolve_model_name
    from workloads.models import model_config

    total, configs, rate = 0.0, {}, None
    for point in points:
        resolved = resolve_device(point.device)
        device, name = resolved.type, resolve_model_name(point.model, resolved)
        if name not in configs:
            configs[name] = model_config(name)
        config = configs[name]
        if device == "cpu" and rate is None:
            rate = cpu_gflops() * 1e9
        sizes = point.image_sizes or [(600, 600)]
        visual = max(image_layout((h, w), config).stock_tokens for w, h in sizes)
        shape = model_shape(config)
        matmul = shape.parameters - 2 * shape.vocab * shape.hidden  # embeddings and head: no per-token matmul
        flops = 2 * matmul * point.batch_size * (visual + point.new_tokens)
        floor = REQUEST_FLOOR_S[device] + point.new_tokens * STEP_FLOOR_S[device, point.engine]
        request_s = max(flops / (rate if device == "cpu" else GPU_EFFECTIVE_FLOPS), floor)
        extra = agreement and point.method != "none" and point.engine != "vllm"  # vLLM's: the last request
        requests = point.warmup + point.repeats + extra
        start = VLLM_START_S[device] if point.engine == "vllm" else 0.0
        total += POINT_OVERHEAD_S + start + max(requests * request_s, point.min_duration)
    return total


def confirm_long_run(points, yes: bool, agreement: bool = True) -> None:
    """A plan estimated above an hour says so before the first point; it starts only with --yes, or with a
    yes typed on a terminal. Shorter plans pass without a word."""
    import sys

    seconds = estimate_seconds(points, agreement)
    if seconds <= LONG_RUN_S or yes:
        return
    requests = sum(p.warmup + p.repeats for p in points)
    what = (
        f"{len(points):,} points ({requests:,} timed requests) would take at least about "
        f"{seconds / 3600:.1f} h (a rough estimate before measuring)"
    )
    if not sys.stdin.isatty():
        raise InputError(f"{what}: pass --yes to start it, or plan fewer points")
    import typer

    if not typer.confirm(f"{what}. Start?", default=False, err=True):
        raise InputError(f"{what}: not started")
