"""The node-local vault state `<node>/vaults/state` (docs/spec/vault-format.md section 10).

Per vault, the pinned root commit and the head this node last verified, and what sync records:
each peer's last shown head and when this node last synced with it. Node-wide, the invites
received and not yet accepted, and the nodes this node trusts (bit 0 of their flags: their invites
are accepted without a person). One sealed file (:mod:`polykey.vaults.sealedfile`, magic
``PKNS``) keyed by HKDF of the node's seed with its own label. :func:`encode` and :func:`decode`
are the codec (no I/O), strict: sorted, unique, capped, no trailing bytes;
``decode(encode(s)) == s`` byte for byte. Version 2 is written; version 1 (no sync times, no
receipt times, no trusted nodes) is still read, as version 2 with those zero or empty.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from polykey import crypto
from polykey.errors import VaultStateError
from polykey.ids import NodeId, VaultId
from polykey.vaults import sealedfile

MAGIC = b"PKNS"
V1, V2 = 1, 2
VERSION = V2
KEY_INFO = b"polykey vault node state v1"  # the key's label: unchanged by the codec's version 2
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_VAULTS = 65_536
MAX_PEERS = 4096
MAX_INVITES = 1024
MAX_TRUSTED = 4096
MAX_INVITE_NAME_BYTES = 512
#: The flags of a trusted node: bit 0, its invites are accepted without a person (auto-accept).
AUTO_ACCEPT = 0x01
_KNOWN_FLAGS = AUTO_ACCEPT
_MAX_U64 = (1 << 64) - 1
_ZERO = bytes(20)
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class Peer(NamedTuple):
    """What a peer last showed of a vault: its head, and when this node last synced with it (unix
    seconds; 0 = never)."""

    node: NodeId
    head: str
    last_sync: int = 0


@dataclass(frozen=True)
class VaultState:
    """One vault: ``root`` and ``verified`` are commit ids, both None while the vault waits to be
    adopted (it predates the state file: its whole history is verified at its first open)."""

    root: str | None
    verified: str | None
    peers: tuple[Peer, ...] = ()  # sorted by NodeId bytes, unique

    @property
    def pending(self) -> bool:
        return self.verified is None

    def seen(self, entry: Peer) -> VaultState:
        """This record with ``entry`` as what its peer last showed (replacing that peer's entry);
        beyond :data:`MAX_PEERS` peers, the one synced longest ago goes."""
        peers = [p for p in self.peers if p.node != entry.node]
        if len(peers) >= MAX_PEERS:
            peers.remove(min(peers, key=lambda p: (p.last_sync, p.node.raw)))
        return replace(self, peers=tuple(sorted([*peers, entry], key=lambda p: p.node.raw)))


@dataclass(frozen=True)
class Invite:
    """An invite received and not yet accepted: the vault's VaultId, pinned root and head as the
    sender showed them, the sender, the role offered (1 owner, 2 writer, 3 reader, as in
    ``.pk/members``), the sender's name for the vault, and when it was received (unix seconds)."""

    vault_id: VaultId
    root: str
    head: str
    sender: NodeId
    role: int
    name: str
    received: int = 0


@dataclass(frozen=True)
class NodeState:
    vaults: dict[VaultId, VaultState] = field(default_factory=dict)
    invites: tuple[Invite, ...] = ()  # sorted by (VaultId, sender), unique
    #: Trusted nodes and their flags (:data:`AUTO_ACCEPT`).
    trusted: dict[NodeId, int] = field(default_factory=dict)

    def with_vault(self, vid: VaultId, vs: VaultState | None) -> NodeState:
        vaults = dict(self.vaults)
        if vs is None:
            vaults.pop(vid, None)
        else:
            vaults[vid] = vs
        return replace(self, vaults=vaults)


def state_key(seed: crypto.Secret) -> bytes:
    return crypto.derive(seed, KEY_INFO, 32)


def _commit(oid: str | None) -> bytes:
    """A root or verified head: all zeros stands for None (pending), so no real id may be zeros."""
    raw = _ZERO if oid is None else _oid(oid)
    if oid is not None and raw == _ZERO:
        raise VaultStateError("a vault's root or verified head in the vault state is all zeros")
    return raw


def _oid(oid: str) -> bytes:
    raw = bytes.fromhex(oid)
    if len(raw) != 20:
        raise VaultStateError("a commit id in the vault state is not 20 bytes")
    return raw


def _u64(n: int) -> bytes:
    if not 0 <= n <= _MAX_U64:
        raise VaultStateError("a time in the vault state is out of range")
    return _U64.pack(n)


def encode_body(state: NodeState) -> bytes:
    """The version 2 body (section 10.1); VaultStateError for a state no decoder would accept."""
    if len(state.vaults) > MAX_VAULTS or len(state.invites) > MAX_INVITES or len(state.trusted) > MAX_TRUSTED:
        raise VaultStateError("the vault state holds too many vaults, invites or trusted nodes")
    out = [_U32.pack(len(state.vaults))]
    for vid in sorted(state.vaults, key=lambda v: v.raw):
        vs = state.vaults[vid]
        peers = sorted(vs.peers, key=lambda p: p.node.raw)
        if ((vs.root is None) != (vs.verified is None) or len(peers) > MAX_PEERS
                or len({p.node for p in peers}) != len(peers)):
            raise VaultStateError("a vault state record is inconsistent")
        out.append(vid.raw + _commit(vs.root) + _commit(vs.verified) + _U16.pack(len(peers)))
        out.extend(p.node.raw + _oid(p.head) + _u64(p.last_sync) for p in peers)
    invites = sorted(state.invites, key=lambda i: (i.vault_id.raw, i.sender.raw))
    if len({(i.vault_id, i.sender) for i in invites}) != len(invites):
        raise VaultStateError("the vault state holds two invites for one vault from one sender")
    out.append(_U32.pack(len(invites)))
    for inv in invites:
        name = inv.name.encode("utf-8")
        if len(name) > MAX_INVITE_NAME_BYTES or inv.role not in (1, 2, 3):
            raise VaultStateError("an invite in the vault state has a bad role or too long a name")
        out.append(inv.vault_id.raw + _oid(inv.root) + _oid(inv.head) + inv.sender.raw
                   + bytes([inv.role]) + _u64(inv.received) + _U16.pack(len(name)) + name)
    out.append(_U32.pack(len(state.trusted)))
    for node in sorted(state.trusted, key=lambda n: n.raw):
        flags = state.trusted[node]
        if flags & ~_KNOWN_FLAGS or not 0 <= flags <= 0xFF:
            raise VaultStateError("a trusted node in the vault state has unknown flags")
        out.append(node.raw + bytes([flags]))
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])


