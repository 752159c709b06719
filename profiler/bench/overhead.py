"""What does a user's run pay for being measured? The suite's request against a bare generate().

    python -m profiler.bench.overhead [--model auto] [--batches 1 4] [--new-tokens 64] [--rounds 20]

Suite: `run_request` as `run` times it (preprocessing, the vision tower and projector outside
generate, the timeline, the step clock at every generation step, the first token synchronised) and,
on a GPU, with the NVML sampler process running. Bare: what a user's own script does, the image
processor then one generate() on input_ids and pixels, with only a host-clock hook at each step
(optimum-benchmark's per-token tracker, 0.2 us a call). Both decode exactly T tokens, EOS ignored.
Decode tokens/s = B x (T - 1) / (last step - first step), the whole request is wall time. Each round
runs both paths back to back (which one first alternates, each after an untimed request of its
own); the median of the per-round ratios is reported with the middle half. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from hired.glue import expand_prompts, pad_id
from profiler.instruments.timing import StepClock, Timeline
from profiler.measure.request import prepare_request, run_request
from profiler.measure.stats import percentile
from workloads.images import synthetic_images
from workloads.models import load_model
from workloads.plan import Workload
from workloads.point import Point
from workloads.presets import DEFAULT_PROMPT


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def suite_seconds(lm, workload: Workload, point: Point, sampler=None) -> tuple[float, float]:
    """(wall seconds, first to last step) of one request as `run` measures it, the sampler running."""
    if sampler:
        sampler.begin()
    _sync(lm.device)
    start = time.perf_counter()
    steps = run_request(lm, workload, point).steps
    seconds = time.perf_counter() - start
    if sampler:
        sampler.end()
    return seconds, steps[-1] - steps[0]


class HostSteps(LogitsProcessor):
    """The host clock at every generation step, and nothing else."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


@dataclass
class BareRequest:
    """A user's own request: the prompt's ids with the image placeholders the model expects."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @classmethod
    def of(cls, lm, workload: Workload) -> BareRequest:
        point = Point("none", None, batch_size=workload.batch_size)
        counts = prepare_request(lm, workload.images, [workload.prompt] * workload.batch_size, point).kept
        ids, mask = expand_prompts(
            [lm.prompt_ids(workload.prompt)] * workload.batch_size,
            counts,
            lm.model.config.image_token_id,
            pad_id(lm.model),
        )
        return cls(ids.to(lm.device), mask.to(lm.device))


@torch.inference_mode()
def bare_seconds(lm, workload: Workload, request: BareRequest) -> tuple[float, float]:
    """(wall seconds, first to last step) of the image processor and one plain generate() on the same
    pictures and prompt."""
    steps = HostSteps()
    _sync(lm.device)
    start = time.perf_counter()
    pixels = lm.image_processor(workload.images, return_tensors="pt")
    extra = {"image_sizes": pixels["image_sizes"].to(lm.device)} if "image_sizes" in pixels else {}
    lm.model.generate(
        input_ids=request.input_ids,
        attention_mask=request.attention_mask,
        pixel_values=pixels["pixel_values"].to(lm.device, lm.dtype),
        **extra,
        max_new_tokens=workload.new_tokens,
        eos_token_id=None,
        do_sample=False,
        pad_token_id=pad_id(lm.model),
        logits_processor=LogitsProcessorList([steps]),
    ).cpu()
    return time.perf_counter() - start, steps.times[-1] - steps.times[0]


def hook_cost_us(device: torch.device, calls: int = 20_000) -> float:
    """What the step clock adds to one generation step, timed over many calls (steps after the first)."""
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
    """The suite's request against a bare generate(), over paired rounds; ratios are suite / bare rates."""

    bare_tokens_per_s: float  # decode tokens/s
    profiled_tokens_per_s: float
    ratio: float  # decode tokens/s, suite / bare, median of the per-round ratios
    ratio_spread: tuple[float, float]  # the middle half of the per-round ratios
    request_ratio: float  # whole request (T tokens): bare seconds / suite seconds, median of rounds
    request_spread: tuple[float, float]
    hook_us: float  # the step clock alone, microseconds per call
    rounds: int


