"""Vault byte formats, sans-I/O (docs/spec/vault-format.md).

Everything here turns bytes into bytes: secret blobs, encrypted names, the
``.pk/`` files, epoch key derivation and secret paths. No pygit2, no files.
Every decoder is strict: size limits, no trailing bytes, known versions only,
canonical order, so every accepted encoding round-trips byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Protocol

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import (
    AuthenticationError,
    InvalidInputError,
    NotForThisKeyError,
    VaultFormatError,
    VaultIntegrityError,
)
from polykey.ids import NodeId, VaultId

#: The version byte of secret blobs, encrypted names and ``.pk/members`` (unchanged in format v2).
FORMAT_VERSION = 1
#: ``.pk/vault`` and ``.pk/keys/<epoch>`` versions: 1 as format v1 wrote them, 2 since (spec 4.1, 4.3).
V1, V2 = 1, 2

# -- roles (spec section 4) ------------------------------------------------------

OWNER, WRITER, READER = "owner", "writer", "reader"
ROLES = (OWNER, WRITER, READER)
_ROLE_BYTE = {OWNER: 1, WRITER: 2, READER: 3}
_BYTE_ROLE = {v: k for k, v in _ROLE_BYTE.items()}
MAX_MEMBERS = 4096

# -- paths (spec section 2) -------------------------------------------------------

MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 32
MAX_PATH_BYTES = 4096
MAX_SECRET_BYTES = 16 * 1024 * 1024
DIR_MARKER = ".keep"  # never a valid encrypted name: those are base32hex only


def split_path(path: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """Validate a secret path (``a/b/c``; leading/trailing ``/`` ignored) and split it."""
    if not isinstance(path, str):
        raise InvalidInputError("a secret path must be text")
    stripped = path.strip("/")
    if not stripped:
        if allow_root:
            return ()
        raise InvalidInputError("a secret path must not be empty")
    if len(stripped.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidInputError("secret path is too long")
    parts = tuple(stripped.split("/"))
    if len(parts) > MAX_DEPTH:
        raise InvalidInputError(f"secret path is deeper than {MAX_DEPTH} levels")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidInputError("secret path has an empty, '.' or '..' component")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in part):
            raise InvalidInputError("secret path has a control character")
        try:
            raw = part.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError("secret path is not valid UTF-8") from None
        if len(raw) > MAX_COMPONENT_BYTES:
            raise InvalidInputError(f"a secret path component is longer than {MAX_COMPONENT_BYTES} bytes")
    return parts


def join_path(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


# -- epoch keys (spec section 3) ---------------------------------------------------

EPOCH_SECRET_BYTES = 32
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class EpochKeys:
    """The keys one vault epoch gives (HKDF-SHA256 of the epoch secret)."""

    vault_id: VaultId
    epoch: int
    content_key: bytes
    name_key: bytes
    #: The key commitment (spec 4.3): the identity of this epoch's secret, what caches key by.
    commitment: bytes

    @classmethod
    def derive(cls, vault_id: VaultId, epoch: int, secret: bytes) -> EpochKeys:
        if len(secret) != EPOCH_SECRET_BYTES:
            raise VaultFormatError("epoch secret must be 32 bytes")
        salt = vault_id.raw + _U32.pack(epoch)
        return cls(
            vault_id=vault_id,
            epoch=epoch,
            content_key=crypto.derive(secret, b"polykey vault v1 content key", 32, salt),
            name_key=crypto.derive(secret, b"polykey vault v1 name key", crypto.SIV_KEY_BYTES, salt),
            commitment=key_commitment(vault_id, epoch, secret),
        )

    # -- names: AES-SIV, base32hex lowercase, no padding ---------------------------

    def _name_ad(self) -> bytes:
        return b"PKVN" + bytes([FORMAT_VERSION]) + self.vault_id.raw + _U32.pack(self.epoch)

    def encrypt_name(self, component: str) -> str:
        ct = crypto.siv_encrypt(self.name_key, component.encode("utf-8"), self._name_ad())
        return base64.b32hexencode(ct).decode("ascii").rstrip("=").lower()

    def decrypt_name(self, name: str) -> str:
        """Reverse :meth:`encrypt_name`; VaultIntegrityError for anything else."""
        if not (26 <= len(name) <= 512) or name != name.lower():
            raise VaultIntegrityError("vault tree has a malformed entry name")
        try:
            ct = base64.b32hexdecode(name.upper() + "=" * (-len(name) % 8))
            if base64.b32hexencode(ct).decode("ascii").rstrip("=").lower() != name:
                raise ValueError
            return crypto.siv_decrypt(self.name_key, ct, self._name_ad()).decode("utf-8")
        except (binascii.Error, ValueError, AuthenticationError):
            raise VaultIntegrityError("vault tree has an entry name that fails authentication") from None

    # -- secret blobs ---------------------------------------------------------------

    def _blob_ad(self, path: str) -> bytes:
        return (
            b"PKVS" + bytes([FORMAT_VERSION]) + self.vault_id.raw + _U32.pack(self.epoch) + path.encode("utf-8")
        )

    def encrypt_secret(self, path: str, value: bytes, *, rng: crypto.Rng = crypto.random_bytes) -> bytes:
        """``version(1) || epoch(u32) || nonce(24) || XChaCha20-Poly1305(content key, value, ad)``."""
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidInputError(f"secret values are limited to {MAX_SECRET_BYTES} bytes")
        header = bytes([FORMAT_VERSION]) + _U32.pack(self.epoch)
        return header + crypto.aead_encrypt(self.content_key, value, self._blob_ad(path), rng=rng)

    def decrypt_secret(self, path: str, blob: bytes) -> bytes:
        if blob_epoch(blob) != self.epoch:
            raise VaultIntegrityError("secret was encrypted under another key epoch")
        try:
            return crypto.aead_decrypt(self.content_key, blob[BLOB_HEADER_BYTES:], self._blob_ad(path))
        except AuthenticationError:
            raise VaultIntegrityError("secret failed authentication: it was tampered with or corrupted") from None


def key_commitment(vault_id: VaultId, epoch: int, secret: bytes) -> bytes:
    """``HKDF(S_e, salt = VaultId || e, "polykey vault v2 key commitment", 32)`` (spec 4.3)."""
    return crypto.derive(secret, b"polykey vault v2 key commitment", COMMITMENT_BYTES, vault_id.raw + _U32.pack(epoch))


COMMITMENT_BYTES = 32
BLOB_HEADER_BYTES = 5
BLOB_OVERHEAD = BLOB_HEADER_BYTES + crypto.AEAD_OVERHEAD


def blob_epoch(blob: bytes) -> int:
    if len(blob) < BLOB_OVERHEAD or len(blob) > MAX_SECRET_BYTES + BLOB_OVERHEAD:
        raise VaultIntegrityError("secret blob has an impossible size")
    if blob[0] != FORMAT_VERSION:
        raise VaultFormatError(f"secret blob has unknown version {blob[0]}")
    epoch: int = _U32.unpack_from(blob, 1)[0]
    return epoch


def secret_size(blob_size: int) -> int:
    return max(0, blob_size - BLOB_OVERHEAD)


# -- .pk/vault (spec section 4.1) ----------------------------------------------------

_VAULT = struct.Struct(">4sB16sI")
_VAULT_V2 = struct.Struct(">4sB16sIB32s")
#: Where a version 2 vault's VaultId comes from: ``CREATED`` derives it from the root's signer
#: and the nonce; ``UPGRADED`` is a version 1 vault (random VaultId) upgraded in place.
CREATED, UPGRADED = 1, 2
NONCE_BYTES = 32
_NO_NONCE = bytes(NONCE_BYTES)


def derive_vault_id(creator: NodeId, nonce: bytes) -> VaultId:
    """``SHA-256("polykey vault id v2" || 0x00 || creator NodeId || nonce)``, first 16 bytes (spec 4.1)."""
    if len(nonce) != NONCE_BYTES:
        raise VaultFormatError(f"a vault nonce is {NONCE_BYTES} bytes")
    return VaultId(crypto.sha256(b"polykey vault id v2\x00" + creator.raw + nonce)[: VaultId.SIZE])


@dataclass(frozen=True)
class VaultInfo:
    """``.pk/vault``: the VaultId, the current epoch, and (version 2) where the VaultId comes from."""

    vault_id: VaultId
    epoch: int
    version: int = V1
    origin: int = 0  # CREATED or UPGRADED in version 2, 0 in version 1
    nonce: bytes = b""  # version 2: random for CREATED, zeros for UPGRADED

    @classmethod
    def created(cls, creator: NodeId, nonce: bytes) -> VaultInfo:
        """A new vault's first ``.pk/vault``: its VaultId bound to ``creator``."""
        return cls(derive_vault_id(creator, nonce), 0, V2, CREATED, nonce)

    def upgraded(self) -> VaultInfo:
        """This version 1 file as the version 2 one of the upgrade commit (spec section 12)."""
        return VaultInfo(self.vault_id, self.epoch, V2, UPGRADED, _NO_NONCE)

    def bound_to(self, creator: NodeId) -> bool:
        """Whether the VaultId derives from ``creator`` (a ``CREATED`` vault's root signer)."""
        return self.origin == CREATED and derive_vault_id(creator, self.nonce) == self.vault_id

    def encode(self) -> bytes:
        if self.version == V1:
            return _VAULT.pack(b"PKVT", V1, self.vault_id.raw, self.epoch)
        return _VAULT_V2.pack(b"PKVT", V2, self.vault_id.raw, self.epoch, self.origin, self.nonce)

    @classmethod
    def decode(cls, data: bytes) -> VaultInfo:
        if data[4:5] == bytes([V2]) and len(data) == _VAULT_V2.size:
            magic, _v, raw, epoch, origin, nonce = _VAULT_V2.unpack(data)
            if origin not in (CREATED, UPGRADED) or (origin == UPGRADED and nonce != _NO_NONCE):
                raise VaultFormatError(".pk/vault has an unknown origin or a non-canonical nonce")
            info = cls(VaultId(raw), epoch, V2, origin, nonce)
        elif len(data) == _VAULT.size:
            magic, version, raw, epoch = _VAULT.unpack(data)
            if version != V1:
                raise VaultFormatError(f"vault format version {version} is not supported")
            info = cls(VaultId(raw), epoch)
        else:
            raise VaultFormatError(".pk/vault has the wrong size")
        if magic != b"PKVT":
            raise VaultFormatError(".pk/vault is not a Polykey vault file")
        return info


