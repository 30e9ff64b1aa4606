"""Process hardening for the agent, which holds the unlocked key (docs/security.md "Memory").

- ``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and other processes of the same user can neither
  ptrace the agent nor read ``/proc/PID/mem`` (or ``environ``, ``fd``): only root (or a holder of
  CAP_SYS_PTRACE) can.
- ``RLIMIT_CORE`` 0: no core file even where a crash handler would write one.

Both best effort: a platform without them (macOS has no prctl) runs without.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys

log = logging.getLogger("keynode")

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return int(prctl(option, arg, 0, 0, 0))


def harden_process() -> list[str]:
    """Apply what this platform allows; the names of the measures that could not be applied."""
    missing = []
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        missing.append("RLIMIT_CORE")
    if sys.platform.startswith("linux"):
        try:
            if _prctl(PR_SET_DUMPABLE, 0) != 0:
                missing.append("PR_SET_DUMPABLE")
        except (OSError, AttributeError):
            missing.append("PR_SET_DUMPABLE")
    else:
        missing.append("PR_SET_DUMPABLE")
    return missing


def dumpable() -> bool | None:
    """Whether this process is dumpable (None where prctl does not exist)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _prctl(PR_GET_DUMPABLE) != 0
    except (OSError, AttributeError):
        return None