def middle(values: list[float]) -> tuple[float, tuple[float, float]]:
    """The median and the middle half (25th to 75th percentile, as the records' stats) of some ratios."""
    return statistics.median(values), (percentile(values, 25), percentile(values, 75))


def measure_overhead(lm, batch: int, new_tokens: int, rounds: int, sampler=None, warmup: int = 2) -> Overhead:
    """The suite's request (with the NVML sampler if given) against a bare generate() on the same
    600x600 pictures and default question: `rounds` paired rounds after `warmup` untimed ones."""
    if new_tokens < 2:
        raise ValueError("decoding needs at least 2 new tokens")
    pictures = synthetic_images([(600, 600)], batch)
    long, short = (Workload(pictures, DEFAULT_PROMPT, tokens) for tokens in (new_tokens, 1))
    point = Point("none", None, batch_size=batch, new_tokens=new_tokens)
    request = BareRequest.of(lm, long)
    steps = batch * (new_tokens - 1)

    def timed(suite: bool) -> tuple[float, float]:
        """(seconds of the T-token request, its decode tokens/s)."""
        # an untimed request first settles the allocator after the other path's (else the first
        # request after a switch runs a few % slower on a CPU, whichever path it is)
        if suite:
            suite_seconds(lm, short, point, sampler)
            seconds, decode_s = suite_seconds(lm, long, point, sampler)
        else:
            bare_seconds(lm, short, request)
            seconds, decode_s = bare_seconds(lm, long, request)
        return seconds, steps / decode_s

    for _ in range(warmup):
        timed(False), timed(True)
    paired = []
    for i in range(rounds):  # the first path alternates: no order effect (caches, clocks) in the ratio
        found = {suite: timed(suite) for suite in ((False, True) if i % 2 == 0 else (True, False))}
        paired.append((found[False], found[True]))
    ratio, spread = middle([suite[1] / bare[1] for bare, suite in paired])
    request_ratio, request_spread = middle([bare[0] / suite[0] for bare, suite in paired])
    return Overhead(
        statistics.median(bare[1] for bare, _ in paired),
        statistics.median(suite[1] for _, suite in paired),
        ratio,
        spread,
        request_ratio,
        request_spread,
        hook_cost_us(lm.device),
        len(paired),
    )


def at_least(minimum: int):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"a whole number >= {minimum}, not {text!r}")
        return int(text)

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=at_least(1), nargs="+", default=[1, 4])
    parser.add_argument("--new-tokens", type=at_least(2), default=64)
    parser.add_argument("--rounds", type=at_least(1), default=20)
    args = parser.parse_args()
    lm = load_model(args.model, "auto", "auto", args.device)
    sampler = None
    if lm.device.type == "cuda":
        from profiler.instruments.nvml import Nvml, NvmlUnavailable, SamplerProcess

        nvml, _ = Nvml.open(lm.device)
        try:
            sampler = SamplerProcess(nvml.uuid) if nvml else None
        except NvmlUnavailable:
            sampler = None
    print(
        f"{lm.name} ({lm.weights} weights) on {lm.device}, {args.new_tokens} new tokens, "
        f"{args.rounds} paired rounds, NVML sampler {'on' if sampler else 'off (no GPU)'}; "
        "ratios are the suite's rate / a bare generate()'s (1 = no cost), median (middle half)"
    )
    try:
        for batch in args.batches:
            found = measure_overhead(lm, batch, args.new_tokens, args.rounds, sampler)
            (low, high), (rlow, rhigh) = found.ratio_spread, found.request_spread
            step_us = 1e6 * batch / found.profiled_tokens_per_s
            print(
                f"batch {batch}: decode tokens/s bare {found.bare_tokens_per_s:.1f}, suite "
                f"{found.profiled_tokens_per_s:.1f}, ratio {found.ratio:.4f} ({low:.3f}-{high:.3f}); "
                f"whole request ratio {found.request_ratio:.4f} ({rlow:.3f}-{rhigh:.3f}); "
                f"step clock {found.hook_us:.2f} us = {found.hook_us / step_us:.3%} of a decode step"
            )
    finally:
        if sampler:
            sampler.close()


if __name__ == "__main__":
    main()
