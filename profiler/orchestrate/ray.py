"""Sweeps on a Ray cluster (the optional extra `[ray]`).

One actor per GPU (`num_gpus=1`; on a cluster without GPUs, one per N CPUs), each building a model
once and measuring the points handed to it. The driver hands out one point at a time: an actor
keeps to its model's points and moves to another model only when its own has none left, so it
never builds a model twice; the driver is the only writer of the results file (the same durable
append as local sweeps). A worker process that dies mid-point leaves an `error` record naming the
cause, and a fresh actor takes its place. With `accelerators`, each point asks for its GPU type.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from profiler.measure.settings import MeasureSettings
from profiler.orchestrate.groups import ModelGroups
from profiler.orchestrate.local import failed_load, measure_point, open_group_runner, planned_config
from profiler.results.store import append_record, error_message, first_line, make_record
from workloads.errors import InputError
from workloads.point import Point

OBJECT_STORE_BYTES = 256 * 2**20  # a local cluster: records are all that travel


class PointWorker:
    """A Ray actor's state: the runner of the model group it is on."""

    def __init__(self, run_id: str, agreement: bool, threads: int | None) -> None:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if threads:
            import torch

            torch.set_num_threads(threads)  # the CPUs Ray gave this actor, not every core of the node
        self.run_id, self.policy = run_id, MeasureSettings(agreement=agreement)
        self.groups = ModelGroups(lambda first: open_group_runner(first, run_id))

    def pid(self) -> int:
        return os.getpid()

    def measure(self, point: Point, sweep: str | None) -> dict:
        runner, error = self.groups.enter(point)
        if error is not None:
            return failed_load(point, sweep, self.run_id, error)
        return measure_point(runner, point, sweep, self.policy)


@dataclass(frozen=True)
class Node:
    cpus: float
    gpus: int
    types: tuple[str, ...] = ()  # the accelerator types it advertises


@dataclass
class Cluster:
    """What a sweep can use: its alive nodes, GPUs per accelerator type (None: no type advertised), CPUs."""

    nodes: list[Node] = field(default_factory=list)

    @property
    def gpus(self) -> Counter:
        found = Counter()
        for node in self.nodes:
            for kind in node.types or (None,):
                found[kind] += node.gpus
        return +found  # types with GPUs only

    @property
    def cpus(self) -> float:
        return sum(node.cpus for node in self.nodes)

    @property
    def types(self) -> list[str]:
        return sorted(t for t in self.gpus if t is not None)


