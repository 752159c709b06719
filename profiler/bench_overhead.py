"""Does measuring change what is measured? Decode tokens/s with the profiler against a bare loop.

    python -m profiler.bench_overhead [--model auto] [--batch 4] [--new-tokens 64] [--rounds 20]

Both paths run the same inputs_embeds through generate(). Profiled: what hired-bench adds during
decoding, i.e. the request timeline, the hook at every generation step (host clock or CUDA event;
the first token synchronises) and, on a GPU, the NVML sampler process. Bare: nothing. Decode time
= t(T tokens) - t(1 token) in both, so only the per-step cost differs; each round runs both paths
back to back and the median of the per-round ratios is reported. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from hired.glue import picture_sizes, prepare_batch
from hired.methods import METHODS
from profiler.runner import generate_tokens
from profiler.timing import StepClock, Timeline
from workloads.images import synthetic_images
from workloads.models import load_model
from workloads.presets import DEFAULT_PROMPT


def generate_seconds(lm, batch, new_tokens: int, profiled: bool, sampler=None) -> float:
    """Wall time of one generate() call (synchronised at both ends), with or without the profiler."""
    processors = []
    if profiled:
        timeline = Timeline(lm.device)
        timeline.start()
        processors.append(StepClock(timeline))
        if sampler:
            sampler.begin()
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    start = time.perf_counter()
    generate_tokens(lm.model, batch, new_tokens, processors).cpu()
    seconds = time.perf_counter() - start
    if profiled:
        timeline.mark_host("end")
        timeline.times()
        if sampler:
            sampler.end()
    return seconds


def hook_cost_us(device: torch.device, calls: int = 20_000) -> float:
    """What the profiler adds to one generation step, timed over many calls (steps after the first)."""
    timeline = Timeline(device)
    timeline.start()
    clock = StepClock(timeline)
    ids, scores = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 8)
    clock(ids, scores)  # the first call synchronises once: not a per-step cost
    start = time.perf_counter()
    for _ in range(calls):
        clock(ids, scores)
    return (time.perf_counter() - start) / calls * 1e6


@dataclass
class Overhead:
    """Decode tokens/s bare and profiled, over paired rounds."""

    bare_tokens_per_s: float
    profiled_tokens_per_s: float
    ratio: float  # profiled / bare, median of the per-round ratios
    ratio_spread: tuple[float, float]  # the middle half of the per-round ratios
    hook_us: float  # the per-step hook alone, microseconds per call
    rounds: int


def request_inputs(lm, batch: int):
    """The full-token inputs of `batch` 600x600 pictures with the default question."""
    images = synthetic_images([(600, 600)], batch)
    pixels = lm.image_processor(images, return_tensors="pt")
    sizes = picture_sizes(pixels, images)
    ids = [lm.prompt_ids(DEFAULT_PROMPT)] * batch
    return prepare_batch(lm.model, pixels["pixel_values"].to(lm.device), sizes, ids, METHODS["none"], 1.0, {})


def measure_overhead(lm, batch: int, new_tokens: int, rounds: int, sampler=None, warmup: int = 2) -> Overhead:
    """Decode tokens/s with the profiler (timeline, step hook, NVML sampler if given) against a bare
    generate() on the same inputs, `rounds` paired rounds after `warmup` untimed pairs."""
    inputs = request_inputs(lm, batch)
    steps = batch * (new_tokens - 1)

    def decode_rate(profiled: bool) -> float | None:
        long = generate_seconds(lm, inputs, new_tokens, profiled, sampler)
        short = generate_seconds(lm, inputs, 1, profiled, sampler)
        # a one-token request that took longer than the long one: noise above the decode time, no rate
        return steps / (long - short) if long > short else None

    for _ in range(warmup):
        decode_rate(False), decode_rate(True)
    rates = []
    for i in range(3 * rounds):  # the first path alternates: no order effect (caches, clocks) in the ratio
        rate = {
            profiled: decode_rate(profiled) for profiled in ((False, True) if i % 2 == 0 else (True, False))
        }
        if None not in rate.values():
            rates.append((rate[False], rate[True]))
        if len(rates) == rounds:
            break
    if not rates:
        raise RuntimeError(f"decode time below the clock's noise in {3 * rounds} rounds: use more new tokens")
    ratios = sorted(p / b for b, p in rates)
    quarter = len(ratios) // 4
    return Overhead(
        statistics.median(b for b, _ in rates),
        statistics.median(p for _, p in rates),
        statistics.median(ratios),
        (ratios[quarter], ratios[-quarter - 1]),
        hook_cost_us(lm.device),
        len(rates),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    lm = load_model(args.model, "auto", "auto", args.device)
    sampler = None
    if lm.device.type == "cuda":
        from profiler.memory import Nvml, NvmlUnavailable, SamplerProcess

        nvml, _ = Nvml.open(lm.device)
        try:
            sampler = SamplerProcess(nvml.uuid) if nvml else None
        except NvmlUnavailable:
            sampler = None
    found = measure_overhead(lm, args.batch, args.new_tokens, args.rounds, sampler)
    if sampler:
        sampler.close()
    print(
        f"{lm.name} ({lm.weights} weights) on {lm.device}, batch {args.batch}, {args.new_tokens} new tokens, "
        f"{args.rounds} paired rounds, NVML sampler {'on' if sampler else 'off (no GPU)'}"
    )
    print(f"decode tokens/s: bare {found.bare_tokens_per_s:.1f}, profiled {found.profiled_tokens_per_s:.1f}")
    low, high = found.ratio_spread
    print(
        f"profiled / bare, median of rounds: {found.ratio:.4f} ({(found.ratio - 1) * 100:+.2f}%; "
        f"target within 1%), middle half of rounds {low:.3f}-{high:.3f}"
    )
    step_us = 1e6 * args.batch / found.profiled_tokens_per_s
    print(
        f"the per-step hook itself: {found.hook_us:.2f} us per call = "
        f"{found.hook_us / step_us:.4%} of a decode step"
    )


if __name__ == "__main__":
    main()
