"""The out-of-memory boundary: the largest batch that fits, found by galloping then binary search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Boundary:
    largest_fitting: int  # 0: not even batch 1 fits
    smallest_failing: int | None  # None: everything up to the limit fits
    probes: list[int] = field(default_factory=list)  # batch sizes tried, in order
    stopped_by: str | None = None  # a probe that failed for a reason other than memory


def search_boundary(fits: Callable[[int], bool | None], limit: int = 512) -> Boundary:
    """Largest batch b <= limit with fits(b), assuming fitting is monotone in b.

    Doubles from 1 until a batch fails (or the limit), then bisects between the last fit and the
    first failure: about 2 log2(boundary) probes. fits(b) returns True (fits), False (out of
    memory) or None (failed otherwise: the search stops there).
    """
    result = Boundary(0, None)

    def probe(batch: int) -> bool | None:
        result.probes.append(batch)
        outcome = fits(batch)
        if outcome is None:
            result.stopped_by = f"batch {batch} failed for a reason other than memory"
        return outcome

    batch = 1
    while True:
        outcome = probe(batch)
        if outcome is None:
            return result
        if not outcome:
            result.smallest_failing = batch
            break
        result.largest_fitting = batch
        if batch >= limit:
            return result
        batch = min(batch * 2, limit)
    while result.smallest_failing - result.largest_fitting > 1:
        middle = (result.largest_fitting + result.smallest_failing) // 2
        outcome = probe(middle)
        if outcome is None:
            return result
        if outcome:
            result.largest_fitting = middle
        else:
            result.smallest_failing = middle
    return result


def find_boundaries(runner, points: list, max_batch: int, output, cap_gib, status) -> list[dict]:
    """Search each planned point's boundary on a loaded model (the point's batch size is what varies);
    every probe and result is recorded."""
    import torch

    from profiler.memory import GIB
    from profiler.memory_model import CUDA_CONTEXT_GIB, largest_batch, point_peak
    from profiler.records import append_record, make_record
    from workloads.plan import build_workload, with_batch

    lm = runner.lm
    memory_gib = None
    if lm.device.type == "cuda":  # what PyTorch may use: the cap, or the card less its CUDA context
        memory_gib = (
            cap_gib or torch.cuda.get_device_properties(lm.device).total_memory / GIB - CUDA_CONTEXT_GIB
        )
    dtype = str(lm.dtype).removeprefix("torch.")
    rows = []
    for point in points:

        def fits(batch: int, point=point) -> bool | None:
            status(f"{point.method} @ {point.label}: batch {batch}")
            record = runner.measure_point(with_batch(point, batch))
            record["config"]["boundary_search"] = True
            append_record(output, record)
            return {"ok": True, "oom": False}.get(record["status"])

        found = search_boundary(fits, max_batch)
        predicted = None
        if memory_gib is not None and point.image_sizes is not None:
            text = len(lm.prompt_ids(point.prompt)) - 1
            peak = point_peak(lm.model.config, dtype, text, point, runner.seed)
            predicted = None if peak is None else largest_batch(peak, memory_gib)
        config = runner.config(build_workload(with_batch(point, 1)), point)
        config["batch_size"] = None
        row = {
            "method": point.method,
            "budget_label": point.label,
            "largest_fitting": found.largest_fitting,
            "smallest_failing": found.smallest_failing,
            "probes": found.probes,
            "stopped_by": found.stopped_by,
            "predicted_largest": predicted,
        }
        record = make_record(
            runner.run_id,
            "ok" if not found.stopped_by else "error",
            config,
            runner.hardware,
            {"oom_boundary": {k: v for k, v in row.items() if k not in ("method", "budget_label")}},
            error=found.stopped_by,
        )
        append_record(output, {"kind": "oom_boundary", **record})
        rows.append(row)
    return rows
