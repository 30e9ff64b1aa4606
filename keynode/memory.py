"""Bounded request buffering per listener, and giving freed buffers back to the system.

docs/spec/agent-protocol.md section 3 "Limits" and docs/spec/transport.md section 7. Each
listener (the agent socket, the peer port) has one :class:`RequestBudget`: the bytes of
requests being received, summed over all its connections. An agent frame is charged its
whole announced size when its length arrives (it must arrive whole within a few seconds); a
peer message is charged the bytes of it held so far, as they arrive (a peer has no such
deadline, so what it only announces must cost nothing). Both are released when complete or
when their connection ends; one that does not fit gets the listener's busy reply.

A partial buffer of several MiB that was freed still counts in the process's RSS until the C
allocator gives its pages back; :meth:`RequestBudget.release` asks glibc to (``malloc_trim``)
once the buffers dropped since the last time add up to :data:`TRIM_AFTER` (a peer message that
arrived whole is not counted: its memory serves the next one).

Vault writes (docs/architecture.md "Agent memory") allocate and free tree, pack and ciphertext
buffers of a few KiB to a few MiB from several worker threads; glibc keeps freed chunks inside
its per-thread heaps, and the holes add up (10,000 overwrites of a 10,000-secret vault grew an
agent from ~60 MB to over 150 MB with nothing live to show for it). The vault handlers call
:func:`release_free_memory` after each write: the same trim, at most once per
:data:`WRITE_TRIM_INTERVAL` (it takes tens of microseconds at this heap size).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("keynode.memory")

#: Default budget of each listener (bytes): a few of the largest frames at once.
REQUEST_BUDGET = 64 * 1024 * 1024
#: Trim the C heap after this many bytes of request buffers were released.
TRIM_AFTER = 8 * 1024 * 1024
#: Seconds between two trims after vault writes.
WRITE_TRIM_INTERVAL = 0.05


#: glibc's ``M_ARENA_MAX`` (malloc.h) and the number of heaps the agent allows itself.
M_ARENA_MAX = -8
ARENAS = 2


def _glibc(name: str) -> Any:
    """The glibc function ``name``, or None (not glibc: its allocator manages memory its own way)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _load_trim() -> Callable[[], None]:
    trim = _glibc("malloc_trim")
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def trim_now() -> None:
        trim(0)

    return trim_now


trim_heap = _load_trim()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let glibc's malloc use at most ``arenas`` heaps (``mallopt(M_ARENA_MAX)``); True if it took.

    Call it before any thread starts. By default glibc gives threads up to 8 heaps per core, and
    each keeps its own free holes; the agent's worker threads and the loop then spread one
    workload's allocations over several heaps that each stay as large as their peak.
    """
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


class RequestBudget:
    """Bytes of requests buffered across all connections of one listener, at most ``limit``."""

    def __init__(self, limit: int = REQUEST_BUDGET, *, trim: Callable[[], None] = trim_heap) -> None:
        if limit <= 0:
            raise ValueError("the request budget must be positive")
        self.limit = limit
        self.used = 0
        self._released = 0
        self._trim = trim

    def reserve(self, n: int) -> bool:
        """Charge ``n`` bytes; False (nothing charged) if they do not fit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int, *, trim: bool = True) -> None:
        """Give back ``n`` charged bytes (their buffer was dropped). ``trim=False`` for the buffer
        of a message that arrived whole: the next message reuses its memory, and handing it
        back to the system only to fault it in again cost the peer transport a tenth to a
        quarter of its throughput with 1 MiB messages (docs/architecture.md "Agent memory")."""
        if n <= 0:
            return
        self.used = max(0, self.used - n)
        if not trim:
            return
        self._released += n
        if self._released >= TRIM_AFTER:
            self._released = 0
            self._trim()


_last_write_trim = 0.0
_write_trim_mutex = threading.Lock()


def release_free_memory(*, force: bool = False) -> bool:
    """After a vault write: return free heap pages to the system (throttled unless ``force``).
    True if it trimmed."""
    global _last_write_trim
    with _write_trim_mutex:
        now = time.monotonic()
        if not force and now - _last_write_trim < WRITE_TRIM_INTERVAL:
            return False
        _last_write_trim = now
    trim_heap()
    return True
