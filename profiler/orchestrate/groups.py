"""The one loop over model groups: a model is built once for the points that share it (a point's
`runner_group`), and a model that cannot be built fails each of its points, never the run. Local sweeps,
isolated points, Ray workers and `eval` all go through `ModelGroups`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workloads.point import Point


@dataclass
class Observer:
    """What a caller is told as the work goes on (progress bars, descriptions)."""

    loading: Callable[[Point], None] = lambda point: None  # before a model group is opened
    opened: Callable[[object], None] = lambda runner: None  # once it is
    point: Callable[[Point], None] = lambda point: None  # before each point
    request: Callable[[], None] = lambda: None  # after each warm-up or measured request


class ModelGroups:
    """The model group in use: opened for the first point of a group, closed when a point of another
    group comes (or at close()). open_group(first point) builds what the group's points run on."""

    def __init__(self, open_group: Callable[[Point], object], observer: Observer | None = None) -> None:
        self.open_group, self.observer = open_group, observer or Observer()
        self.group: tuple | None = None
        self.opened: object | None = None
        self.error: Exception | None = None

    def enter(self, point: Point) -> tuple[object | None, Exception | None]:
        """(what the point runs on, None), or (None, why its group could not be opened)."""
        if point.runner_group != self.group:
            self.close()
            self.group = point.runner_group
            self.observer.loading(point)
            try:
                self.opened = self.open_group(point)
            except Exception as exc:  # the model did not load (over the cap, not found): every point says so
                self.error = exc
            else:
                self.observer.opened(self.opened)
        self.observer.point(point)
        return self.opened, self.error

    def close(self) -> None:
        if self.opened is not None and hasattr(self.opened, "close"):
            self.opened.close()
        self.group, self.opened, self.error = None, None, None
