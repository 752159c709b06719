"""Time each method's selection step alone at LLaVA-Next-7B shapes, and each vectorised method against
its per-token loop oracle (tests/support/oracles.py). Prints figures; asserts nothing.

    python -m profiler.bench.select [--device cuda] [--repeats 20]

Shapes: 672x672 images (5 partitions x 577 tokens), CLIP ViT-L width 1024, 16 heads, batch 1 and 8.
Inputs are random; selection cost depends on shapes and kept counts, not on values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from hired.capture import VisionBatch
from hired.layout import image_layout
from hired.methods import METHODS, VisionShape, method_params
from hired.methods.divprune import farthest_point
from hired.methods.prumerge import merge, plan
from workloads.presets import PRESETS

WIDTH, HEADS, DEPTH, FEATURE_LAYER = 1024, 16, 24, 22
POINTS = [  # (label, method, budget, fidelity)
    ("hired 20%", "hired", 0.2, "paper"),
    ("hired 20% (reference)", "hired", 0.2, "reference"),
    ("prumerge 20%", "prumerge", 0.2, "paper"),
    ("prumerge+ 20%", "prumerge+", 0.2, "paper"),
    ("prumerge adaptive (reference)", "prumerge", None, "reference"),
    ("prumerge+ adaptive (reference)", "prumerge+", None, "reference"),
    ("visionzip 20%", "visionzip", 0.2, "paper"),
    ("divprune 20%", "divprune", 0.2, "paper"),
    ("globalcom2 20%", "globalcom2", 0.2, "paper"),
    ("globalcom2 20% (reference)", "globalcom2", 0.2, "reference"),
    ("random 20%", "random", 0.2, "paper"),
    ("pool 20%", "pool", 0.2, "paper"),
    ("resize 10% (base alone, pooled)", "resize", 0.1, "paper"),
]
LLM_WIDTH = 4096  # the projector's output: what DivPrune compares


def synthetic_batch(
    images: int, device: torch.device, dtype: torch.dtype, seed: int = 0, base_only: bool = False
) -> VisionBatch:
    """Vision outputs of the 7B tower for `images` 672x672 pictures, with heavy-tailed CLS attention
    (base_only: what the resize baseline encodes below its smallest grid, the base partition alone)."""
    g = torch.Generator().manual_seed(seed)
    config = PRESETS["llava-next-7b"].config()
    layouts = [image_layout((672, 672), config, base_only) for _ in range(images)]
    s = sum(layout.partitions for layout in layouts)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    layers = (0, FEATURE_LAYER, DEPTH - 1)
    projector = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, LLM_WIDTH), torch.nn.GELU(), torch.nn.Linear(LLM_WIDTH, LLM_WIDTH)
    ).to(device, dtype)
    return VisionBatch(
        layouts,
        rand(s, 576, WIDTH),
        HEADS,
        {layer: rand(s, 577, WIDTH, scale=3.0) for layer in layers},  # every query: reference fidelity
        {layer: rand(s, 577, WIDTH) for layer in layers},
        project=torch.no_grad()(projector),
        newline=rand(LLM_WIDTH),
    )


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 3, budget_ms: float = 3000.0) -> float:
    """Median of `repeats` timed calls after `warmup` untimed ones; a call slower than the budget (a
    per-token loop of a released code) is warmed and timed once, so the study keeps to its time."""

    def timed() -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    for _ in range(warmup):
        if timed() > budget_ms:
            break
    times = [timed()]
    while len(times) < repeats and sum(times) < budget_ms:
        times.append(timed())
    return statistics.median(times)


def merge_inputs(batch: VisionBatch, budget: float):
    """What PruMerge's merge receives at this budget (paper mode, no padding at 672x672)."""
    attention = batch.cls_attention(DEPTH - 1, heads=1)[:, 0]
    keys = F.normalize(batch.keys[DEPTH - 1][:, 1:].float(), dim=-1)
    s = attention.shape[0]
    valid = torch.ones(s, 576, dtype=torch.bool, device=attention.device)
    per_partition = round(budget * 576)
    kept_idx, count, _ = plan(attention, valid, [per_partition] * s, plus=False)
    return batch.features, keys, attention, kept_idx[:, : int(count.max())], count, valid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float16 on CUDA, float32 on CPU by default")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    shape = VisionShape(depth=DEPTH, feature_layer=FEATURE_LAYER, llm_depth=32)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"selection step alone, 7B shapes (672x672 -> 5 x 577 tokens, width {WIDTH}), {dtype}, {name}")
    print(
        f"median of {args.repeats} after 3 warm-up (once, for a call over 3 s), in ms; "
        "reference fidelity at batch 1 only\n"
    )
    print(f"{'method':34s}" + "".join(f"{f'batch {b}':>12s}" for b in args.batches) + f"{'kept/image':>13s}")
    batches = {b: synthetic_batch(b, device, dtype) for b in args.batches}
    base_only = {b: synthetic_batch(b, device, dtype, base_only=True) for b in args.batches}
    for label, method_name, budget, fidelity in POINTS:
        method = METHODS[method_name]
        params = method_params(method, shape)
        row, kept = [], ""
        for b in args.batches:
            if fidelity == "reference" and b > 1:  # the releases ran one image at a time
                row.append(f"{'–':>12s}")
                continue
            try:
                batch = base_only[b] if method_name == "resize" else batches[b]
                select = partial(method.select, batch, budget, fidelity, params)
                row.append(f"{median_ms(select, device, args.repeats):12.2f}")
                kept = f"{select()[0].tokens.shape[0]:>8d}/2880"
            except ValueError as exc:
                row.append(f"{'error':>12s}")
                print(f"  ({label}: {exc})")
        print(f"{label:34s}" + "".join(row) + kept)

    inside = {b: llm_inputs(b, device, dtype) for b in args.batches}
    for name in ("fastv", "dart"):
        method = METHODS[name]
        params = method_params(method, shape)
        row = [
            f"{median_ms(partial(method.keep, inside[b], params), device, args.repeats):12.2f}"
            for b in args.batches
        ]
        print(f"{name + ' 20% (scoring at layer K)':34s}" + "".join(row) + f"{576:>8d}/2880")
    compare_with_loops(batches[args.batches[0]], device, args.repeats)


