"""Instrument checks: does each instrument measure what it says, on this machine?

    python -m profiler.bench.checks [--model auto] [--dtype auto] --out checks.jsonl

Each check compares an instrument with an independent reference on the same work and says pass or
fail against a stated tolerance: TTFT from CUDA events against the synchronised wall clock, NVML's
process peak against torch's reserved peak plus the CUDA context measured on this card, the NVML
sampler's rate, energy per token from the counter beside the integrated power draw, the next point
after a forced out-of-memory against the same point measured before it, and the profiler's cost on
decode tokens/s. Checks that need a GPU are "n/a" with the reason on a machine without one. One
record per check ("kind": "instrument_check") is appended to --out as soon as it is known.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from profiler.results.store import append_record, error_message, make_check, new_run_id

# name -> (what is compared, unit, tolerance: the largest relative difference that passes; None: the
# reference is a floor the measurement must reach)
CHECKS: dict[str, tuple[str, str, float | None]] = {
    "ttft_clock": ("TTFT: CUDA events against the synchronised wall clock", "s", 0.02),
    "nvml_process_peak": (
        "peak memory: NVML's process figure against torch max reserved + the CUDA context on this card",
        "GiB",
        0.05,
    ),
    "sampler_rate": ("NVML sampler rate during requests, against a floor of 200 Hz", "Hz", None),
    "energy_per_token": (
        "energy per token: NVML's energy counter against the integrated power draw",
        "J",
        0.10,
    ),
    "oom_recovery_peak": (
        "after a forced out-of-memory: the next point's torch peak against the same point before it",
        "GiB",
        0.01,
    ),
    "oom_recovery_ttft": (
        "after a forced out-of-memory: the next point's TTFT against the same point before it",
        "s",
        0.03,
    ),
    "profiler_overhead": (
        "decode tokens/s, the suite's request (step clock, NVML sampler) / bare generate(): median of pairs",
        "×",
        0.01,
    ),
    "profiler_overhead_no_sampler": (
        "decode tokens/s, the suite's request without the NVML sampler / bare generate(): median of pairs",
        "×",
        0.01,
    ),
}
NO_GPU = "n/a (no GPU): needs CUDA events, NVML and a card that can run out of memory"
SAMPLER_FLOOR_HZ = 200.0


@dataclass
class Check:
    check: str
    measured: float | None = None
    reference: float | None = None
    verdict: str = "n/a"  # "pass" | "fail" | "n/a" | "error"
    note: str = ""

    @property
    def difference(self) -> float | None:
        """(measured - reference) / reference."""
        if self.measured is None or not self.reference:
            return None
        return (self.measured - self.reference) / self.reference


def judged(name: str, measured: float | None, reference: float | None, note: str = "") -> Check:
    """A check with its verdict: within the tolerance, or at least the reference where that is a floor;
    "error" where a figure is missing."""
    check = Check(name, measured, reference, note=note)
    if measured is None or not reference:
        check.verdict = "error"
        check.note = f"no {'measurement' if measured is None else 'reference'}; {note}"
        return check
    tolerance = CHECKS[name][2]
    within = measured >= reference if tolerance is None else abs(check.difference) <= tolerance
    check.verdict = "pass" if within else "fail"
    return check


def check_record(check: Check, run_id: str, hardware: dict, config: dict) -> dict:
    what, unit, tolerance = CHECKS[check.check]
    return make_check(run_id, what, unit, tolerance, check.difference, asdict(check), config, hardware)


def idle_device_bytes(nvml) -> int | None:
    """NVML's used memory of the card before this process touches CUDA (one visible GPU only)."""
    try:
        if nvml.nvmlDeviceGetCount() != 1:
            return None
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).used)
    except Exception:
        return None


def process_bytes(nvml, handle, idle: int | None) -> tuple[int | None, str]:
    """(this process's GPU bytes, how): NVML's per-PID figure (read as the sampler reads it), else the
    card's use less its idle use."""
    import os

    from profiler.instruments.nvml_sampler import processes

    mine, _, _ = processes(nvml, handle, os.getpid())
    if mine is not None:
        return mine, "NVML per-process"
    if idle is None:
        return None, "no per-process figure and no idle reading"
    used = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    return used - idle, "card use less its idle use (PID not listed by NVML)"


