"""Time each method's selection step alone at LLaVA-Next-7B shapes, and PruMerge's vectorised merge
against the per-token loop oracle (tests/oracles.py). Prints figures; asserts nothing.

    python -m profiler.bench_select [--device cuda] [--repeats 20]

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
from hired.prumerge import merge, plan
from workloads.presets import PRESETS

WIDTH, HEADS, DEPTH, FEATURE_LAYER = 1024, 16, 24, 22
POINTS = [  # (label, method, budget, fidelity)
    ("hired 20%", "hired", 0.2, "paper"),
    ("hired 20% (reference)", "hired", 0.2, "reference"),
    ("prumerge 20%", "prumerge", 0.2, "paper"),
    ("prumerge+ 20%", "prumerge+", 0.2, "paper"),
    ("prumerge adaptive (reference)", "prumerge", None, "reference"),
    ("prumerge+ adaptive (reference)", "prumerge+", None, "reference"),
    ("random 20%", "random", 0.2, "paper"),
    ("pool 20%", "pool", 0.2, "paper"),
]


def synthetic_batch(images: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> VisionBatch:
    """Vision outputs of the 7B tower for `images` 672x672 pictures, with heavy-tailed CLS attention."""
    g = torch.Generator().manual_seed(seed)
    config = PRESETS["llava-next-7b"].config()
    layouts = [image_layout((672, 672), config) for _ in range(images)]
    s = 5 * images

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    layers = (0, FEATURE_LAYER, DEPTH - 1)
    return VisionBatch(
        layouts,
        rand(s, 576, WIDTH),
        HEADS,
        {layer: rand(s, WIDTH, scale=3.0) for layer in layers},
        {layer: rand(s, 577, WIDTH) for layer in layers},
    )


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def merge_inputs(batch: VisionBatch, budget: float):
    """What PruMerge's merge receives at this budget (paper mode, no padding at 672x672)."""
    attention = batch.cls_attention(DEPTH - 1, heads=1)[:, 0]
    keys = F.normalize(batch.keys[DEPTH - 1][:, 1:].float(), dim=-1)
    s = attention.shape[0]
    valid = torch.ones(s, 576, dtype=torch.bool, device=attention.device)
    per_partition = round(budget * 576)
    kept_idx, count, _ = plan(attention, valid, [per_partition] * s, plus=False, reference=False)
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
    shape = VisionShape(depth=DEPTH, feature_layer=FEATURE_LAYER)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"selection step alone, 7B shapes (672x672 -> 5 x 577 tokens, width {WIDTH}), {dtype}, {name}")
    print(f"median of {args.repeats} after 3 warm-up, in ms\n")
    print(f"{'method':34s}" + "".join(f"{f'batch {b}':>12s}" for b in args.batches) + f"{'kept/image':>13s}")
    batches = {b: synthetic_batch(b, device, dtype) for b in args.batches}
    for label, method_name, budget, fidelity in POINTS:
        method = METHODS[method_name]
        params = method_params(method, shape)
        row, kept = [], ""
        for b in args.batches:
            try:
                select = partial(method.select, batches[b], budget, fidelity, params)
                row.append(f"{median_ms(select, device, args.repeats):12.2f}")
                kept = f"{select()[0].tokens.shape[0]:>8d}/2880"
            except ValueError as exc:
                row.append(f"{'error':>12s}")
                print(f"  ({label}: {exc})")
        print(f"{label:34s}" + "".join(row) + kept)

    try:
        from tests.oracles import merge_loop
    except ImportError:
        print("\n(tests/oracles.py not importable: run from a source checkout for the loop comparison)")
        return
    print("\nPruMerge merge at 20% (115 kept of 576 per partition), batch 1 (5 partitions):")
    inputs = merge_inputs(batches[args.batches[0]], 0.2)
    features, keys, attention, kept_idx, count, valid = inputs
    vectorised = median_ms(lambda: merge(*inputs), device, args.repeats)

    def loop():
        for s in range(features.shape[0]):
            merge_loop(
                features[s].float(), keys[s], attention[s].float(), kept_idx[s, : count[s]].tolist(), valid[s]
            )

    looped = median_ms(loop, device, max(1, args.repeats // 5), warmup=1)
    ratio = looped / vectorised
    print(f"  vectorised {vectorised:.2f} ms   per-token loop {looped:.1f} ms   ratio {ratio:.0f}x")


if __name__ == "__main__":
    main()
