"""Result records: one JSON object per measured point, appended to a JSON Lines file and flushed at once."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from workloads.errors import InputError

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error")


def suite_version() -> str:
    try:
        return version("hired-bench")
    except PackageNotFoundError:
        return "unknown"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def make_record(
    run_id: str,
    status: str,
    config: dict,
    hardware: dict,
    metrics: dict | None,
    error: str | None = None,
    outputs: list[list[int]] | None = None,
) -> dict:
    assert status in STATUSES, status
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite_version": suite_version(),
        "status": status,
        "error": error,
        "config": config,
        "outputs": outputs,
        "hardware": hardware,
        "metrics": metrics,
    }


def check_writable(path: Path) -> None:
    """Fail early, before any measuring, if results cannot be appended to `path`."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write results to {path}: {exc.strerror or exc}") from exc
    if not existed:
        path.unlink()  # leave nothing behind if the run stops before its first record


def append_record(path: Path, record: dict) -> None:
    """Append one line and force it to disk, so a run that dies keeps every point measured so far."""
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict]:
    """Every complete record in a JSON Lines file; a half-written last line (a killed run) is skipped."""
    return read_records_counted(path)[0]


def read_records_counted(path: Path) -> tuple[list[dict], int]:
    """(records, number of lines that were not a JSON object)."""
    records, skipped = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                skipped += 1
    return records, skipped


def error_message(exc: BaseException) -> str:
    """A record's `error`: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
