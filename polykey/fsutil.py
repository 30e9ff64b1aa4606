"""Durable file writes: write, fsync, rename, fsync the directory.

Every file Polykey writes goes through :func:`atomic_write`, so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed, and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap the directory entries ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``): at every instant each name holds one of the two, never nothing. False if
    the system or file system cannot (then nothing was changed); OSError for any other failure."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def is_atomic_write_temp(name: str) -> bool:
    """Whether a directory entry is the temporary file of an :func:`atomic_write` (a killed one
    leaves it behind; its target was never replaced)."""
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE, *, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with ``mode``.

    With ``exclusive``, never replace: FileExistsError if ``path`` exists (checked atomically, by
    linking the finished temporary file to ``path``).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a larger file is an error, never a memory blow-up."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data
