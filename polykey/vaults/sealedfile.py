"""Small node-local files sealed with a key of the node (docs/spec/vault-format.md sections 7 and 10).

The vault name index and the node's vault state are each one AEAD box::

    magic(4) || version(1) || nonce(24) || XChaCha20-Poly1305(key, body, ad = magic || version)

:func:`seal` and :func:`open_box` are the codec (no I/O). :class:`SealedFile` is the I/O shell:
it caches the decoded file, reloads it when its inode, size or mtime changes, and replaces it
with :func:`polykey.fsutil.atomic_write` under an exclusive ``flock`` on a lock file beside it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from polykey import crypto, fsutil
from polykey.errors import AuthenticationError, PolykeyError

T = TypeVar("T")
R = TypeVar("R")


def seal(key: bytes, magic: bytes, version: int, body: bytes, *, rng: crypto.Rng = crypto.random_bytes) -> bytes:
    header = magic + bytes([version])
    return header + crypto.aead_encrypt(key, body, header, rng=rng)


def open_box(key: bytes, magic: bytes, versions: tuple[int, ...], data: bytes,
             error: Callable[[str], PolykeyError], what: str) -> tuple[int, bytes]:
    """``(version, body)`` of a sealed file; ``error(message)`` for a foreign, unknown-version or
    tampered one (one message for every authentication failure)."""
    if len(data) < 5 or data[:4] != magic:
        raise error(f"{what} is not a file of that kind")
    if data[4] not in versions:
        raise error(f"{what} has unknown version {data[4]}")
    try:
        return data[4], crypto.aead_decrypt(key, data[5:], data[:5])
    except AuthenticationError:
        raise error(f"{what} fails authentication (tampered, or another node's key)") from None


class SealedFile(Generic[T]):
    """One sealed file: ``decode(data) -> T`` and ``encode(T) -> data`` are its codec."""

    def __init__(self, path: Path, decode: Callable[[bytes], T], encode: Callable[[T], bytes], limit: int,
                 too_large: Callable[[], PolykeyError]) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._decode = decode
        self._encode = encode
        self._limit = limit
        self._too_large = too_large
        self.mutex = threading.RLock()
        self._stamp: tuple[int, int, int] | None = None
        self._value: T | None = None

    def current(self) -> T | None:
        """The decoded file (None if it does not exist), reloaded if it changed on disk."""
        with self.mutex:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._stamp, self._value = None, None
                return None
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp or self._value is None:
                try:
                    data = fsutil.read_limited(self.path, self._limit)
                except ValueError:
                    raise self._too_large() from None
                self._value = self._decode(data)
                self._stamp = stamp
            return self._value

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the file's lock: against other threads and other processes."""
        with self.mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def replace(self, value: T) -> None:
        """Write ``value`` whatever the file holds now (a rebuild), under the lock."""
        with self.exclusive():
            fsutil.atomic_write(self.path, self._encode(value))
            self._stamp = None

    def update(self, change: Callable[[T | None], tuple[T, R]]) -> R:
        """Under the lock: ``change(current) -> (new value, result)``, the new value written durably."""
        with self.exclusive():
            new, result = change(self.current())
            fsutil.atomic_write(self.path, self._encode(new))
            self._stamp = None
            self.current()
            return result