def llm_inputs(images: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """What an LLM-stage method sees at layer K for `images` 672x672 prompts on Vicuna-7B: 18 text +
    2928 visual tokens (newlines included), width 4096, 32 heads of 128."""
    from hired.llm import LayerInputs

    g = torch.Generator().manual_seed(seed)
    length, visual = 2946, torch.zeros(images, 2946, dtype=torch.bool)
    visual[:, 5:2933] = True

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    norm = torch.nn.RMSNorm(4096).to(device, dtype)
    return LayerInputs(
        hidden=rand(images, length, 4096),
        keys=rand(images, 32, length, 128),
        last_query=rand(images, 32, 128),
        visual=visual.to(device),
        valid=torch.ones(images, length, dtype=torch.bool, device=device),
        counts=torch.full((images,), 576, device=device),
        norm=torch.no_grad()(norm),
    )


def compare_with_loops(batch: VisionBatch, device: torch.device, repeats: int) -> None:
    """Each vectorised step against its per-token loop oracle, batch 1 (5 partitions), as a ratio."""
    try:
        from tests.support.oracles import divprune_greedy, merge_loop, visionzip_partition
    except ImportError:
        print("\n(tests/support/oracles.py not importable: run from a source checkout to compare the loop)")
        return
    print("\nvectorised against the per-token loop, batch 1 (ms; ratio = loop / vectorised):")
    features, keys, attention, kept_idx, count, valid = merge_inputs(batch, 0.2)

    def prumerge_loop():
        for s in range(features.shape[0]):
            merge_loop(
                features[s].float(), keys[s], attention[s].float(), kept_idx[s, : count[s]].tolist(), valid[s]
            )

    shape = VisionShape(depth=DEPTH, feature_layer=FEATURE_LAYER)
    scores, mean_keys = batch.cls_attention(FEATURE_LAYER).sum(1), batch.head_mean_keys(FEATURE_LAYER)
    budget = round(0.2 * 576)

    def visionzip_loop():
        for s in range(features.shape[0]):
            visionzip_partition(batch.features[s].float(), scores[s], mean_keys[s], valid[s], budget, 10 / 64)

    projected = batch.project(batch.features.flatten(0, 1))  # the LLM inputs DivPrune compares
    chosen = torch.tensor([round(0.2 * 2880)], device=projected.device)
    everything = torch.ones(1, len(projected), dtype=torch.bool, device=projected.device)

    rows = [
        ("prumerge merge", lambda: merge(features, keys, attention, kept_idx, count, valid), prumerge_loop),
        ("visionzip", partial(select_of("visionzip", shape), batch), visionzip_loop),
        (
            "divprune greedy",
            lambda: farthest_point(projected[None], everything, chosen),
            lambda: divprune_greedy(projected, int(chosen)),
        ),
    ]
    for label, vectorised, loop in rows:
        fast = median_ms(vectorised, device, repeats)
        slow = median_ms(loop, device, 1, warmup=0)
        print(f"  {label:16s} vectorised {fast:9.2f}   loop {slow:10.1f}   ratio {slow / fast:6.0f}x")


def select_of(name: str, shape: VisionShape):
    method = METHODS[name]
    params = method_params(method, shape)
    return lambda batch: method.select(batch, 0.2, "paper", params)


if __name__ == "__main__":
    main()
