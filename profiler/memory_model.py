"""Predicted peak memory of a point from its configuration alone, for any card size.

Peak torch-allocated memory of one request = weights + the largest of three phases:
- vision: the ViT over every partition (hidden states, MLP activations, what the hooks keep);
- prefill: the KV cache of the prompt (text + kept visual tokens) plus one decoder layer's
  activations over the whole prompt and the last position's logits;
- decode: the KV cache of prompt + new tokens (decode activations are one token wide).
Attention is fused (sdpa): no L x L matrices. The CUDA context is not torch memory: give it
with `overhead_gib` when asking what fits on a real card.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from profiler.memory import GIB

BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
CUDA_CONTEXT_GIB = 0.5  # GPU memory that is not PyTorch's on a real card (CUDA context, cuBLAS handles)


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a LlavaNextConfig."""

    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    vision_tokens: int  # per partition, CLS included (577)
    vision_hidden: int
    vision_intermediate: int

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@cache
def _parameters(config_json: str) -> int:
    import json

    import torch
    from transformers import AutoConfig

    from workloads.models import architecture

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = architecture(config)[0](config)
    return sum(p.numel() for p in model.parameters())


_SHAPES: dict[int, tuple] = {}  # id(config) -> (config, shape): serialising a config takes ~16 ms


def model_shape(config) -> ModelShape:
    """The shapes the memory model needs, once per config object (a plan asks for each of its points)."""
    kept = _SHAPES.get(id(config))
    if kept is None or kept[0] is not config:
        kept = _SHAPES[id(config)] = (config, _model_shape(config))
    return kept[1]


