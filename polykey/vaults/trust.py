"""Verified heads: nothing unverified is ever used (docs/spec/vault-format.md section 10).

:class:`VerifiedHeads` is the guard every open :class:`polykey.vaults.vault.Vault` of a service
calls before it uses a head it has not checked: the commits since the head this node last
verified are verified (:func:`polykey.vaults.verify.verify_new`), a head that does not descend
from it is refused (VaultRollbackError), and the new head is recorded in the node's state file
(:mod:`polykey.vaults.state`). The vault name index records that the state file exists, so
its loss is an error (VaultStateError), not a fresh start; a node whose vaults predate the
state file gets one with every vault pending, each verified in full at its first open.

The recorded head is a low-water mark (section 10.5): this node's own commits are verified
heads in memory at once, and reach the file every :data:`RECORD_EVERY` commits of a vault and
at :meth:`VerifiedHeads.flush` (the service's close), not with an fsync per write. A head that
moves while the service runs is checked against the newest head in memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from polykey import fsutil
from polykey.crypto import memory
from polykey.errors import VaultPermissionError, VaultStateError, VaultVerificationError
from polykey.ids import VaultId
from polykey.vaults import state
from polykey.vaults.format import OWNER
from polykey.vaults.identity import NodeKey
from polykey.vaults.index import NameIndex
from polykey.vaults.sealedfile import SealedFile
from polykey.vaults.state import NodeState, Peer, VaultState
from polykey.vaults.vault import Vault
from polykey.vaults.verify import verify, verify_new

STATE_FILE = "state"
#: This node's own commits on a vault kept as verified in memory before the state file records them.
RECORD_EVERY = 32
#: In a vault's repository while sync moves its branch to a head that does not descend from it.
REPLACING = "pk-replacing"


@dataclass(frozen=True)
class _Ahead:
    """A vault's verified head in memory, ahead of the recorded one (``since``) by ``count`` own commits."""

    head: str
    since: str | None
    count: int


