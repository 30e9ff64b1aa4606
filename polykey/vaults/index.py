"""The node-local vault name index (docs/spec/vault-format.md section 7).

Vault names are local to a node and never stored in clear. ``<node>/vaults/index``
holds an AEAD box keyed by HKDF of the node's root seed::

    0   4   magic    b"PKVI"
    4   1   version  1, or 2 once the node has a vault state file (section 10.2)
    5   ..  nonce(24) || XChaCha20-Poly1305(key, body, ad = bytes 0..5)

    body = u32 count || count x (VaultId(16) || u16 name length || name UTF-8), sorted by name

Writes go through :class:`polykey.vaults.sealedfile.SealedFile` (an atomic write under an
exclusive ``flock`` on ``<node>/vaults/index.lock``); readers reload when the file changes on disk.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import InvalidInputError, VaultIndexError
from polykey.ids import VaultId
from polykey.vaults import sealedfile
from polykey.vaults.identity import NodeKey
from polykey.vaults.sealedfile import SealedFile

MAGIC = b"PKVI"
VERSION = 1
#: The same layout; the version records that the node has a vault state file (section 10.2).
VERSION_WITH_STATE = 2
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


def encode(key: bytes, entries: dict[str, VaultId], *, with_state: bool = False,
           rng: crypto.Rng = crypto.random_bytes) -> bytes:
    """The sealed index; version 2 (``with_state``) records that the node has a vault state file."""
    body = [struct.pack(">I", len(entries))]
    for name in sorted(entries):
        raw = name.encode("utf-8")
        body.append(entries[name].raw + struct.pack(">H", len(raw)) + raw)
    return sealedfile.seal(key, MAGIC, VERSION_WITH_STATE if with_state else VERSION, b"".join(body), rng=rng)


def decode(key: bytes, data: bytes) -> dict[str, VaultId]:
    return decode_full(key, data)[0]


def decode_full(key: bytes, data: bytes) -> tuple[dict[str, VaultId], bool]:
    """``(entries, whether the node has a vault state file)``."""
    version, body = sealedfile.open_box(key, MAGIC, (VERSION, VERSION_WITH_STATE), data, VaultIndexError,
                                        "the vault name index")
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
    return out, version == VERSION_WITH_STATE


Index = tuple[dict[str, VaultId], bool]


class NameIndex:
    """The index of one node, cached in memory and reloaded when the file changes."""

    def __init__(self, vaults_dir: Path, node: NodeKey) -> None:
        self.path = vaults_dir / "index"
        self._key = node.derive(KEY_INFO, 32)
        self._file: SealedFile[Index] = SealedFile(
            self.path, lambda data: decode_full(self._key, data),
            lambda index: encode(self._key, index[0], with_state=index[1]), MAX_INDEX_BYTES,
            lambda: VaultIndexError("the vault name index is too large"))

    def wipe_key(self) -> None:
        """Zero the index key in memory (the agent locks); the index is unusable afterwards."""
        with self._file.mutex:
            memory.wipe(self._key)

    def _current(self) -> Index:
        return self._file.current() or ({}, False)

    def entries(self) -> dict[str, VaultId]:
        return dict(self._current()[0])

    def lookup(self, name: str) -> VaultId | None:
        return self._current()[0].get(name)

    def has_state(self) -> bool:
        """Whether the index records that this node has a vault state file (section 10.2)."""
        return self._current()[1]

    def update(self, change: Callable[[dict[str, VaultId]], T], *, with_state: bool | None = None) -> T:
        """Apply ``change`` to a fresh copy of the entries under the lock, and write it durably
        (``with_state`` also sets or clears the state-file record; None keeps it)."""

        def apply(old: Index | None) -> tuple[Index, T]:
            entries, flag = dict((old or ({}, False))[0]), (old or ({}, False))[1]
            result = change(entries)
            return (entries, flag if with_state is None else with_state), result

        return self._file.update(apply)