# -- .pk/members (spec section 4.2) ---------------------------------------------------

_HEAD = struct.Struct(">4sBH")


@dataclass(frozen=True)
class Members:
    """Member NodeIds and their roles, sorted by NodeId bytes."""

    roles: tuple[tuple[NodeId, str], ...]

    def role_of(self, node: NodeId) -> str | None:
        for member, role in self.roles:
            if member == node:
                return role
        return None

    def encode(self) -> bytes:
        out = [_HEAD.pack(b"PKVM", FORMAT_VERSION, len(self.roles))]
        for member, role in sorted(self.roles):
            out.append(member.raw + bytes([_ROLE_BYTE[role]]))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Members:
        if len(data) < _HEAD.size:
            raise VaultFormatError(".pk/members is truncated")
        magic, version, count = _HEAD.unpack_from(data)
        if magic != b"PKVM" or version != FORMAT_VERSION:
            raise VaultFormatError(".pk/members has a bad magic or unknown version")
        if not 1 <= count <= MAX_MEMBERS or len(data) != _HEAD.size + 33 * count:
            raise VaultFormatError(".pk/members has a wrong count or size")
        roles = []
        for i in range(count):
            off = _HEAD.size + 33 * i
            role = _BYTE_ROLE.get(data[off + 32])
            if role is None:
                raise VaultFormatError(".pk/members has an unknown role")
            roles.append((NodeId(data[off : off + 32]), role))
        if [r[0].raw for r in roles] != sorted({r[0].raw for r in roles}):
            raise VaultFormatError(".pk/members is not sorted or has duplicates")
        return cls(tuple(roles))


