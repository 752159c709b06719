"""Child processes that never outlive the command that started them (the NVML sampler, isolated points,
py-spy)."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# looked up now: between fork and exec (preexec_fn) only the C call runs, no import or allocation
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """preexec_fn: the kernel sends this child SIGTERM when its parent dies, even by SIGKILL (Linux;
    elsewhere nothing)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
