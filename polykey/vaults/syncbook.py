"""The node-local bookkeeping of sync (DESIGN.md section 6; docs/spec/vault-format.md section 10.1).

What this node records for sharing and sync, in the same sealed state file as the verified heads
(:class:`polykey.vaults.trust.VerifiedHeads`): the nodes it trusts (and whether their invites are
accepted without a person), the invites it received and has not accepted, and per vault what each
peer last showed (its head) and when this node last synced with it.

Every change is one ``SealedFile.update`` (a read-change-write under the file's lock), as the
verified heads' are, so neither ever loses the other's writes, in this process or another.
Bounded: :data:`MAX_INVITES_PER_SENDER` invites per sender and ``state.MAX_INVITES`` in all,
``state.MAX_TRUSTED`` trusted nodes, ``state.MAX_PEERS`` peers per vault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from polykey.errors import InvalidInputError, VaultStateError
from polykey.ids import NodeId, VaultId
from polykey.vaults import state
from polykey.vaults.format import ROLES
from polykey.vaults.sealedfile import SealedFile
from polykey.vaults.state import AUTO_ACCEPT, Invite, NodeState, Peer
from polykey.vaults.trust import VerifiedHeads

#: Invites kept per sender; a sender's newest invites win (its oldest goes first).
MAX_INVITES_PER_SENDER = 16
MAX_INVITES = state.MAX_INVITES
_MAX_TIME = (1 << 64) - 1
_HEX = frozenset("0123456789abcdef")
_R = TypeVar("_R")
#: A role's byte in an invite, as in ``.pk/members`` (1 owner, 2 writer, 3 reader).
ROLE_BYTES = {role: i + 1 for i, role in enumerate(ROLES)}


def _commit_id(oid: str, what: str) -> str:
    if not isinstance(oid, str) or len(oid) != 40 or not set(oid) <= _HEX:
        raise InvalidInputError(f"{what} must be a full commit id (40 lowercase hexadecimal digits)")
    return oid


def _time(when: int) -> int:
    if not isinstance(when, int) or isinstance(when, bool) or not 0 <= when <= _MAX_TIME:
        raise InvalidInputError("a time must be whole unix seconds, not negative")
    return when


def check_invite(inv: Invite) -> Invite:
    """``inv`` if the state file can hold it; InvalidInputError naming what is malformed (never the name)."""
    _commit_id(inv.root, "an invite's root")
    _commit_id(inv.head, "an invite's head")
    _time(inv.received)
    if inv.role not in ROLE_BYTES.values():
        raise InvalidInputError("an invite's role is 1 (owner), 2 (writer) or 3 (reader)")
    if not isinstance(inv.name, str) or len(inv.name.encode("utf-8", "surrogatepass")) > state.MAX_INVITE_NAME_BYTES:
        raise InvalidInputError(f"an invite's vault name is text of at most {state.MAX_INVITE_NAME_BYTES} bytes")
    try:
        inv.name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("an invite's vault name is not valid UTF-8") from None
    return inv


class SyncBook:
    """Trusted nodes, invites and peers' heads of one node, over its vault state file."""

    def __init__(self, heads: VerifiedHeads) -> None:
        self._heads = heads
        self._file: SealedFile[NodeState] = heads.state_file

    def _read(self) -> NodeState:
        return self._heads.load()  # the first state is written if the node has none yet

    def _change(self, change: Callable[[NodeState], tuple[NodeState, _R]]) -> _R:
        """Run ``change`` on the current state under the file's lock and write what it returns."""
        self._heads.load()

        def run(current: NodeState | None) -> tuple[NodeState, _R]:
            if current is None:
                raise VaultStateError("the node's vault state file went missing")
            return change(current)

        return self._file.update(run)

    # -- trusted nodes ------------------------------------------------------------------

    def trust(self, node: NodeId, auto_accept: bool) -> None:
        """Trust ``node`` (again, with the new flag if it was): with ``auto_accept`` its invites are
        accepted without a person. InvalidInputError beyond ``state.MAX_TRUSTED`` nodes."""
        flags = AUTO_ACCEPT if auto_accept else 0

        def change(s: NodeState) -> tuple[NodeState, None]:
            if node not in s.trusted and len(s.trusted) >= state.MAX_TRUSTED:
                raise InvalidInputError(f"this node already trusts {state.MAX_TRUSTED} nodes; untrust one first")
            return replace(s, trusted={**s.trusted, node: flags}), None

        self._change(change)

    def untrust(self, node: NodeId) -> bool:
        """Trust ``node`` no more; whether it was trusted."""

        def change(s: NodeState) -> tuple[NodeState, bool]:
            if node not in s.trusted:
                return s, False
            return replace(s, trusted={n: f for n, f in s.trusted.items() if n != node}), True

        return self._change(change)

    def trusted(self) -> dict[NodeId, bool]:
        """Every trusted node, and whether its invites are accepted without a person."""
        return {n: bool(f & AUTO_ACCEPT) for n, f in self._read().trusted.items()}

    # -- invites --------------------------------------------------------------------------

    def add_invite(self, inv: Invite) -> bool:
        """Keep ``inv``; whether it was stored. A newer invite for the same (vault, sender) replaces
        the older; a sender over :data:`MAX_INVITES_PER_SENDER` loses its oldest (by receipt time,
        then VaultId). When :data:`MAX_INVITES` are held in all, a sender that holds none is refused
        (False), so no sender can push out another's invites."""
        check_invite(inv)

        def change(s: NodeState) -> tuple[NodeState, bool]:
            kept = [i for i in s.invites if (i.vault_id, i.sender) != (inv.vault_id, inv.sender)]
            mine = sorted((i for i in kept if i.sender == inv.sender), key=lambda i: (i.received, i.vault_id.raw))
            drop: set[tuple[VaultId, NodeId]] = set()
            while len(mine) - len(drop) >= MAX_INVITES_PER_SENDER:
                drop.add((mine[len(drop)].vault_id, inv.sender))
            if len(kept) - len(drop) >= MAX_INVITES:
                if len(drop) < len(mine):
                    drop.add((mine[len(drop)].vault_id, inv.sender))
                else:
                    return s, False
            kept = [i for i in kept if (i.vault_id, i.sender) not in drop] + [inv]
            return replace(s, invites=tuple(sorted(kept, key=lambda i: (i.vault_id.raw, i.sender.raw)))), True

        return self._change(change)

    def invites(self) -> list[Invite]:
        """The invites held, sorted by (VaultId, sender)."""
        return list(self._read().invites)

    def drop_invites(self, vault_id: VaultId, sender: NodeId | None = None) -> int:
        """Drop the invites for ``vault_id`` (only ``sender``'s, if given); how many were dropped."""

        def change(s: NodeState) -> tuple[NodeState, int]:
            kept = tuple(i for i in s.invites if not (i.vault_id == vault_id and sender in (None, i.sender)))
            return (replace(s, invites=kept) if len(kept) != len(s.invites) else s), len(s.invites) - len(kept)

        return self._change(change)

    # -- peers ----------------------------------------------------------------------------

    @staticmethod
    def entry(peer: NodeId, head: str, when: int) -> Peer:
        """What :meth:`saw` records, checked (InvalidInputError)."""
        return Peer(peer, _commit_id(head, "a peer's head"), _time(when))

    def saw(self, vault_id: VaultId, peer: NodeId, head: str, when: int) -> bool:
        """Record that ``peer`` showed ``head`` of ``vault_id`` and this node synced with it at
        ``when`` (unix seconds). Only for a vault with a record (False otherwise: nothing written).
        Beyond ``state.MAX_PEERS`` peers, the one synced longest ago goes."""
        entry = self.entry(peer, head, when)

        def change(s: NodeState) -> tuple[NodeState, bool]:
            rec = s.vaults.get(vault_id)
            if rec is None:
                return s, False
            return s.with_vault(vault_id, rec.seen(entry)), True

        return self._change(change)

    def peers(self, vault_id: VaultId) -> list[Peer]:
        """``[(NodeId, head, last_sync)]`` of ``vault_id`` (sorted by NodeId; none without a record)."""
        rec = self._read().vaults.get(vault_id)
        return [] if rec is None else list(rec.peers)

