"""Give freed heap memory back to the system after vault writes (docs/architecture.md "Agent memory").

Every write allocates and frees tree, pack and ciphertext buffers of a few KiB to a few MiB, from
several worker threads. glibc's allocator keeps the freed chunks inside its heaps (one arena per
thread) and returns only a free *top* of each heap, so holes left between live objects add up: an
agent doing 10,000 overwrites of a 10,000-secret vault grew from ~60 MB to over 150 MB with nothing
live to show for it. ``malloc_trim(0)`` releases every free page of every arena (``madvise``), in
tens of microseconds at this heap size, so the agent calls it after each write, at most once per
:data:`MIN_INTERVAL`. On a C library without ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

MIN_INTERVAL = 0.05

_trim: Callable[[int], int] | None = None
_loaded = False
_last = 0.0
_mutex = threading.Lock()


def _load() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


def release_free_memory(*, force: bool = False) -> bool:
    """Return free heap pages to the system (throttled unless ``force``). True if it trimmed."""
    global _trim, _loaded, _last
    with _mutex:
        if not _loaded:
            _trim, _loaded = _load(), True
        now = time.monotonic()
        if _trim is None or (not force and now - _last < MIN_INTERVAL):
            return False
        _last = now
        _trim(0)
        return True