# -- .pk/replicas (spec section 4.4) --------------------------------------------------

_REPLICAS_HEAD = struct.Struct(">4sBH")


@dataclass(frozen=True)
class Replicas:
    """NodeIds an owner allows to hold and serve the vault's ciphertext without being members."""

    nodes: tuple[NodeId, ...]

    def encode(self) -> bytes:
        nodes = sorted(set(self.nodes), key=lambda n: n.raw)
        if not 1 <= len(nodes) <= MAX_MEMBERS:
            raise InvalidInputError(f"a vault lists 1 to {MAX_MEMBERS} replicas (none: no .pk/replicas)")
        return _REPLICAS_HEAD.pack(b"PKVR", 1, len(nodes)) + b"".join(n.raw for n in nodes)

    @classmethod
    def decode(cls, data: bytes) -> Replicas:
        if len(data) < _REPLICAS_HEAD.size:
            raise VaultFormatError(".pk/replicas is truncated")
        magic, version, count = _REPLICAS_HEAD.unpack_from(data)
        if magic != b"PKVR" or version != 1:
            raise VaultFormatError(".pk/replicas has a bad magic or unknown version")
        if not 1 <= count <= MAX_MEMBERS or len(data) != _REPLICAS_HEAD.size + 32 * count:
            raise VaultFormatError(".pk/replicas has a wrong count or size")
        raws = [data[_REPLICAS_HEAD.size + 32 * i : _REPLICAS_HEAD.size + 32 * (i + 1)] for i in range(count)]
        if raws != sorted(set(raws)):
            raise VaultFormatError(".pk/replicas is not sorted or has duplicates")
        return cls(tuple(NodeId(r) for r in raws))