class VerifiedHeads:
    """The node-local state of one node's vaults, and the guard of its open vaults."""

    def __init__(self, vaults_dir: Path, node: NodeKey, index: NameIndex) -> None:
        self._key = node.derive(state.KEY_INFO, 32)
        self._index = index
        self._file: SealedFile[NodeState] = SealedFile(
            vaults_dir / STATE_FILE, lambda data: state.decode(self._key, data),
            lambda value: state.encode(self._key, value), state.MAX_STATE_BYTES,
            lambda: VaultStateError("the node's vault state file is too large"))
        self._ahead: dict[VaultId, _Ahead] = {}
        self._ahead_mutex = threading.Lock()

    def wipe_key(self) -> None:
        with self._file.mutex:
            memory.wipe(self._key)

    # -- the state file -----------------------------------------------------------------

    @property
    def state_file(self) -> SealedFile[NodeState]:
        """The sealed state file, shared with what else the node records in it
        (:class:`polykey.vaults.syncbook.SyncBook`). Change it only through ``update`` (each change
        then sees every other's), and only after :meth:`load`."""
        return self._file

    def load(self) -> NodeState:
        """The node state; the first one is written if the node has none yet (section 10.2).
        VaultStateError if it is unusable."""
        return self._load()

    def _load(self) -> NodeState:
        current = self._file.current()
        if current is not None:
            if not self._index.has_state():  # a crash between writing the state and the index
                self._index.update(lambda _entries: None, with_state=True)
            return current
        if self._index.has_state():
            raise VaultStateError(
                "the node's vault state file is missing (the vault index records that it exists); "
                "restore the node directory from a backup, or pin each vault again with `pk vaults reset`")
        return self._start()

    def _start(self) -> NodeState:
        """The first state of a node whose vaults predate it: every vault pending (section 10.2)."""

        def start(current: NodeState | None) -> tuple[NodeState, NodeState]:
            fresh = current or NodeState({vid: VaultState(None, None) for vid in self._index.entries().values()})
            return fresh, fresh

        fresh = self._file.update(start)
        self._index.update(lambda _entries: None, with_state=True)
        return fresh

    def _put(self, vid: VaultId, vs: VaultState | None) -> None:
        def change(current: NodeState | None) -> tuple[NodeState, None]:
            if current is None:
                raise VaultStateError("the node's vault state file went missing")
            return current.with_vault(vid, vs), None

        with self._ahead_mutex:
            self._ahead.pop(vid, None)
        self._file.update(change)

    def flush(self) -> None:
        """Record every verified head held in memory (the service's close). A vault whose record
        changed meanwhile (another service of this node) keeps that record."""
        with self._ahead_mutex:
            ahead, self._ahead = self._ahead, {}
        if not ahead:
            return

        def change(current: NodeState | None) -> tuple[NodeState, None]:
            if current is None:
                raise VaultStateError("the node's vault state file went missing")
            for vid, a in ahead.items():
                rec = current.vaults.get(vid)
                if rec is not None and rec.verified == a.since:
                    current = current.with_vault(vid, replace(rec, verified=a.head))
            return current, None

        self._file.update(change)

    def verified_head(self, vid: VaultId) -> str | None:
        """The newest verified head of ``vid``, if the state file is there and holds one; None
        otherwise (nothing is written: the check before use reports what is wrong)."""
        current = self._file.current() if self._index.has_state() else None  # else _load() writes
        rec = current.vaults.get(vid) if current is not None else None
        return None if rec is None else self._verified(vid, rec)

    def _verified(self, vid: VaultId, rec: VaultState) -> str | None:
        """The newest verified head of ``vid``: in memory if it is ahead of the record."""
        with self._ahead_mutex:
            a = self._ahead.get(vid)
        return a.head if a is not None and a.since == rec.verified else rec.verified

    def record(self, vid: VaultId) -> VaultState:
        """This vault's record; VaultStateError if the state is unusable or holds none."""
        found = self._load().vaults.get(vid)
        if found is None:
            raise VaultStateError(
                "the node's vault state has no record of this vault (removed from the state file); "
                "pin it again with `pk vaults reset VAULT --to COMMIT`")
        return found

    # -- the guard (polykey.vaults.vault.Guard) ---------------------------------------------------

    def check(self, v: Vault, head: str) -> None:
        """Verify ``head`` of ``v`` before anything of it is used, and record it as verified."""
        rec = self.record(v.vault_id)
        verified = self._verified(v.vault_id, rec)
        if rec.pending:  # the vault predates the state file: its whole history, once
            root = verify(v, head)["root"]
            self._put(v.vault_id, VaultState(root, head))
        elif head != verified:
            assert verified is not None
            verify_new(v, head, verified)
            self._put(v.vault_id, replace(rec, verified=head))

    def advanced(self, v: Vault, head: str) -> None:
        """``v`` committed ``head`` on its verified head: a verified head at once, in memory; recorded
        in the file every :data:`RECORD_EVERY` commits (section 10.5)."""
        rec = self.record(v.vault_id)
        with self._ahead_mutex:
            a = self._ahead.get(v.vault_id)
            count = a.count + 1 if a is not None and a.since == rec.verified else 1
            if count < RECORD_EVERY:
                self._ahead[v.vault_id] = _Ahead(head, rec.verified, count)
                return
        self._put(v.vault_id, replace(rec, verified=head))

    def accepted(self, v: Vault, head: str, seen: Peer | None = None) -> None:
        """Record ``head``, verified by the caller (a received head, or a merge of it; it may not descend
        from the old verified head when a merge was adopted or changes were re-applied), as ``v``'s
        verified head, in the file at once (sync; section 10.5: not batched like own commits); with
        ``seen``, what the peer it came from showed, in the same write."""
        rec = self.record(v.vault_id)
        rec = replace(rec, verified=head)
        self._put(v.vault_id, rec if seen is None else rec.seen(seen))

    def replace_head(self, v: Vault, old: str, new: str, seen: Peer | None = None) -> None:
        """Move ``v``'s branch from verified head ``old`` to verified head ``new``, which does not
        descend from it (sync adopted another node's merge, or re-applied this node's changes on the
        other side's head). Crash-safe: a marker naming both is written first, then the state file
        records ``new``, then the branch moves and the marker goes; :meth:`finish_replacing`, at the
        next open, completes a replacement a crash cut short. The caller holds the write lock."""
        marker = v.repo.path / REPLACING
        fsutil.atomic_write(marker, f"{old} {new}\n".encode("ascii"))
        self.accepted(v, new, seen)
        v.repo.set_head(new)
        marker.unlink()
        fsutil.fsync_dir(v.repo.path)

    def finish_replacing(self, v: Vault) -> bool:
        """Complete a :meth:`replace_head` a crash interrupted: when the branch is still at the old head
        and the state file already records the new one, the branch moves to it. A marker naming
        anything else is dropped (the guard then judges the branch as usual). Whether the branch
        moved. The caller holds the write lock."""
        marker = v.repo.path / REPLACING
        try:
            text = fsutil.read_limited(marker, 128).decode("ascii", "replace")
        except FileNotFoundError:
            return False
        parts = text.split()
        moved = False
        if (len(parts) == 2 and all(len(p) == 40 and all(c in "0123456789abcdef" for c in p) for p in parts)
                and v.repo.head() == parts[0] and self.verified_head(v.vault_id) == parts[1]):
            v.repo.set_head(parts[1])
            moved = True
        marker.unlink(missing_ok=True)
        fsutil.fsync_dir(v.repo.path)
        return moved

    # -- vault lifecycle -------------------------------------------------------------------

    def created(self, vid: VaultId, root: str) -> None:
        """A vault this node created (before its name enters the index)."""
        self._load()
        self._put(vid, VaultState(root, root))

    def cloned(self, vid: VaultId, root: str, head: str) -> None:
        """A vault this node cloned (before its name enters the index): ``root`` pinned (the invite's)
        and ``head`` verified. VaultStateError if the state is unusable (nothing is rebuilt here)."""
        self._load()
        self._put(vid, VaultState(root, head))

    def forget(self, vid: VaultId) -> None:
        """A vault deleted from this node (after its name left the index)."""
        self._load()
        self._put(vid, None)

    def pinned_root(self, vid: VaultId) -> str | None:
        """The root pinned for ``vid``; None if the state is unusable or holds no record (a reset then
        pins it afresh)."""
        try:
            return self.record(vid).root
        except VaultStateError:
            return None

    def pin(self, vid: VaultId, root: str, head: str) -> int:
        """Record ``head`` as verified for ``vid`` (``pk vaults reset``). An unusable state file is
        rebuilt: ``vid`` pinned, every other vault of the index pending. Returns how many vaults were
        made pending that way (0 when the state was sound)."""
        try:
            self._load()
        except VaultStateError:
            others = {v: VaultState(None, None) for v in self._index.entries().values() if v != vid}
            self._file.replace(NodeState({**others, vid: VaultState(root, head)}))
            self._index.update(lambda _entries: None, with_state=True)
            return len(others)
        old = self._load().vaults.get(vid)
        self._put(vid, VaultState(root, head, old.peers if old is not None else ()))
        return 0

    def reset(self, v: Vault, to: str) -> dict[str, Any]:
        """``pk vaults reset``: move the branch of ``v`` to commit ``to`` and record it as verified.

        The target's whole history MUST verify, have the pinned root, and list this node as an owner.
        Returns ``{"commit", "previous", "verified", "pending"}`` (the branch's old target; the head this
        node had last verified, None if its state held none; how many other vaults a rebuilt state
        file left to verify in full at their next use).
        """
        with v.repo.write_lock():
            target = v.repo.resolve(to)
            root = verify(v, target)["root"]
            if v.load(target).members.role_of(v.me) != OWNER:
                raise VaultPermissionError("only an owner of the vault (as of that commit) can reset it")
            pinned = self.pinned_root(v.vault_id)
            if pinned is not None and root != pinned:
                raise VaultVerificationError(f"commit {target} belongs to another history (not the vault's root)",
                                             commit=target, reason="another root")
            previous = v.repo.head()
            verified = self.verified_head(v.vault_id)
            v.repo.set_head(target)
            pending = self.pin(v.vault_id, root or target, target)
            v.trusted = target
        return {"commit": target, "previous": previous, "verified": verified, "pending": pending}
