"""Key material in memory: mutable buffers, zeroed when done, mlocked where allowed.

See docs/security.md "Memory". CPython gives no way to keep a secret out of memory it does not
control, so the rule is: hold each long-lived secret (the Ed25519 seed, the node password) in
one :class:`bytearray` made by :func:`secret_buffer`, pass that buffer to libraries that accept
one, and where a library insists on :class:`bytes`, hand it a temporary copy
(:func:`borrowed`) that is zeroed in place as soon as the call returns. :func:`wipe` zeroes
either kind. Standard library only (``ctypes``).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Offset of the data inside a CPython ``bytes`` object (``ob_sval``, after the header).
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1
_CPYTHON = sys.implementation.name == "cpython"

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return _libc


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def secret_buffer(data: bytes | bytearray | memoryview) -> bytearray:
    """A new bytearray holding ``data``, mlocked (best effort: an unprivileged process may be
    over its RLIMIT_MEMLOCK). Never resize it: :func:`wipe` it when done."""
    buf = bytearray(data)
    if buf:
        lock_pages(buf)
    return buf


def lock_pages(buf: bytearray) -> bool:
    """``mlock`` the pages of ``buf`` so they are never swapped out; False if not allowed."""
    libc = _c()
    if libc is None or not buf or not hasattr(libc, "mlock"):
        return False
    return bool(libc.mlock(ctypes.c_void_p(_address(buf)), ctypes.c_size_t(len(buf))) == 0)


def wipe(buf: bytes | bytearray | None) -> None:
    """Overwrite ``buf`` with zeros, in place.

    A ``bytes`` object is zeroed in its own memory (CPython only). Only pass one that this code
    made and nobody else holds (a decrypted key, a copy from :func:`borrowed`): never a literal,
    a dict key or an object shared with a cache. Objects of length 0 or 1 are CPython's shared
    singletons and are left alone.
    """
    if buf is None or len(buf) == 0:
        return
    if isinstance(buf, bytearray):
        ctypes.memset(_address(buf), 0, len(buf))
    elif isinstance(buf, bytes) and _CPYTHON and len(buf) > 1:
        ctypes.memset(id(buf) + _BYTES_DATA_OFFSET, 0, len(buf))


def wipe_values(value: object, _depth: int = 0) -> None:
    """:func:`wipe` every ``bytes`` inside a JSON-like reply (dicts, lists) once it is encoded: the
    secret values an agent handler read for one request, which nothing else holds."""
    if _depth > 32:
        return
    if isinstance(value, (bytes, bytearray)):
        wipe(value)
    elif isinstance(value, dict):
        for item in value.values():
            wipe_values(item, _depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            wipe_values(item, _depth + 1)


@contextmanager
def borrowed(buf: bytes | bytearray) -> Iterator[bytes]:
    """A ``bytes`` copy of ``buf`` for a library that takes nothing else, zeroed on exit."""
    if isinstance(buf, bytes):
        yield buf
        return
    copy = bytes(buf)
    try:
        yield copy
    finally:
        wipe(copy)
