"""Result records, and the one path that writes and reads results files (JSON Lines).

Writing: each record is one whole line, written with one `write` under an exclusive `flock`,
then fsync'd, so a run that dies keeps every point measured so far and concurrent writers never
interleave. Before appending, a last line without its newline is kept when it is a whole record
(the newline is added) and moved to FILE.damaged when it is not (never deleted, never glued to).
A failed write leaves the file ending with a whole line and raises WriteFailed.
Reading: line by line, never a whole file at once; a line that is not a record is skipped and
counted with its reason.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from profiler.results.schema import SCHEMA_VERSION, STATUSES
from workloads.errors import InputError

FIRST_LINE_LIMIT = 1 << 20  # a results file's first line is a record: far below 1 MiB

# records appended by this process, per file: what "interrupted: N points recorded in FILE" says
written: dict[Path, int] = {}


class WriteFailed(Exception):
    """A record could not be written (disk full, I/O error); the file still ends with a whole line."""

    def __init__(self, path: Path, record: dict, reason: str):
        super().__init__(f"cannot write to {path}: {reason}")
        self.path, self.record, self.reason = path, record, reason


def suite_version() -> str:
    """The installed version, or, run from a checkout without an install (the GPU study), the version
    in the checkout's pyproject.toml marked as such."""
    try:
        return version("hired-bench")
    except PackageNotFoundError:
        found = checkout_project().get("version")
        return f"{found}+checkout" if found else "unknown"


def checkout_project() -> dict:
    """The [project] table of the checkout's pyproject.toml (for a run from a checkout without an
    install: the GPU study); empty where there is none."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
            return tomllib.load(f).get("project") or {}
    except (OSError, ValueError):
        return {}


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


# The records' builders, one per shape: every record is stamped with SCHEMA_VERSION here and nowhere else.


def make_record(
    run_id: str,
    status: str,
    config: dict,
    hardware: dict,
    metrics: dict | None,
    error: str | None = None,
    outputs: list[list[int]] | None = None,
    kind: str = "point",
) -> dict:
    """A point, oom_boundary, accuracy or serving record; `config` is a PointConfig's to_dict(). A point
    record carries no `kind` (the first files had none); the other kinds carry it first."""
    assert status in STATUSES, status
    assert kind in ("point", "oom_boundary", "accuracy", "serving"), kind
    record = {
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
    return record if kind == "point" else {"kind": kind, **record}


def make_prediction(row: dict) -> dict:
    """A prediction record (`predict --output`): flat, the memory model's row (profiler.capacity.model
    .predictions) as it is."""
    return {"kind": "prediction", "schema_version": SCHEMA_VERSION, **row}


def make_check(
    run_id: str,
    what: str,
    unit: str,
    tolerance: float | None,
    difference: float | None,
    check: dict,
    config: dict,
    hardware: dict,
) -> dict:
    """An instrument_check record (profiler.bench.checks): what is checked, in which unit, within which
    tolerance, the check's outcome (its name, measured, reference, verdict, note), the run's settings."""
    return {
        "kind": "instrument_check",
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "suite_version": suite_version(),
        "what": what,
        "unit": unit,
        "tolerance": tolerance,
        "difference": difference,
        **check,
        "config": config,
        "hardware": hardware,
    }


def parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """(record, None) for a line holding a JSON object, else (None, why it is not one)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return None, "nested too deep"
    except ValueError as exc:
        return None, "NaN or infinity" if "NaN/inf" in str(exc) else "not JSON (a half-written line?)"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    return value, None


def _refuse_constant(name: str):
    raise ValueError(f"NaN/inf constant {name}")


def is_record(value: dict | None) -> bool:
    """Something this suite wrote: a dict with a schema version."""
    return isinstance(value, dict) and isinstance(value.get("schema_version"), int)


def check_output(path: Path) -> None:
    """Refuse, before anything is measured, an output that is not (or cannot become) a results file.

    An existing file must be a regular file, writable, empty or starting with a record. For a new one
    the folders on the way are made and a scratch file is created and removed there: permission bits
    say nothing for root, a read-only mount or /proc; only trying does. The results file itself is
    not created here, so no race with another process writing it.
    """
    if path.exists():
        if not path.is_file():
            raise InputError(f"cannot write results to {path}: not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise InputError(f"cannot write results to {path}: permission denied")
        with open(path, "rb") as f:
            first = b""
            while not first and (line := f.readline(FIRST_LINE_LIMIT)):
                first = line.strip()
        if first and not is_record(parse_line(first)[0]):
            raise InputError(
                f"{path} is not a hired-bench results file (its first line is not a record): "
                "choose another --output"
            )
        return
    if problem := why_not_creatable(path.parent):
        raise InputError(f"cannot write results to {path}: {problem}")


def why_not_creatable(folder: Path) -> str | None:
    """Why `folder` cannot hold new files (made here if missing, with the folders on the way); None if
    it can."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=folder, prefix=".hired-bench-probe-")
        os.close(fd)
        os.unlink(scratch)
    except OSError as exc:
        return f"{folder} cannot hold new files ({exc.strerror or exc})"
    return None


def _finite(value):
    """NaN and infinities become null: JSON has no such numbers, and readers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def append_record(path: Path, record: dict) -> None:
    """Append one record as one whole line, locked and fsync'd; WriteFailed if the disk refuses it."""
    path = Path(path)
    line = (json.dumps(_finite(record), separators=(",", ":"), allow_nan=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WriteFailed(path, record, exc.strerror or str(exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        _repair_tail(path, fd)
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:  # a short write is retried once: a full disk then says so with its errno
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)  # the file ends with its last whole line again
            raise WriteFailed(path, record, exc.strerror or str(exc)) from None
    except OSError as exc:
        raise WriteFailed(path, record, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    written[path] = written.get(path, 0) + 1


def _repair_tail(path: Path, fd: int) -> None:
    """Under the lock: end the file with a newline, keeping a whole last record, moving a half one."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start, chunk = size, 1 << 16
    while start > 0:  # back to the byte after the previous newline
        begin = max(0, start - chunk)
        block = os.pread(fd, start - begin, begin)
        cut = block.rfind(b"\n")
        if cut >= 0:
            start = begin + cut + 1
            break
        start = begin
    tail = os.pread(fd, size - start, start)
    if is_record(parse_line(tail)[0]):
        os.write(fd, b"\n")  # a whole record that only lacks its newline
        return
    damaged = path.with_name(path.name + ".damaged")
    with open(damaged, "ab") as f:
        f.write(tail + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.ftruncate(fd, start)
    print(
        f"warning: moved a half-written last line ({len(tail)} bytes) of {path} to {damaged}",
        file=sys.stderr,
    )


def iter_lines(path: Path) -> Iterator[tuple[dict | None, str | None, bytes]]:
    """(record or None, why not, the raw line) for each non-empty line, streaming."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if line:
                record, why = parse_line(line)
                yield record, why, line


def read_records(path: Path) -> list[dict]:
    """Every line of a results file that is a JSON object (a half-written last line is skipped)."""
    return [record for record, _, _ in iter_lines(path) if record is not None]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def error_message(exc: BaseException) -> str:
    """A record's `error`: the exception's type and the first line of its message."""
    return f"{type(exc).__name__}: {first_line(exc)}".strip()
