"""Decode time per token, eager against compiled, beside the memory-bandwidth bound. Prints figures;
asserts nothing.

    python -m profiler.bench.decode [--model auto] [--batches 1 4 8] [--lengths 600 3000]

A decoding step reads every weight of the language model once and the KV cache of every sample, so
no engine can beat (LLM weight bytes + KV bytes) / memory bandwidth per step. The bandwidth is the
card's published HBM figure (by GPU name) or, on a CPU or an unknown card, measured by a copy. Eager
transformers' generate is bound by Python overhead at small batch; the compiled engine (static KV
cache, torch.compile, CUDA graphs on a GPU) should reach a large share of the bound. Decode time =
(t(T tokens) - t(1 token)) / (T - 1), median of rounds, after an untimed call that compiles.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from profiler.measure.request import generate_tokens
from workloads.models import load_model

# published memory bandwidth in GB/s, by a part of the GPU's name (most specific first)
HBM_GB_S = {
    "H200": 4800,
    "H100 NVL": 3900,
    "H100 PCIe": 2000,
    "H100": 3350,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100": 1555,
    "L40S": 864,
    "L4": 300,
    "A10": 600,
    "RTX 4090": 1008,
    "V100": 900,
    "T4": 320,
    "P40": 346,
}


def bandwidth_gb_s(device: torch.device) -> tuple[float, str]:
    """(GB/s, where the figure comes from): the published figure of this card, or a measured copy."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for part, figure in HBM_GB_S.items():
            if part in name:
                return float(figure), f"published for {name}"
    return measured_copy_gb_s(device), "measured (a 256 MiB copy)"


def measured_copy_gb_s(device: torch.device, size: int = 256 * 2**20) -> float:
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size / min(times) / 1e9  # read + write


def llm_weight_bytes(model) -> int:
    """Bytes a decoding step reads: the language model and its output head."""
    modules = [model.model.language_model, model.lm_head]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def kv_bytes_per_token(model) -> int:
    text = model.config.text_config
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize


def decode_ms(lm, batch: int, length: int, new_tokens: int, engine: str, rounds: int) -> float:
    hidden = lm.model.config.text_config.hidden_size
    embeds = torch.randn(batch, length, hidden, device=lm.device, dtype=lm.dtype) * 0.02
    inputs = SimpleNamespace(inputs_embeds=embeds, attention_mask=torch.ones(batch, length, device=lm.device))

    def seconds(tokens: int) -> float:
        if lm.device.type == "cuda":
            torch.cuda.synchronize(lm.device)
        start = time.perf_counter()
        generate_tokens(lm.model, inputs, tokens, engine=engine).cpu()
        return time.perf_counter() - start

    seconds(new_tokens)  # compiles (compiled engine) and warms up
    seconds(1)
    return statistics.median(
        (seconds(new_tokens) - seconds(1)) / (new_tokens - 1) * 1e3 for _ in range(rounds)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto", help="auto: llava-next-7b on a GPU, tiny on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: float16 on a GPU, float32 on a CPU")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--lengths", type=int, nargs="+", default=[600, 3000], help="prompt (KV) lengths")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["eager", "compiled"])
    args = parser.parse_args()
    lm = load_model(args.model, "random", args.dtype, args.device)
    bandwidth, source = bandwidth_gb_s(lm.device)
    if lm.device.type == "cuda":  # the published figure beside what a copy reaches on this card
        source += f"; a 1 GiB copy reaches {measured_copy_gb_s(lm.device, 2**30):.0f} GB/s"
    weights, per_token = llm_weight_bytes(lm.model), kv_bytes_per_token(lm.model)
    where = torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "CPU"
    print(
        f"{lm.name} ({str(lm.dtype).removeprefix('torch.')}, random weights) on {where}: LLM weights "
        f"{weights / 2**30:.2f} GiB, KV {per_token / 2**10:.1f} KiB/token, "
        f"bandwidth {bandwidth:.0f} GB/s ({source})"
    )
    print(f"decode ms/token, median of {args.rounds} rounds of {args.new_tokens} tokens\n")
    print(f"{'engine':10s}{'batch':>6s}{'KV len':>8s}{'ms/token':>10s}{'bound ms':>10s}{'of bound':>10s}")
    for engine in args.engines:
        for length in args.lengths:
            for batch in args.batches:
                ms = decode_ms(lm, batch, length, args.new_tokens, engine, args.rounds)
                kv = per_token * batch * (length + args.new_tokens / 2)  # the cache read at an average step
                bound = (weights + kv) / (bandwidth * 1e9) * 1e3
                print(
                    f"{engine:10s}{batch:6d}{length:8d}{ms:10.2f}{bound:10.3f}{bound / ms:10.1%}", flush=True
                )


if __name__ == "__main__":
    main()
