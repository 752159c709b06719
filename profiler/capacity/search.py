"""The largest batch that fits, found by galloping then binary search: used on a loaded model
(capacity.boundary) and on the memory model (capacity.model) alike."""

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