# -- .pk/keys/<epoch> (spec section 4.3) -----------------------------------------------

WRAPPED_BYTES = crypto.SEAL_OVERHEAD + EPOCH_SECRET_BYTES
_KEYS_HEAD = struct.Struct(">4sBIH")
_KEYS_HEAD_V2 = struct.Struct(">4sBI32sH")


class Identity(Protocol):
    """Who opens a wrapped epoch secret (as age's identities): a NodeId and the key sealed to it."""

    @property
    def node_id(self) -> NodeId: ...

    def unseal(self, sealed: bytes) -> bytes:
        """Open what was sealed to this identity; AuthenticationError if it does not open."""
        ...


@dataclass(frozen=True)
class WrappedKeys:
    """The epoch secret sealed (crypto.seal) to each member's key, and (version 2) its commitment."""

    epoch: int
    wraps: tuple[tuple[NodeId, bytes], ...]
    commitment: bytes | None = None  # None: a version 1 file

    @classmethod
    def create(cls, epoch: int, secret: bytes, members: list[NodeId], vault_id: VaultId | None = None) -> WrappedKeys:
        """Wrap ``secret`` for ``members``; with ``vault_id``, a version 2 file carrying its commitment."""
        wraps = [(m, crypto.seal(m.public_key, secret)) for m in sorted(set(members))]
        commitment = key_commitment(vault_id, epoch, secret) if vault_id is not None else None
        return cls(epoch, tuple(wraps), commitment)

    def names(self, node: NodeId) -> bool:
        return any(member == node for member, _sealed in self.wraps)

    def unwrap(self, identity: Identity) -> bytes:
        """The epoch secret sealed to ``identity``.

        NotForThisKeyError when no wrap names it ("not my key, try the next"); VaultIntegrityError,
        the same for every failure, when its wrap does not open.
        """
        for member, sealed in self.wraps:
            if member == identity.node_id:
                try:
                    return identity.unseal(sealed)
                except AuthenticationError:
                    raise VaultIntegrityError("this node's wrapped vault key fails authentication") from None
        raise NotForThisKeyError("the vault's keys are not wrapped for this node")

    def open(self, identity: Identity, vault_id: VaultId) -> bytes:
        """:meth:`unwrap`, then (version 2) check the secret against the file's key commitment:
        a wrap sealed to us for another secret is a VaultIntegrityError naming the file."""
        secret = self.unwrap(identity)
        if self.commitment is not None and not crypto.constant_time_eq(
                key_commitment(vault_id, self.epoch, secret), self.commitment):
            memory.wipe(secret)
            raise VaultIntegrityError(
                f".pk/keys/{keys_file_name(self.epoch)}: this node's wrapped key does not match the file's "
                "key commitment (a forged or foreign epoch key)")
        return secret

    def encode(self) -> bytes:
        version = V1 if self.commitment is None else V2
        out = [_KEYS_HEAD.pack(b"PKVK", version, self.epoch, len(self.wraps)) if version == V1 else
               _KEYS_HEAD_V2.pack(b"PKVK", version, self.epoch, self.commitment or b"", len(self.wraps))]
        for member, sealed in sorted(self.wraps, key=lambda w: w[0].raw):
            out.append(member.raw + sealed)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> WrappedKeys:
        if len(data) < _KEYS_HEAD.size:
            raise VaultFormatError(".pk/keys file is truncated")
        commitment: bytes | None = None
        magic, version, epoch, count = _KEYS_HEAD.unpack_from(data)
        head = _KEYS_HEAD
        if version == V2 and len(data) >= _KEYS_HEAD_V2.size:
            magic, version, epoch, commitment, count = _KEYS_HEAD_V2.unpack_from(data)
            head = _KEYS_HEAD_V2
        if magic != b"PKVK" or version not in (V1, V2):
            raise VaultFormatError(".pk/keys file has a bad magic or unknown version")
        size = 32 + WRAPPED_BYTES
        if not 1 <= count <= MAX_MEMBERS or len(data) != head.size + size * count:
            raise VaultFormatError(".pk/keys file has a wrong count or size")
        wraps = []
        for i in range(count):
            off = head.size + size * i
            wraps.append((NodeId(data[off : off + 32]), data[off + 32 : off + size]))
        if [w[0].raw for w in wraps] != sorted({w[0].raw for w in wraps}):
            raise VaultFormatError(".pk/keys file is not sorted or has duplicates")
        return cls(epoch, tuple(wraps), commitment)


def keys_file_name(epoch: int) -> str:
    return f"{epoch:08x}"
