"""The out-of-memory boundary measured: probe batch sizes on a loaded model (capacity.search chooses them)."""

from __future__ import annotations

from profiler.capacity.model import CUDA_CONTEXT_GIB, largest_batch, point_peak
from profiler.capacity.search import search_boundary
from profiler.measure.settings import MeasureSettings

NO_AGREEMENT = MeasureSettings(agreement=False)  # the largest batch is the question, not outputs


def find_boundaries(runner, points: list, max_batch: int, output, cap_gib, status) -> list[dict]:
    """Search each planned point's boundary on a loaded model (the point's batch size is what varies);
    every probe and result is recorded."""
    import torch

    from profiler.results.schema import GIB
    from profiler.results.store import append_record, make_record
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
            record = runner.measure_point(with_batch(point, batch), NO_AGREEMENT)
            record["config"]["boundary_search"] = True
            append_record(output, record)
            return {"ok": True, "oom": False}.get(record["status"])

        found = search_boundary(fits, max_batch)
        predicted = None
        if memory_gib is not None and point.image_sizes is not None:
            text = len(lm.prompt_ids(point.prompt)) - 1
            peak = point_peak(lm.model.config, dtype, text, point, runner.seed)
            predicted = None if peak is None else largest_batch(peak, memory_gib)
        config = runner.config(build_workload(with_batch(point, 1)), point, NO_AGREEMENT.for_point(point))
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
            kind="oom_boundary",
        )
        append_record(output, record)
        rows.append(row)
    return rows