def _model_shape(config) -> ModelShape:
    text, vision = config.text_config, config.vision_config
    heads = text.num_attention_heads
    return ModelShape(
        parameters=_parameters(config.to_json_string()),
        layers=text.num_hidden_layers,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
        vision_tokens=(vision.image_size // vision.patch_size) ** 2 + 1,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
    )


def predict_peak_gib(
    shape: ModelShape,
    dtype: str,
    prompt_tokens: list[int],
    new_tokens: int,
    partitions: int,
    cached_tokens: list[float] | None = None,
) -> dict:
    """Peak allocated GiB for one request of len(prompt_tokens) samples, with the parts it is made of.

    prompt_tokens: per sample, text + visual tokens entering the LLM (the batch is padded to the
    longest); partitions: ViT partitions over the whole batch; cached_tokens: per sample, the prompt
    tokens the KV cache holds averaged over layers, when fewer (an LLM-stage method drops tokens at K).
    """
    b = BYTES[dtype]
    batch, length = len(prompt_tokens), max(prompt_tokens)
    cached = max(cached_tokens) if cached_tokens else length
    weights = shape.parameters * b
    # the residual stream, its normalised copy and two MLP-wide tensors of the layer being run
    vision = partitions * shape.vision_tokens * (2 * shape.vision_hidden + 2 * shape.vision_intermediate) * b
    kv_prompt = shape.kv_bytes_per_token(b) * batch * cached
    kv_full = shape.kv_bytes_per_token(b) * batch * (cached + new_tokens)
    # input embeddings, residual, normalised copy; gate, up and their product; last-position logits in fp32
    prefill = batch * length * (3 * shape.hidden + 3 * shape.intermediate) * b + batch * shape.vocab * (b + 4)
    phases = {"vision": vision, "prefill": kv_prompt + prefill, "decode": kv_full}
    peak_phase = max(phases, key=phases.get)
    return {
        "peak_gib": (weights + phases[peak_phase]) / GIB,
        "peak_phase": peak_phase,
        "weights_gib": weights / GIB,
        "kv_cache_gib": kv_full / GIB,
        "vision_gib": vision / GIB,
        "prefill_activations_gib": prefill / GIB,
    }


def largest_batch(peak_of_batch, memory_gib: float, limit: int = 4096) -> int:
    """Largest batch whose predicted peak fits in memory_gib (peaks grow with the batch)."""
    from profiler.boundary import search_boundary

    return search_boundary(lambda batch: peak_of_batch(batch) <= memory_gib, limit).largest_fitting


def point_peak(config, dtype: str, text_tokens: int, point, seed: int = 0):
    """batch -> predicted peak GiB of a planned point (images cycle through its sizes, (width, height));
    None when the token count depends on the weights (adaptive methods)."""
    from hired.layout import image_layout
    from hired.methods import METHODS, expected_tokens
    from hired.spec import method_params, shape_of

    method = METHODS[point.method]
    params = method_params(method, shape_of(config), point.params, seed)
    layouts = [image_layout((h, w), config) for w, h in point.image_sizes]
    tokens = [
        expected_tokens(point.method, point.budget, point.fidelity, layout, params) for layout in layouts
    ]
    if any(t is None for t in tokens):
        return None
    shape = model_shape(config)
    entering, cached = list(tokens), None
    if method.stage == "llm" and point.budget < 1.0:  # all tokens enter; layers >= K cache the kept ones
        entering = [layout.stock_tokens for layout in layouts]
        k = params["layer"]
        cached = [
            (k * e + (shape.layers - k) * t) / shape.layers for e, t in zip(entering, tokens, strict=True)
        ]

    def peak(batch: int) -> float:
        chosen = [i % len(layouts) for i in range(batch)]
        prompt = [text_tokens + entering[i] for i in chosen]
        kv = None if cached is None else [text_tokens + cached[i] for i in chosen]
        partitions = sum(layouts[i].partitions for i in chosen)
        return predict_peak_gib(shape, dtype, prompt, point.new_tokens, partitions, kv)["peak_gib"]

    peak.tokens_per_image = tokens[0]
    return peak


def predictions(points: list, dtype: str, memory_gib: float) -> list[dict]:
    """Rows for `hired-bench predict`: per planned point, peaks at batch 1, 2, 4, 8 and the largest batch."""
    from workloads.models import model_config, prompt_text_tokens

    rows = []
    for point in points:
        config = model_config(point.model)
        text = prompt_text_tokens(point.model, point.prompt)
        peak = point_peak(config, dtype, text, point, point.seed)
        rows.append(
            {
                "model": point.model,
                "dtype": dtype,
                "method": point.method,
                "budget": "adaptive" if point.budget is None else point.budget,
                "budget_label": point.label,
                "fidelity": point.fidelity,
                "method_params": point.params,
                "image_sizes": [list(s) for s in point.image_sizes],
                "new_tokens": point.new_tokens,
                "memory_gib": memory_gib,
                "tokens_per_image": None if peak is None else peak.tokens_per_image,
                "peak_gib_by_batch": None if peak is None else {str(b): peak(b) for b in (1, 2, 4, 8)},
                "largest_batch": None if peak is None else largest_batch(peak, memory_gib),
            }
        )
    return rows


def plan_predictions(points: list, worker_gpu: bool | None = None) -> list[dict]:
    """Per planned point: the model it resolves to, predicted peak GiB (None where the weights decide the
    count) and whether it fits the point's memory cap or this machine's GPU ("n/a" without either).
    worker_gpu: the points run on Ray workers with (True) or without (False) a GPU, not here."""
    from profiler.memory import GIB, parse_gib
    from workloads.device import resolve_device, resolve_dtype, resolve_model_name
    from workloads.models import model_config, prompt_text_tokens

    rows, cache = [], {}
    for point in points:
        device = resolve_device(point.device, worker_gpu)
        name = resolve_model_name(point.model, device)
        if name not in cache:
            cache[name] = (model_config(name), prompt_text_tokens(name, point.prompt))
        config, text = cache[name]
        dtype = str(resolve_dtype(point.dtype, device)).removeprefix("torch.")
        peak = point_peak(config, dtype, text, point, point.seed) if point.image_sizes else None
        gib = None if peak is None else peak(point.batch_size)
        memory = None
        if point.memory_cap:
            memory = parse_gib(point.memory_cap)
        elif device.type == "cuda" and worker_gpu is None:
            import torch

            memory = torch.cuda.get_device_properties(device).total_memory / GIB - CUDA_CONTEXT_GIB
        fits = "n/a" if gib is None or memory is None else ("yes" if gib <= memory else "OOM")
        rows.append({"model": name, "peak_gib": gib, "fits": fits})
    return rows
