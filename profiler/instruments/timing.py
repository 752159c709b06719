"""Time points of one request: host clock on CPU, CUDA events on a GPU, on one axis from t0.

On a GPU every boundary is an event recorded in the stream, so marking never waits for the
GPU; only the first token synchronises (TTFT is defined as the token on the host) and the end
(the output is copied to the host). Events are placed on the host axis through an anchor event
recorded at t0, when the GPU is idle.
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor


class Timeline:
    """Named time points and per-step times of one request, in seconds from t0."""

    def __init__(self, device: torch.device, first_token_event: bool = False):
        self.cuda = device.type == "cuda"
        self.first_token_event = first_token_event and self.cuda  # for the TTFT clock check only
        self.device = device
        self._host: dict[str, int] = {}
        self._events: dict[str, torch.cuda.Event] = {}
        self._steps: list[object] = []  # host ns (int) or CUDA event per generation step
        self._t0 = 0
        self._anchor = None

    def start(self) -> None:
        if self.cuda:
            self._anchor = self._event()
        self._t0 = time.perf_counter_ns()

    def _event(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def mark(self, name: str) -> None:
        """The end of a phase, without waiting for the GPU."""
        if self.cuda:
            self._events[name] = self._event()
        else:
            self._host[name] = time.perf_counter_ns()

    def mark_host(self, name: str) -> None:
        """A point the host has reached (after whatever synchronisation the caller did)."""
        self._host[name] = time.perf_counter_ns()

    def step(self) -> None:
        """A generation step's logits are computed; the first step is the first token on the host."""
        if not self._steps:
            if self.first_token_event:  # the same instant on the GPU's clock (profiler.bench.checks)
                self._events["first_token_gpu"] = self._event()
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.mark_host("first_token")
            self._steps.append(self._host["first_token"])
        elif self.cuda:
            self._steps.append(self._event())
        else:
            self._steps.append(time.perf_counter_ns())

    def _seconds(self, point) -> float:
        if isinstance(point, int):
            return (point - self._t0) / 1e9
        return self._anchor.elapsed_time(point) / 1e3

    def times(self) -> tuple[dict[str, float], list[float]]:
        """(named points, step times) in seconds from t0; synchronises once on a GPU."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        named = {name: self._seconds(ev) for name, ev in self._events.items()}
        named.update({name: self._seconds(ns) for name, ns in self._host.items()})
        return named, [self._seconds(p) for p in self._steps]


class StepClock(LogitsProcessor):
    """Called by generate() at every step with that step's logits; marks the step and changes nothing."""

    def __init__(self, timeline: Timeline):
        self.timeline = timeline

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.timeline.step()
        return scores