def connect(address: str) -> bool:
    """Join (or, for "local", start) a Ray cluster; True when this process started it. A Ray session
    already open in this process is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address == "local":  # a new cluster, even where one runs or RAY_ADDRESS is set
            ray.init(address="local", object_store_memory=OBJECT_STORE_BYTES, **quiet)
            return True
        check_reachable(address)  # ray.init waits minutes on an address where nothing answers
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:  # nothing there, a bad address, a version
        raise InputError(
            f"no Ray cluster at {address!r} ({first_line(exc) or type(exc).__name__}); start one with "
            "`ray start --head`, or use --ray local"
        ) from None
    finally:
        for sig, handler in handlers.items():  # ray.init replaces SIGTERM's with a crash dump and exit
            if handler is not None:
                signal.signal(sig, handler)
    return False


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT address (or ray://HOST:PORT) answers a TCP connection; ConnectionError if not."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" is Ray's to find; other forms are Ray's to judge
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


def cluster() -> Cluster:
    """The alive nodes' GPUs (by accelerator type) and CPUs."""
    import ray

    found = Cluster()
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        types = tuple(key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:"))
        found.nodes.append(Node(resources.get("CPU", 0.0), int(resources.get("GPU", 0)), types))
    return found


def check_accelerators(points: list[Point], found: Cluster) -> None:
    """Every GPU type the points ask for is on the cluster; else InputError naming what it has."""
    wanted = sorted({p.accelerator for p in points if p.accelerator is not None})
    missing = [kind for kind in wanted if not found.gpus.get(kind)]
    if missing:
        has = ", ".join(f"{t} ({found.gpus[t]} GPU)" for t in found.types) or "no typed GPUs"
        raise InputError(
            f"accelerators: this Ray cluster has no {', '.join(missing)} GPUs (it has {has}); "
            "nothing was measured"
        )


@dataclass
class Slot:
    """One actor, the kind of GPU it sits on, the model group it is on and the point it measures."""

    kind: str | None
    handle: object = None
    group: tuple | None = None
    point: Point | None = None
    ref: object = None


def worker_options(kind: str | None, use_gpus: bool, cpus_per_point: int) -> dict:
    options: dict = {"num_cpus": cpus_per_point, "max_restarts": 0}
    if use_gpus:
        options["num_gpus"] = 1
        if kind is not None:  # the way Ray pins an actor to a GPU type
            options["resources"] = {f"accelerator_type:{kind}": 0.001}
    return options


def uses_gpus(points: list[Point], found: Cluster) -> bool:
    """Whether the workers hold a GPU each: the cluster has GPUs and a point may run on one."""
    return bool(found.gpus) and any(p.accelerator or p.device != "cpu" for p in points)


def plan_workers(points: list[Point], found: Cluster, cpus_per_point: int) -> tuple[dict, bool]:
    """(actors per accelerator kind, whether they hold a GPU): one per GPU of the kind the points ask
    for, or one per `cpus_per_point` CPUs where there are no GPUs or every point runs on the CPU, each
    on one node. InputError where no node can hold a worker (it would wait for ever)."""
    use_gpus = uses_gpus(points, found)

    def suits(node: Node, kind: str | None) -> bool:
        return not use_gpus or (node.gpus > 0 and (kind is None or kind in node.types))

    def room(node: Node, kind: str | None) -> int:
        by_cpus = int(node.cpus // cpus_per_point)
        return (by_cpus if not use_gpus else min(node.gpus, by_cpus)) if suits(node, kind) else 0

    counts = {}
    for kind, n in Counter(p.accelerator for p in points).items():
        have = sum(room(node, kind) for node in found.nodes)
        if have == 0:
            most = max((node.cpus for node in found.nodes if suits(node, kind)), default=0)
            where = f"{kind} GPU node" if kind else ("GPU node" if use_gpus else "node")
            raise InputError(
                f"--ray-cpus-per-point {cpus_per_point}: no {where} of this Ray cluster has "
                f"{cpus_per_point} CPUs for a worker (the largest has {most:g}); nothing was measured"
            )
        counts[kind] = min(have, n)
    return counts, use_gpus


def failure(exc: Exception) -> str:
    """A record's `error` for a point whose worker failed outside the runner's own error handling."""
    import ray

    if isinstance(exc, ray.exceptions.OutOfMemoryError):  # Ray's memory monitor: host memory, not the GPU's
        killed = "the Ray worker measuring this point was killed as its node ran low on host memory"
        return f"{killed}: {first_line(exc)}"
    if isinstance(exc, ray.exceptions.RayActorError):
        return died(exc)
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return error_message(exc.cause)
    return error_message(exc)


def died(exc: Exception) -> str:
    """What a Ray actor error says about the worker process: pid, node, exit type and likely causes."""
    text = str(getattr(exc, "error_msg", None) or exc)
    if getattr(exc, "actor_init_failed", False):
        last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
        return f"the Ray worker could not start: {last[0].strip()}"
    pid, ip = re.search(r"\bpid: (\d+)", text), re.search(r"\bip: (\S+)", text)
    lines = [line.strip() for line in text.splitlines() if not line.startswith("\t")]
    cause = " ".join(lines).replace("The actor died unexpectedly before finishing this task. ", "")
    cause = cause.split(" If the process was killed")[0]  # the rest is advice on Ray's options
    where = ", ".join(filter(None, (pid and f"pid {pid[1]}", ip and ip[1]))) or "unknown process"
    return f"the Ray worker measuring this point died ({where}): {cause}"


@dataclass
class Caught:
    """Signals noted while Ray's C++ code waits, and the handlers they belong to."""

    handlers: dict = field(default_factory=dict)
    signals: list = field(default_factory=list)


def defer_signals() -> Caught:
    """Note SIGINT/SIGTERM instead of acting on them: a Python exception raised inside Ray's wait
    surfaces as a SystemError, not as the interruption it was. `deliver` acts on them between waits."""
    caught = Caught()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            caught.handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda signum, frame: caught.signals.append(signum))
    return caught


def deliver(caught: Caught, restore_only: bool = False) -> None:
    """Put the handlers back and, unless restore_only, send the process a signal noted meanwhile."""
    if not caught.signals and not restore_only:
        return
    for sig, handler in caught.handlers.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    caught.handlers.clear()
    if caught.signals and not restore_only:
        signal.raise_signal(caught.signals[0])  # handled now, in Python code, by the caller's handler


def run_on_ray(
    points: list[Point],
    output,
    sweep: str | None,
    run_id: str,
    found: Cluster,
    cpus_per_point: int = 1,
    agreement: bool = True,
    on_record: Callable[[dict], None] = lambda record: None,
    on_wait: Callable[[str], None] = lambda message: None,
) -> Iterator[dict]:
    """Measure the points on the cluster; each record is appended (by this process only) and yielded.
    Actors are killed on the way out, whatever ends the loop (Ctrl-C, SIGTERM, an error)."""
    import ray

    counts, use_gpus = plan_workers(points, found, cpus_per_point)
    actor = ray.remote(PointWorker)
    threads = None if use_gpus else cpus_per_point
    pending: dict[str | None, dict[tuple, deque]] = {}
    for point in points:
        pending.setdefault(point.accelerator, {}).setdefault(point.runner_group, deque()).append(point)
    slots = [Slot(kind) for kind, n in counts.items() for _ in range(n)]

    def start(slot: Slot) -> None:
        options = worker_options(slot.kind, use_gpus, cpus_per_point)
        slot.handle = actor.options(**options).remote(run_id, agreement, threads)
        slot.group = None

    def hand_out(slot: Slot) -> None:
        queues = pending.get(slot.kind, {})
        if slot.group not in queues:  # its model is done: the model with the most points left
            if not queues:  # nothing left for it: its GPU (or CPUs) go back to the cluster
                ray.kill(slot.handle, no_restart=True)
                slot.handle = None
                return
            slot.group = max(queues, key=lambda g: len(queues[g]))
        slot.point = queues[slot.group].popleft()
        if not queues[slot.group]:
            del queues[slot.group]
        slot.ref = slot.handle.measure.remote(slot.point, sweep)

    caught = defer_signals()
    try:
        for slot in slots:
            start(slot)
            hand_out(slot)
        waited, said = time.monotonic(), False
        while busy := {slot.ref: slot for slot in slots if slot.ref is not None}:
            done, _ = ray.wait(list(busy), num_returns=1, timeout=1)
            deliver(caught)
            if not done:
                if not said and time.monotonic() - waited > 120:
                    each = f"{'a GPU and ' * use_gpus}{cpus_per_point} CPU(s) each"
                    on_wait(
                        "no point finished for 2 minutes: is the cluster busy, or short of what the "
                        f"workers ask for ({each})?"
                    )
                    said = True
                continue
            waited = time.monotonic()
            slot = busy[done[0]]
            try:
                record = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the worker died, was OOM-killed, or its task raised
                message = failure(exc)
                record = make_record(run_id, "error", planned_config(slot.point, sweep), {}, None, message)
                ray.kill(slot.handle, no_restart=True)
                start(slot)  # a fresh worker in its place
            slot.ref = None
            append_record(output, record)
            on_record(record)
            yield record
            hand_out(slot)
    finally:
        deliver(caught, restore_only=True)
        for slot in slots:
            if slot.handle is not None:
                ray.kill(slot.handle, no_restart=True)
