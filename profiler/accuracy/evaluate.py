"""Task accuracy through lmms-eval: tasks checked and their datasets found before any model is built,
then one lmms-eval run per point (the model built once per model group), each task metric appended
as a `"kind": "accuracy"` record as soon as it exists. Needs the optional extra `[eval]`."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from profiler.orchestrate.groups import ModelGroups, Observer
from profiler.results.schema import PointConfig
from profiler.results.store import append_record, error_message, make_record
from workloads.errors import InputError
from workloads.point import Point

# what keeps datasets and the Hub offline; set before either is imported
KIND = "accuracy"  # the records this writes (profiler.results.schema.KINDS)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def lmms_eval_version() -> str | None:
    try:
        return version("lmms-eval")
    except PackageNotFoundError:
        return None


def stay_offline() -> None:
    """Datasets come from the Hugging Face cache only (no download, no network retries)."""
    os.environ.update(OFFLINE)
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read from the environment at its import, done by now
    if "datasets.config" in sys.modules:
        sys.modules["datasets.config"].HF_HUB_OFFLINE = True


def quiet() -> None:
    """lmms-eval logs through loguru, whose default handler prints DEBUG lines: warnings only."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def task_manager(tasks: list[str], include_path: Path | None):
    """lmms-eval's task index: the user's folder alone when it holds every task asked for (a fraction
    of a second), else with lmms-eval's own tasks too (several seconds). InputError for an unknown task."""
    from lmms_eval.tasks import TaskManager

    def index(**kwargs):
        try:
            return TaskManager("WARNING", **kwargs)
        except Exception as exc:  # a task file that does not parse (YAML, a missing !function): lmms-eval's
            raise InputError(
                f"--include-path {include_path}: lmms-eval cannot read its task files: {error_message(exc)}"
            ) from None

    if include_path is not None:
        local = index(include_path=str(include_path), include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = index(include_path=None if include_path is None else str(include_path))
    for task in tasks:
        if task not in manager.all_tasks:
            close = difflib.get_close_matches(task, manager.all_tasks, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (lmms-eval --tasks list shows them)"
            raise InputError(f"unknown lmms-eval task {task!r}{hint}")
    return manager


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through causes, contexts and tenacity's RetryError."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        attempt = getattr(exc, "last_attempt", None)
        inner = attempt.exception() if attempt is not None else exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def check_datasets(tasks: list[str], manager, allow_download: bool) -> None:
    """Each task's dataset loads (from the cache unless downloads are allowed); else InputError."""
    from lmms_eval.tasks import get_task_dict

    for task in tasks:
        try:
            get_task_dict([task], manager)
        except Exception as exc:
            where = "" if allow_download else " from the Hugging Face cache (--allow-download fetches it)"
            raise InputError(
                f"task {task}: its dataset could not be loaded{where}: {error_message(root_cause(exc))}"
            ) from None


def accuracy_rows(results: dict) -> Iterator[tuple[str, str, float, float | None, int | None]]:
    """(task, metric, value, stderr, samples) for every numeric metric of an lmms-eval result."""
    for task, found in (results.get("results") or {}).items():
        samples = ((results.get("n-samples") or {}).get(task) or {}).get("effective")
        for key, value in found.items():
            metric, _, kind = key.partition(",")
            if "_stderr" in metric or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            stderr = found.get(f"{metric}_stderr,{kind}")
            yield (
                task,
                metric if kind in ("", "none") else f"{metric} ({kind})",
                float(value),
                float(stderr) if isinstance(stderr, int | float) and not isinstance(stderr, bool) else None,
                samples,
            )


def eval_config(point: Point, lm, tasks: list[str], limit: int | None, batch_size: int) -> dict:
    return PointConfig.from_point(
        point,
        "accuracy",
        lm,
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
        lmms_eval_version=lmms_eval_version(),
    ).to_dict()


def run_eval(
    points: list[Point],
    tasks: list[str],
    manager,
    limit: int | None,
    batch_size: int,
    output: Path,
    run_id: str,
    on_point: Callable[[Point], None] = lambda point: None,
) -> Iterator[dict]:
    """Every point through lmms-eval on the tasks; yields each record once it is appended."""
    from lmms_eval.evaluator import simple_evaluate

    from profiler.accuracy.model import HiredLlavaNext
    from profiler.instruments.hardware import fingerprint
    from workloads.models import load_model

    def load(first: Point):
        return load_model(first.model, first.weights, first.dtype, first.device, first.seed)

    groups = ModelGroups(load, Observer(point=on_point))
    for point in points:
        lm, error = groups.enter(point)
        if error is not None:  # every point of the model says why
            config = eval_config(point, None, tasks, limit, batch_size)
            record = make_record(run_id, "error", config, {}, None, error_message(error), kind=KIND)
            yield _append(output, record)
            continue
        hardware = fingerprint(lm.device, None)
        config = eval_config(point, lm, tasks, limit, batch_size)
        try:
            model = HiredLlavaNext(
                loaded=lm,
                method=point.method,
                budget="adaptive" if point.budget is None else point.budget,
                fidelity=point.fidelity,
                param=point.params,
                seed=point.seed,
                batch_size=batch_size,
            )
            config["method_params"] = model.point.params
            results = simple_evaluate(
                model=model,
                tasks=list(tasks),
                limit=limit,
                task_manager=manager,
                batch_size=batch_size,
                log_samples=False,
                verbosity="WARNING",
                random_seed=point.seed,
                numpy_random_seed=point.seed,
                torch_random_seed=point.seed,
                fewshot_random_seed=point.seed,
            )
        except Exception as exc:
            yield _append(
                output, make_record(run_id, "error", config, hardware, None, error_message(exc), kind=KIND)
            )
            continue
        for task, metric, value, stderr, samples in accuracy_rows(results):
            shares = model.kept_share.get(task)
            metrics = {
                "task": task,
                "metric": metric,
                "value": value,
                "stderr": stderr,
                "samples": samples,
                "achieved_budget": sum(shares) / len(shares) if shares else None,
            }
            record = make_record(run_id, "ok", {**config, "task": task}, hardware, metrics, kind=KIND)
            yield _append(output, record)


def _append(output: Path, record: dict) -> dict:
    append_record(output, record)
    return record