def run_checks(args: argparse.Namespace, emit: Callable[[Check, str, dict], None]) -> None:
    """Every check on one loaded model, each emitted (with the run id and hardware) as soon as it is
    known; a check that raises is emitted as "error" and the rest go on."""
    from profiler.bench.overhead import measure_overhead
    from profiler.instruments.hardware import fingerprint
    from profiler.instruments.nvml import Nvml, NvmlUnavailable, SamplerProcess
    from profiler.instruments.timing import Timeline
    from profiler.instruments.torch_memory import set_memory_fraction
    from profiler.measure.request import run_request
    from profiler.measure.runner import Runner
    from profiler.measure.settings import MeasureSettings
    from profiler.results.schema import GIB, gib
    from profiler.results.views import median
    from workloads.device import resolve_device
    from workloads.models import load_model
    from workloads.plan import build_workload
    from workloads.point import Point

    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    context_gib, context_how, idle, nvml = None, "", None, None
    if gpu:  # the CUDA context, measured before anything else of ours is on the card
        import pynvml

        pynvml.nvmlInit()
        idle = idle_device_bytes(pynvml)
        torch.zeros(1, device=dev)
        torch.cuda.synchronize(dev)
        nvml, _ = Nvml.open(dev)
        used, context_how = process_bytes(pynvml, nvml.handle, idle)
        context_gib = None if used is None else gib(used - torch.cuda.memory_reserved(dev))
    lm = load_model(args.model, args.weights, args.dtype, args.device)
    sampler = reason = None
    if gpu:
        try:
            sampler = SamplerProcess(nvml.uuid)
        except NvmlUnavailable as exc:
            reason = str(exc)
    runner = Runner(
        lm,
        new_run_id(),
        fingerprint(dev, nvml),
        sampler=sampler,
        nvml=nvml,
        nvml_reason=reason or "no CUDA device in use",
        baseline_device_gib=gib(idle),
    )
    policy = MeasureSettings(agreement=False)  # the checks read instruments, not outputs
    common = {"model": args.model, "weights": args.weights, "dtype": args.dtype, "device": args.device}
    full = Point("none", 1.0, batch_size=args.batch, warmup=1, repeats=args.repeats, **common)
    target = Point("hired", 0.2, batch_size=args.batch, warmup=1, repeats=args.repeats, **common)

    def attempt(names: tuple[str, ...], body: Callable[[], list[Check]], needs_gpu: bool = True) -> None:
        if needs_gpu and not gpu:
            checks = [Check(name, note=NO_GPU) for name in names]
        else:
            try:
                checks = body()
            except Exception as exc:
                checks = [Check(name, verdict="error", note=error_message(exc)) for name in names]
        for check in checks:
            emit(check, runner.run_id, runner.hardware)

    # the point the OOM check compares, measured first: before anything could have failed
    before = runner.measure_point(target, policy) if gpu else None

    def ttft_clock() -> list[Check]:
        workload = build_workload(full)
        run_request(lm, workload, full)  # warm-up
        walls, events = [], []
        for _ in range(args.repeats):
            times = run_request(lm, workload, full, timeline=Timeline(dev, first_token_event=True)).times
            walls.append(times["first_token"])
            events.append(times["first_token_gpu"])
        return [
            judged(
                "ttft_clock",
                statistics.median(events),
                statistics.median(walls),
                f"median of {args.repeats} requests, none at batch {args.batch}",
            )
        ]

    def memory_and_rate() -> list[Check]:
        if context_gib is None:
            raise RuntimeError(f"the CUDA context could not be measured: {context_how}")
        record = runner.measure_point(full, policy)
        if record["status"] != "ok":
            raise RuntimeError(f"the measured point ended {record['status']}: {record['error']}")
        peaks = record["metrics"]["peak_memory_gib"]
        if peaks["nvml_process"] is None:
            raise RuntimeError(
                record["metrics"]["unavailable"].get("peak_memory_gib.nvml_process", "no figure")
            )
        reference = peaks["torch_reserved"] + context_gib
        note = (
            f"CUDA context {context_gib:.3f} GiB ({context_how}); the record's nvml_process is "
            f"{peaks['nvml_process']:.3f} GiB"
            + (f" ({n})" if (n := record["metrics"]["estimated"].get("peak_memory_gib.nvml_process")) else "")
        )
        rate = median(record, "nvml_sample_hz")
        return [
            judged("nvml_process_peak", peaks["nvml_process"], reference, note),
            judged(
                "sampler_rate",
                rate,
                SAMPLER_FLOOR_HZ,
                f"median over {record['metrics']['requests']} requests",
            ),
        ]

    def energy() -> list[Check]:
        workload = build_workload(full)
        with SamplerProcess(nvml.uuid, power_always=True) as both:
            requests, start = 0, time.perf_counter()
            both.begin()
            while time.perf_counter() - start < args.energy_seconds:
                run_request(lm, workload, full)
                requests += 1
            reading = both.end()
        if reading.energy_mj is None or reading.power_energy_mj is None:
            raise RuntimeError("this GPU lacks the energy counter or the power reading: nothing to compare")
        tokens = requests * args.batch * full.new_tokens
        return [
            judged(
                "energy_per_token",
                reading.energy_mj / 1e3 / tokens,
                reading.power_energy_mj / 1e3 / tokens,
                f"{requests} requests back to back ({reading.seconds:.1f} s, {reading.samples} samples); "
                "measured = counter, reference = power integral",
            )
        ]

    def oom_recovery() -> list[Check]:
        if before["status"] != "ok":
            raise RuntimeError(
                f"the point before the out-of-memory ended {before['status']}: {before['error']}"
            )
        total = torch.cuda.get_device_properties(dev).total_memory
        room = torch.cuda.memory_allocated(dev) + GIB  # the model and 1 GiB: a large batch cannot fit
        set_memory_fraction(dev, room / total)
        try:
            forced = runner.measure_point(
                replace(full, batch_size=args.oom_batch, warmup=0, repeats=1), policy
            )
        finally:
            set_memory_fraction(dev, 1.0)
        if forced["status"] != "oom":
            raise RuntimeError(
                f"batch {args.oom_batch} under a 1 GiB margin ended {forced['status']}, not oom"
            )
        after = runner.measure_point(target, policy)
        cleanup = (forced["metrics"] or {}).get("cleanup") or {}
        note = (
            f"{target.method} {target.label} at batch {target.batch_size}, before and after batch "
            f"{args.oom_batch} of none ran out of memory; clean-up left "
            f"{cleanup.get('allocated_after_gib', 0):.3f} GiB allocated (clean: {cleanup.get('clean')})"
        )
        peak = [r["metrics"]["peak_memory_gib"]["torch_allocated"] for r in (after, before)]
        return [
            judged("oom_recovery_peak", *peak, note),
            judged("oom_recovery_ttft", median(after, "ttft_s"), median(before, "ttft_s"), note),
        ]

    def overhead(name: str, with_sampler) -> Callable[[], list[Check]]:
        def body() -> list[Check]:
            found = measure_overhead(
                lm, args.overhead_batch, args.overhead_tokens, args.overhead_rounds, with_sampler
            )
            (low, high), (rlow, rhigh) = found.ratio_spread, found.request_spread
            on = "on" if with_sampler else "off"
            note = (
                f"decode tokens/s of the suite's request {found.profiled_tokens_per_s:.1f}, bare generate() "
                f"{found.bare_tokens_per_s:.1f}; {found.rounds} paired rounds (middle half "
                f"{low:.3f}-{high:.3f}); whole request {found.request_ratio:.3f} ({rlow:.3f}-{rhigh:.3f}); "
                f"batch {args.overhead_batch}, {args.overhead_tokens} new tokens, "
                f"NVML sampler {on}; the step clock alone "
                f"{found.hook_us:.2f} us per step"
            )
            return [judged(name, found.ratio, 1.0, note)]

        return body

    try:
        attempt(("ttft_clock",), ttft_clock)
        attempt(("nvml_process_peak", "sampler_rate"), memory_and_rate)
        attempt(("energy_per_token",), energy)
        attempt(("oom_recovery_peak", "oom_recovery_ttft"), oom_recovery)
        attempt(("profiler_overhead",), overhead("profiler_overhead", sampler), needs_gpu=False)
        # the same without the sampler process: where the two differ, the sampler is what changes the rate
        attempt(("profiler_overhead_no_sampler",), overhead("profiler_overhead_no_sampler", None))
    finally:
        runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file the checks are appended to")
    parser.add_argument("--batch", type=int, default=1, help="batch of the timed requests")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--energy-seconds", type=float, default=6.0, help="the energy window")
    parser.add_argument("--oom-batch", type=int, default=16, help="the batch forced out of memory")
    parser.add_argument("--overhead-batch", type=int, default=4)
    parser.add_argument("--overhead-tokens", type=int, default=32)
    parser.add_argument("--overhead-rounds", type=int, default=6)
    args = parser.parse_args(argv)
    config = {"model": args.model, "weights": args.weights, "dtype": args.dtype, "device": args.device}
    results: list[Check] = []

    def emit(check: Check, run_id: str, hardware: dict) -> None:
        results.append(check)
        append_record(args.out, check_record(check, run_id, hardware, config))
        _, unit, tolerance = CHECKS[check.check]
        print(f"{check.check:20s} {check.verdict:6s} {describe(check, unit, tolerance)}", flush=True)

    run_checks(args, emit)
    counts = Counter(c.verdict for c in results)
    print(f"checks: {', '.join(f'{n} {verdict}' for verdict, n in counts.items())} -> {args.out}", flush=True)
    return 1 if counts["fail"] or counts["error"] else 0


def describe(check: Check, unit: str, tolerance: float | None) -> str:
    if check.measured is None:
        return check.note
    diff = check.difference
    limit = f">= {check.reference:g}" if tolerance is None else f"within {tolerance:.0%}"
    return (
        f"measured {check.measured:.4g} {unit}, reference {check.reference:.4g} {unit}, "
        f"difference {diff:+.2%} ({limit}) · {check.note}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
