"""The node-local vault name index (docs/spec/vault-format.md section 7).

Vault names are local to a node and never stored in clear. ``<node>/vaults/index``
holds an AEAD box keyed by HKDF of the node's root seed::

    0   4   magic    b"PKVI"
    4   1   version  1
    5   ..  nonce(24) || XChaCha20-Poly1305(key, body, ad = bytes 0..5)

    body = u32 count || count x (VaultId(16) || u16 name length || name UTF-8), sorted by name

Writes go through :func:`polykey.fsutil.atomic_write` under an exclusive ``flock`` on
``<node>/vaults/index.lock``; readers reload when the file changes on disk.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from polykey import crypto, fsutil
from polykey.crypto import memory
from polykey.errors import AuthenticationError, InvalidInputError, VaultIndexError
from polykey.ids import VaultId
from polykey.vaults.identity import NodeKey

MAGIC = b"PKVI"
VERSION = 1
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_NAME_CHARS = 128
KEY_INFO = b"polykey vault name index v1"
T = TypeVar("T")


def validate_name(name: str) -> str:
    """A vault name: 1..128 characters, no control characters, no '/' or ':'."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidInputError(f"a vault name must be 1 to {MAX_NAME_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "/" in name or ":" in name:
        raise InvalidInputError("a vault name must not contain '/', ':' or control characters")
    if name != name.strip():
        raise InvalidInputError("a vault name must not start or end with whitespace")
    return name


def validate_new_name(name: str) -> str:
    """A valid name for a new or renamed vault: also not one that reads as a VaultId (section 7),
    which would shadow that vault wherever vaults are named."""
    name = validate_name(name)
    if name.startswith("v"):
        try:
            VaultId.from_text(name)
        except InvalidInputError:
            return name
        raise InvalidInputError("a vault name must not look like a VaultId")
    return name


def index_key(seed: crypto.Secret) -> bytes:
    """The index key of the node with this seed (what :class:`NameIndex` derives from its NodeKey)."""
    return crypto.derive(seed, KEY_INFO, 32)


def encode(key: bytes, entries: dict[str, VaultId], *, rng: crypto.Rng = crypto.random_bytes) -> bytes:
    body = [struct.pack(">I", len(entries))]
    for name in sorted(entries):
        raw = name.encode("utf-8")
        body.append(entries[name].raw + struct.pack(">H", len(raw)) + raw)
    header = MAGIC + bytes([VERSION])
    return header + crypto.aead_encrypt(key, b"".join(body), header, rng=rng)


def decode(key: bytes, data: bytes) -> dict[str, VaultId]:
    if len(data) < 5 or data[:4] != MAGIC:
        raise VaultIndexError("the vault name index is not a Polykey index file")
    if data[4] != VERSION:
        raise VaultIndexError(f"the vault name index has unknown version {data[4]}")
    try:
        body = crypto.aead_decrypt(key, data[5:], data[:5])
    except AuthenticationError:
        raise VaultIndexError("the vault name index fails authentication (tampered, or another node's key)") from None
    try:
        (count,) = struct.unpack_from(">I", body)
        pos, out = 4, {}
        for _ in range(count):
            raw = body[pos : pos + 16]
            (n,) = struct.unpack_from(">H", body, pos + 16)
            name = body[pos + 18 : pos + 18 + n].decode("utf-8")
            if len(raw) != 16 or len(name.encode("utf-8")) != n:
                raise ValueError
            out[name] = VaultId(raw)
            pos += 18 + n
        if pos != len(body) or list(out) != sorted(out) or len(out) != count:
            raise ValueError
    except (struct.error, ValueError):
        raise VaultIndexError("the vault name index is malformed") from None
    return out


class NameIndex:
    """The index of one node, cached in memory and reloaded when the file changes."""

    def __init__(self, vaults_dir: Path, node: NodeKey) -> None:
        self.path = vaults_dir / "index"
        self._lock_path = vaults_dir / "index.lock"
        self._key = node.derive(KEY_INFO, 32)
        self._mutex = threading.RLock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, VaultId] = {}

    def wipe_key(self) -> None:
        """Zero the index key in memory (the agent locks); the index is unusable afterwards."""
        with self._mutex:
            memory.wipe(self._key)

    def _reload(self) -> dict[str, VaultId]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._entries = None, {}
            return self._entries
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                data = fsutil.read_limited(self.path, MAX_INDEX_BYTES)
            except ValueError:
                raise VaultIndexError("the vault name index is too large") from None
            self._entries = decode(self._key, data)
            self._stamp = stamp
        return self._entries

    def entries(self) -> dict[str, VaultId]:
        with self._mutex:
            return dict(self._reload())

    def lookup(self, name: str) -> VaultId | None:
        with self._mutex:
            return self._reload().get(name)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def update(self, change: Callable[[dict[str, VaultId]], T]) -> T:
        """Apply ``change`` to a fresh copy of the entries under the lock, and write it durably."""
        with self._exclusive():
            entries = dict(self._reload())
            result = change(entries)
            fsutil.atomic_write(self.path, encode(self._key, entries))
            self._stamp = None
            self._reload()
            return result
