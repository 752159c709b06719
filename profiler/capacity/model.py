"""Predicted peak memory of a point from its configuration alone, for any card size.

Peak torch-allocated memory of one request = weights + the largest of three phases:
- vision: the ViT over every partition (hidden states, MLP activations, what the hooks keep);
- prefill: the KV cache of the prompt (text + kept visual tokens) plus one decoder layer's
  activations over the whole prompt and the last position's logits;
- decode: the KV cache of prompt + new tokens (decode activations are one token wide).
Attention is fused (sdpa): no L x L matrices. The CUDA context is not torch memory: give it
with `overhead_gib` when asking what fits on a real card.

That is the modern stack (transformers 5). The released stack the HiRED paper measured
(transformers 4.42 with the HiRED patch, its Table 4) allocates more, read from its source:
- decode: LLaVA-Next takes no cache class in 4.42, so generate hands the KV cache over as a tuple
  and every step rebuilds a DynamicCache from it, concatenating each layer while the old tuple is
  still referenced: two whole KV caches at the end of every decode step;
- prefill: the language model's logits at every prompt position, and their float32 copy;
- vision: the eager CLIP attention (4.42 has no fused one) and every layer's hidden states
  (`output_hidden_states=True`).
Its language model runs SDPA (4.42 picks it for LLaVA-Next), so there is no L x L matrix there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from profiler.capacity.search import search_boundary
from profiler.results.schema import GIB

BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
# which software stack a prediction is for: what `predict --stack` offers
STACKS = {
    "modern": "transformers 5 as this suite runs it (fused attention, last-position logits)",
    "released": "transformers 4.42 with the HiRED patch, as the HiRED paper measured (two KV caches "
    "while decoding, full-prompt float32 logits, eager vision attention)",
}
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
    vision_layers: int
    vision_heads: int

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
        vision_layers=vision.num_hidden_layers,
        vision_heads=vision.num_attention_heads,
    )


def predict_peak_gib(
    shape: ModelShape,
    dtype: str,
    prompt_tokens: list[int],
    new_tokens: int,
    partitions: int,
    cached_tokens: list[float] | None = None,
    stack: str = "modern",
) -> dict:
    """Peak allocated GiB for one request of len(prompt_tokens) samples, with the parts it is made of.

    prompt_tokens: per sample, text + visual tokens entering the LLM (the batch is padded to the
    longest); partitions: ViT partitions over the whole batch; cached_tokens: per sample, the prompt
    tokens the KV cache holds averaged over layers, when fewer (an LLM-stage method drops tokens at K);
    stack: "modern" or "released" (STACKS). held_output_gib: the KV cache of the request's output, for
    a caller that keeps the previous request's output while the next runs (the paper's script does).
    """
    b = BYTES[dtype]
    batch, length = len(prompt_tokens), max(prompt_tokens)
    cached = max(cached_tokens) if cached_tokens else length
    kv_token = shape.kv_bytes_per_token(b) * batch
    weights = shape.parameters * b
    # the residual stream, its normalised copy and two MLP-wide tensors of the layer being run
    vision = partitions * shape.vision_tokens * (2 * shape.vision_hidden + 2 * shape.vision_intermediate) * b
    kv_prompt = kv_token * cached
    kv_full = kv_token * (cached + new_tokens)
    # input embeddings, residual, normalised copy; gate, up and their product
    prefill = batch * length * (3 * shape.hidden + 3 * shape.intermediate) * b
    logit_positions = 1
    decode = kv_full
    if stack == "released":
        # every layer's hidden states kept, and one eager attention layer: scores and their softmax
        vision += partitions * shape.vision_tokens * shape.vision_hidden * (shape.vision_layers + 1) * b
        vision += 2 * partitions * shape.vision_heads * shape.vision_tokens**2 * b
        logit_positions = length
        # the last step's old cache tuple (one token shorter) beside the rebuilt one
        decode = kv_token * (cached + new_tokens - 2) + kv_token * (cached + new_tokens - 1)
    elif stack != "modern":
        raise ValueError(f"unknown stack {stack!r} (use {', '.join(STACKS)})")
    logits = batch * logit_positions * shape.vocab * (b + 4)  # the model's dtype and a float32 copy
    phases = {"vision": vision, "prefill": kv_prompt + prefill + logits, "decode": decode}
    peak_phase = max(phases, key=phases.get)
    return {
        "peak_gib": (weights + phases[peak_phase]) / GIB,
        "peak_phase": peak_phase,
        "weights_gib": weights / GIB,
        "kv_cache_gib": kv_full / GIB,
        "vision_gib": vision / GIB,
        "prefill_activations_gib": (prefill + logits) / GIB,
        "held_output_gib": kv_token * (cached + new_tokens - 1) / GIB,
    }


def largest_batch(peak_of_batch, memory_gib: float, limit: int = 4096) -> int:
    """Largest batch whose predicted peak fits in memory_gib (peaks grow with the batch)."""

    return search_boundary(lambda batch: peak_of_batch(batch) <= memory_gib, limit).largest_fitting


def point_peak(config, dtype: str, text_tokens: int, point, seed: int = 0, stack: str = "modern"):
    """batch -> predicted peak GiB of a planned point (images cycle through its sizes, (width, height));
    None when the token count depends on the weights (adaptive methods). `peak.parts(batch)` gives
    the whole prediction (predict_peak_gib's dict)."""
    from hired.layout import image_layout
    from hired.methods import METHODS, expected_tokens
    from hired.shape import shape_of
    from hired.spec import method_params

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

    def parts(batch: int) -> dict:
        chosen = [i % len(layouts) for i in range(batch)]
        prompt = [text_tokens + entering[i] for i in chosen]
        kv = None if cached is None else [text_tokens + cached[i] for i in chosen]
        partitions = sum(layouts[i].partitions for i in chosen)
        return predict_peak_gib(shape, dtype, prompt, point.new_tokens, partitions, kv, stack)

    def peak(batch: int) -> float:
        return parts(batch)["peak_gib"]

    peak.tokens_per_image = tokens[0]
    peak.parts = parts
    return peak


def stack_of(point, stack: str) -> str:
    """The stack a point is predicted for: as asked, or with "auto" the released one for reference
    fidelity (what the released code runs on) and the modern one for paper fidelity."""
    if stack != "auto":
        return stack
    return "released" if point.fidelity == "reference" else "modern"


def predictions(points: list, dtype: str, memory_gib: float, stack: str = "auto") -> list[dict]:
    """Rows for `hired-bench predict`: per planned point, peaks at batch 1, 2, 4, 8 and the largest batch."""
    from workloads.models import model_config, prompt_text_tokens

    rows = []
    for point in points:
        config = model_config(point.model)
        text = prompt_text_tokens(point.model, point.prompt)
        peak = point_peak(config, dtype, text, point, point.seed, stack_of(point, stack))
        rows.append(
            {
                "model": point.model,
                "stack": stack_of(point, stack),
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
    from profiler.results.schema import GIB, parse_gib
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


def table4(config, dtype: str, text_tokens: int, point, memory_gib: float) -> list[dict]:
    """The HiRED paper's Table 4 cells beside the released-stack and modern predictions, for one picture
    (the paper's: 600 x 600) and reference fidelity, as the paper ran it. `memory_gib`: the card's
    PyTorch memory, above which a prediction reads as out of memory (the paper's P40: 24 GiB)."""
    from dataclasses import replace

    from workloads.paper import PAPER_TABLE4

    rows = []
    for batch, settings in PAPER_TABLE4.items():
        for setting, paper in settings.items():
            method, budget = ("none", 1.0) if setting == "full" else ("hired", setting)
            asked = replace(point, method=method, budget=budget, fidelity="reference", params={})
            released = point_peak(config, dtype, text_tokens, asked, stack="released").parts(batch)
            modern = point_peak(config, dtype, text_tokens, asked, stack="modern")(batch)
            rows.append(
                {
                    "batch": batch,
                    "setting": setting,
                    "paper_gib": None if paper is None else paper[2],
                    "released_gib": released["peak_gib"],
                    "released_held_gib": released["peak_gib"] + released["held_output_gib"],
                    "modern_gib": modern,
                    "memory_gib": memory_gib,
                }
            )
    return rows