def _sorted_unique(keys: list[bytes]) -> bool:
    """Strictly increasing: sorted, no duplicates (keys of one fixed length compare as tuples would)."""
    return all(a < b for a, b in zip(keys, keys[1:]))


def _record(r: _Reader, version: int) -> tuple[VaultId, VaultState]:
    vid, root, verified, count = VaultId(r.take(16)), r.take(20), r.take(20), r.u16()
    if (root == _ZERO) != (verified == _ZERO) or count > MAX_PEERS:
        raise ValueError
    peers = tuple(Peer(NodeId(r.take(32)), r.take(20).hex(), r.u64() if version >= V2 else 0) for _ in range(count))
    if not _sorted_unique([p.node.raw for p in peers]):
        raise ValueError
    return vid, VaultState(None if root == _ZERO else root.hex(), None if verified == _ZERO else verified.hex(), peers)


def _invite(r: _Reader, version: int) -> Invite:
    vid, root, head, sender, role = VaultId(r.take(16)), r.take(20).hex(), r.take(20).hex(), NodeId(r.take(32)), r.take(1)[0]
    received = r.u64() if version >= V2 else 0
    n = r.u16()
    if n > MAX_INVITE_NAME_BYTES or role not in (1, 2, 3):
        raise ValueError
    return Invite(vid, root, head, sender, role, r.take(n).decode("utf-8"), received)


def _trusted(r: _Reader) -> tuple[NodeId, int]:
    node, flags = NodeId(r.take(32)), r.take(1)[0]
    if flags & ~_KNOWN_FLAGS:
        raise ValueError
    return node, flags


def decode_body(body: bytes, version: int = VERSION) -> NodeState:
    """A body of ``version`` (1 or 2); VaultStateError, one message, for anything malformed."""
    r = _Reader(body)
    try:
        count = r.u32()
        if count > MAX_VAULTS:
            raise ValueError
        records = [_record(r, version) for _ in range(count)]
        invites_count = r.u32()
        if invites_count > MAX_INVITES:
            raise ValueError
        invites = tuple(_invite(r, version) for _ in range(invites_count))
        trusted: list[tuple[NodeId, int]] = []
        if version >= V2:
            trusted_count = r.u32()
            if trusted_count > MAX_TRUSTED:
                raise ValueError
            trusted = [_trusted(r) for _ in range(trusted_count)]
        order = [i.vault_id.raw + i.sender.raw for i in invites]
        if (r.pos != len(body) or not _sorted_unique([vid.raw for vid, _vs in records])
                or not _sorted_unique(order) or not _sorted_unique([n.raw for n, _f in trusted])):
            raise ValueError
    except (ValueError, UnicodeDecodeError, struct.error, VaultStateError) as e:
        raise VaultStateError("the node's vault state file is malformed") from e
    return NodeState(dict(records), invites, dict(trusted))


def encode(key: bytes, state: NodeState, *, rng: crypto.Rng = crypto.random_bytes) -> bytes:
    """The sealed file, always version 2."""
    return sealedfile.seal(key, MAGIC, VERSION, encode_body(state), rng=rng)


def decode(key: bytes, data: bytes) -> NodeState:
    """A sealed file of version 1 or 2."""
    version, body = sealedfile.open_box(key, MAGIC, (V1, V2), data, VaultStateError, "the node's vault state file")
    return decode_body(body, version)
