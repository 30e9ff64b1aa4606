"""The node-local vault state `<node>/vaults/state` (docs/spec/vault-format.md section 10).

Per vault, the pinned root commit and the head this node last verified, and room for what sync
will record (peers and the heads they last showed, pending invites). One sealed file
(:mod:`polykey.vaults.sealedfile`, magic ``PKNS``) keyed by HKDF of the node's seed with its own
label. :func:`encode` and :func:`decode` are the codec (no I/O), strict: sorted, unique, capped,
no trailing bytes; ``decode(encode(s)) == s`` byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from polykey import crypto
from polykey.errors import VaultStateError
from polykey.ids import NodeId, VaultId
from polykey.vaults import sealedfile

MAGIC = b"PKNS"
VERSION = 1
KEY_INFO = b"polykey vault node state v1"
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_VAULTS = 65_536
MAX_PEERS = 4096
MAX_INVITES = 1024
MAX_INVITE_NAME_BYTES = 512
_ZERO = bytes(20)
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class VaultState:
    """One vault: ``root`` and ``verified`` are commit ids, both None while the vault waits to be
    adopted (it predates the state file: its whole history is verified at its first open)."""

    root: str | None
    verified: str | None
    peers: tuple[tuple[NodeId, str], ...] = ()  # (peer, head it last showed), sorted by NodeId

    @property
    def pending(self) -> bool:
        return self.verified is None


@dataclass(frozen=True)
class Invite:
    """An invite received and not yet accepted (written by sync; none yet)."""

    vault_id: VaultId
    root: str
    head: str
    sender: NodeId
    role: int
    name: str


@dataclass(frozen=True)
class NodeState:
    vaults: dict[VaultId, VaultState] = field(default_factory=dict)
    invites: tuple[Invite, ...] = ()

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
    return _ZERO if oid is None else bytes.fromhex(oid)


def encode_body(state: NodeState) -> bytes:
    if len(state.vaults) > MAX_VAULTS or len(state.invites) > MAX_INVITES:
        raise VaultStateError("the vault state holds too many vaults or invites")
    out = [_U32.pack(len(state.vaults))]
    for vid in sorted(state.vaults, key=lambda v: v.raw):
        vs = state.vaults[vid]
        if (vs.root is None) != (vs.verified is None) or len(vs.peers) > MAX_PEERS:
            raise VaultStateError("a vault state record is inconsistent")
        out.append(vid.raw + _commit(vs.root) + _commit(vs.verified) + _U16.pack(len(vs.peers)))
        out.extend(peer.raw + bytes.fromhex(head) for peer, head in sorted(vs.peers, key=lambda p: p[0].raw))
    out.append(_U32.pack(len(state.invites)))
    for inv in sorted(state.invites, key=lambda i: (i.vault_id.raw, i.sender.raw)):
        name = inv.name.encode("utf-8")
        out.append(inv.vault_id.raw + bytes.fromhex(inv.root) + bytes.fromhex(inv.head) + inv.sender.raw
                   + bytes([inv.role]) + _U16.pack(len(name)) + name)
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


def _record(r: _Reader) -> tuple[VaultId, VaultState]:
    vid, root, verified, count = VaultId(r.take(16)), r.take(20), r.take(20), r.u16()
    if (root == _ZERO) != (verified == _ZERO) or count > MAX_PEERS:
        raise ValueError
    peers = tuple((NodeId(r.take(32)), r.take(20).hex()) for _ in range(count))
    if [p.raw for p, _h in peers] != sorted({p.raw for p, _h in peers}):
        raise ValueError
    return vid, VaultState(None if root == _ZERO else root.hex(), None if verified == _ZERO else verified.hex(), peers)


def _invite(r: _Reader) -> Invite:
    vid, root, head, sender, role = VaultId(r.take(16)), r.take(20).hex(), r.take(20).hex(), NodeId(r.take(32)), r.take(1)[0]
    n = r.u16()
    if n > MAX_INVITE_NAME_BYTES or role not in (1, 2, 3):
        raise ValueError
    return Invite(vid, root, head, sender, role, r.take(n).decode("utf-8"))


def decode_body(body: bytes) -> NodeState:
    r = _Reader(body)
    try:
        count = r.u32()
        if count > MAX_VAULTS:
            raise ValueError
        records = [_record(r) for _ in range(count)]
        invites_count = r.u32()
        if invites_count > MAX_INVITES:
            raise ValueError
        invites = tuple(_invite(r) for _ in range(invites_count))
        ids = [vid.raw for vid, _vs in records]
        order = [(i.vault_id.raw, i.sender.raw) for i in invites]
        if r.pos != len(body) or ids != sorted(set(ids)) or order != sorted(set(order)):
            raise ValueError
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise VaultStateError("the node's vault state file is malformed") from e
    return NodeState(dict(records), invites)


def encode(key: bytes, state: NodeState, *, rng: crypto.Rng = crypto.random_bytes) -> bytes:
    return sealedfile.seal(key, MAGIC, VERSION, encode_body(state), rng=rng)


def decode(key: bytes, data: bytes) -> NodeState:
    return decode_body(sealedfile.open_box(key, MAGIC, (VERSION,), data, VaultStateError,
                                           "the node's vault state file")[1])
