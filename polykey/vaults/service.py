"""VaultService: the one API every vault and secret operation goes through.

The agent (keynode) holds one instance per unlocked node and calls these methods
for socket clients; the ``pk`` CLI reaches them through ``polykey.agent_client.remote``
(same names and parameters). Tests and benchmarks use it in-process. Contract:

- Constructed as ``VaultService(node_path, keypair)``; :meth:`close` releases
  open repositories. Also a context manager.
- Every argument and return value is a plain JSON-able value (str, int, bool,
  None, list, dict), except secret values, which are ``bytes``.
- A vault is named by its local name or by its VaultId text (``v...``).
  Secret paths are ``a/b/c`` (no leading ``/`` needed; ``""`` or ``"/"`` is the
  vault root). Commits are named by a full or abbreviated (>= 4 hex) id.
- Thread-compatibility: calls on *different* vaults may run in different
  threads at once; calls on one vault are serialised by a per-vault lock
  inside the service (the agent may serialise them too). No global mutable
  state. Writes also take a per-repository file lock, so two processes never
  interleave writes to one vault.
- A write returns only after its objects and its ref update are on disk.
- Errors are :class:`polykey.errors.PolykeyError` subclasses (VaultNotFoundError,
  SecretNotFoundError, ...); they cross the agent socket as ``{type, message, data}``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from polykey import crypto, fsutil
from polykey.errors import (
    InvalidInputError,
    PolykeyError,
    SecretNotFoundError,
    SyncRefusedError,
    SyncRejectedError,
    VaultExistsError,
    VaultNotFoundError,
    VaultStateError,
)
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults import history as _history
from polykey.vaults import membership, merge, ops, transfer
from polykey.vaults.cache import Listings, TreeNames
from polykey.vaults.format import NONCE_BYTES, OWNER, VaultInfo, split_path
from polykey.vaults.generate import CHARSETS, DEFAULT_CHARSET, DEFAULT_LENGTH, check_value, generate_password
from polykey.vaults.identity import NodeKey
from polykey.vaults.index import NameIndex, validate_new_name
from polykey.vaults.replicas import replicas_of, set_replicas
from polykey.vaults.repo import BLOB
from polykey.vaults.staging import ImportStaging, merge_items
from polykey.vaults.state import Invite
from polykey.vaults.syncbook import ROLE_BYTES, SyncBook
from polykey.vaults.trust import REPLACING, VerifiedHeads
from polykey.vaults.transfer import QUARANTINE_PREFIX, Incoming
from polykey.vaults.upgrade import upgrade
from polykey.vaults.vault import Snapshot, Vault
from polykey.vaults.vault import _fsync_tree as fsync_tree
from polykey.vaults.verify import verify as _verify
from polykey.vaults.verify import verify_commits, verify_new

__all__ = ["CHARSETS", "DEFAULT_CHARSET", "DEFAULT_LENGTH", "VAULTS_DIR", "VaultService"]

VAULTS_DIR = "vaults"
MAX_LOG_LIMIT = 1_000_000
#: Open repositories kept (each holds libgit2 state, pack descriptors and per-vault caches).
MAX_OPEN_VAULTS = 32
#: Sync requests: vaults asked about at once, haves in one fetch, objects read at once.
MAX_SERVE_IDS = 1024
MAX_ASKED_HAVES = 64
MAX_READ_REFS = 65_536
#: The one answer to a peer asking about a vault not shared with it (no existence oracle).
REFUSED = "no vault with that id is shared with this node"

JSON = dict[str, Any]



class VaultService:
    """All vault and secret operations of one node, for one unlocked keypair."""

    def __init__(
        self,
        node_path: Path,
        keypair: KeyPair,
        *,
        clock: Callable[[], float] = time.time,
        rng: crypto.Rng = crypto.random_bytes,
    ) -> None:
        self.node_path = Path(node_path)
        self.keypair = keypair
        #: What the vaults are handed of the keypair: it signs commits and opens wrapped keys.
        self.node_key = NodeKey(keypair)
        self._clock = clock
        self._rng = rng
        self._dir = self.node_path / VAULTS_DIR
        fsutil.ensure_private_dir(self._dir)
        self._index = NameIndex(self._dir, self.node_key)
        #: Per vault, the head last verified and the pinned root (docs/spec/vault-format.md section 10).
        self._trust = VerifiedHeads(self._dir, self.node_key, self._index)
        #: Trusted nodes, invites and peers' heads, in the same state file (polykey.vaults.syncbook).
        self._book = SyncBook(self._trust)
        self._mutex = threading.Lock()
        self._open: dict[VaultId, Vault] = {}
        #: Vaults opened once by this service: each is offered the format upgrade once.
        self._upgrade_tried: set[VaultId] = set()
        self._closed = False
        #: Decrypted tree listings of every open vault, bounded; dropped by :meth:`close`.
        self.tree_names = TreeNames()
        #: Whole answers of :meth:`list_secrets` (a few, bounded): an unchanged vault's ``ls -r``.
        self.listings = Listings()
        self._staging = ImportStaging(lambda: self._rng(16).hex())
        #: Serialises the installing step of clones (the repository rename and the index entry).
        self._clone_mutex = threading.Lock()

    # -- internals -----------------------------------------------------------------

    def _repo_path(self, vault_id: VaultId) -> Path:
        return self._dir / f"{vault_id}.git"

    def _resolve(self, vault: str) -> VaultId:
        if not isinstance(vault, str) or not vault:
            raise InvalidInputError("a vault name must not be empty")
        found = self._index.lookup(vault)
        if found is not None:
            return found
        if vault.startswith("v"):
            try:
                vid = VaultId.from_text(vault)
            except InvalidInputError:
                vid = None
            if vid is not None and vid in self._index.entries().values():
                return vid
        raise VaultNotFoundError(f"no vault named {vault!r}")

    def _vault(self, vault: str) -> Vault:
        vid = self._resolve(vault)
        with self._mutex:
            if self._closed:
                raise InvalidInputError("the vault service is closed")
            opened = self._open.pop(vid, None)
            if opened is None:
                path = self._repo_path(vid)
                if not path.is_dir():
                    raise VaultNotFoundError(f"vault {vault!r} is in the index but its repository is missing")
                opened = Vault(path, vid, self.node_key, self._clock, self._rng, self.tree_names)
                opened.guard = self._trust
            self._keep(vid, opened)
            first = vid not in self._upgrade_tried
            self._upgrade_tried.add(vid)
        if first:
            if (opened.repo.path / REPLACING).exists():  # sync moved the branch and a crash cut it short
                with opened.repo.write_lock(), contextlib.suppress(PolykeyError):
                    self._trust.finish_replacing(opened)
            # A version 1 vault is upgraded at its first open (spec section 12). If its head does not
            # verify, nothing is written and the caller's operation meets the same error itself.
            with contextlib.suppress(PolykeyError):
                upgrade(opened)
        return opened

    def _keep(self, vid: VaultId, v: Vault) -> None:
        """Remember ``v`` as the most recently used open vault (caller holds the mutex)."""
        if len(self._open) >= MAX_OPEN_VAULTS:
            # The least recently used goes; not closed here: a call in another thread may still be
            # using it, and its repository is freed with its last reference.
            del self._open[next(iter(self._open))]
        self._open[vid] = v

    def _forget(self, vid: VaultId) -> None:
        with self._mutex:
            opened = self._open.pop(vid, None)
        if opened is not None:
            opened.close()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Record the verified heads held in memory; release open repositories and cached keys. The
        service is unusable afterwards."""
        with contextlib.suppress(PolykeyError):  # an unusable state file: the next open re-verifies
            self._trust.flush()
        with self._mutex:
            self._closed = True
            opened, self._open = list(self._open.values()), {}
        self.tree_names.clear()
        self.listings.clear()
        self._staging.clear()
        for v in opened:
            v.close()
            v.wipe_keys()
        self._index.wipe_key()
        self._trust.wipe_key()

    def __enter__(self) -> VaultService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def sweep_leftovers(self) -> list[str]:
        """Remove what a killed create, delete or file write left in the vaults directory.

        ``.tmp-<id>.git`` (a create that never renamed into place), ``.trash-<id>.git`` (a delete
        that renamed but did not finish removing), ``.incoming-<random>.git`` (a sync transfer's
        quarantine: received objects not verified or not installed yet) and ``.<file>.<hex>.tmp``
        (an atomic write that never replaced its target) are never read. Only their owner may call this: the agent does
        at unlock, holding the node's lock, so no other writer is building one of them. Returns the
        names removed, for the log.
        """
        removed = []
        for entry in sorted(os.listdir(self._dir)):
            path = self._dir / entry
            if entry.startswith((".tmp-", ".trash-", QUARANTINE_PREFIX)) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif fsutil.is_atomic_write_temp(entry) and not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(entry)
        if removed:
            fsutil.fsync_dir(self._dir)
        return removed

    # -- vaults --------------------------------------------------------------------

    def create_vault(self, name: str) -> JSON:
        """Create an empty vault with this node as sole owner.

        Returns ``{"name", "vaultId", "commit"}``. VaultExistsError if the name is taken,
        InvalidInputError for a bad name (1..128 chars, no control chars, not ``v`` + a VaultId).
        """
        name = validate_new_name(name)
        if self._index.lookup(name) is not None:
            raise VaultExistsError(f"a vault named {name!r} already exists")
        info = VaultInfo.created(self.node_key.node_id, self._rng(NONCE_BYTES))  # spec 4.1: bound to us
        vid = info.vault_id
        if vid in self._index.entries().values():
            raise VaultExistsError("this node already holds a vault with that VaultId")
        v = Vault.create(self._repo_path(vid), info, self.node_key, self._clock, self._rng, self.tree_names)
        v.guard = self._trust

        def add(entries: dict[str, VaultId]) -> None:
            if name in entries:
                raise VaultExistsError(f"a vault named {name!r} already exists")
            entries[name] = vid

        try:
            v.trusted = v.repo.head()
            assert v.trusted is not None
            self._trust.created(vid, v.trusted)
            self._index.update(add)
        except BaseException:
            v.close()
            shutil.rmtree(self._repo_path(vid), ignore_errors=True)
            raise
        with self._mutex:
            self._keep(vid, v)
        return {"name": name, "vaultId": str(vid), "commit": v.snapshot().commit}

    def vault_id(self, vault: str) -> str:
        """The VaultId text of a vault named by its name or VaultId. VaultNotFoundError."""
        return str(self._resolve(vault))

    def vault_names(self) -> dict[str, str]:
        """VaultId text -> local name, for every vault on this node."""
        return {str(vid): name for name, vid in self._index.entries().items()}

    def list_vaults(self) -> list[JSON]:
        """Every vault on this node, sorted by name: ``[{"name", "vaultId", "role", "state"}]``.

        ``state`` is ``"ok"``, or ``"damaged"`` with ``"reason"`` (and ``role`` None) for a vault
        whose repository cannot be read (missing or corrupt objects, packs, refs): one damaged
        vault never hides the others.
        """
        out = []
        for name, vid in sorted(self._index.entries().items()):
            row: JSON = {"name": name, "vaultId": str(vid)}
            try:
                row.update(role=self._vault(str(vid)).role(), state="ok")
            except PolykeyError as e:
                row.update(role=None, state="damaged", reason=e.message)
            except Exception as e:  # noqa: BLE001 - a damaged repository may fail in any way
                row.update(role=None, state="damaged", reason=f"the repository cannot be read ({type(e).__name__})")
            out.append(row)
        return out

    def rename_vault(self, old: str, new: str) -> JSON:
        """Rename a vault in the local index (its VaultId and history are unchanged).

        Returns ``{"name", "vaultId"}``. VaultNotFoundError, VaultExistsError, InvalidInputError for a
        bad name (the rules of :meth:`create_vault`).
        """
        new = validate_new_name(new)
        vid = self._resolve(old)

        def change(entries: dict[str, VaultId]) -> None:
            if new in entries and entries[new] != vid:
                raise VaultExistsError(f"a vault named {new!r} already exists")
            for n in [n for n, v in entries.items() if v == vid]:
                del entries[n]
            entries[new] = vid

        self._index.update(change)
        return {"name": new, "vaultId": str(vid)}

    def delete_vault(self, name: str) -> JSON:
        """Delete a vault and its repository from this node. Returns ``{"name", "vaultId"}``."""
        vid = self._resolve(name)
        names: list[str] = []

        def drop(entries: dict[str, VaultId]) -> None:
            for n in [n for n, v in entries.items() if v == vid]:
                names.append(n)
                del entries[n]

        self._index.update(drop)
        with contextlib.suppress(VaultStateError):  # a node whose state is lost may still delete vaults
            self._trust.forget(vid)
        self._forget(vid)
        path = self._repo_path(vid)
        trash = path.with_name(f".trash-{path.name}")
        if path.exists():
            os.rename(path, trash)
            fsutil.fsync_dir(self._dir)
            shutil.rmtree(trash, ignore_errors=True)
        return {"name": names[0] if names else name, "vaultId": str(vid)}

    def log(self, vault: str, limit: int | None = None) -> list[JSON]:
        """Commits from HEAD backwards (newest first), at most ``limit``.

        Each: ``{"commit", "parents": [...], "author" (NodeId text), "time" (unix seconds),
        "message"}``.
        """
        if limit is not None and not 1 <= limit <= MAX_LOG_LIMIT:
            raise InvalidInputError("the log limit must be a positive number")
        return _history.log(self._vault(vault), limit)

    def version(self, vault: str, commit: str) -> JSON:
        """The vault as of ``commit``, read-only.

        Returns ``{"commit", "parents", "author", "time", "message", "secrets": [{"path", "type"}]}``, the whole
        tree listed recursively (``type`` is ``"secret"`` or ``"dir"``). Values at that commit are read
        with ``get_secret(vault, path, commit=...)``. CommitNotFoundError.
        """
        return _history.version(self._vault(vault), commit)

    def members(self, vault: str) -> list[JSON]:
        """The member list at HEAD: ``[{"nodeId", "role", "self": bool, "lastSync"}]``, owners first, then
        the backup replicas (role ``replica``, not members: they hold ciphertext only). ``lastSync``: unix
        seconds of this node's last sync with that member, None if never (or for this node)."""
        v = self._vault(vault)
        with v.repo.read_lock():
            snap = v.snapshot()
            replicas = replicas_of(v, snap)
        synced = {p["nodeId"]: p["lastSync"] or None for p in self.peer_states(vault)}
        order = {"owner": 0, "writer": 1, "reader": 2, "replica": 3}
        rows = [{"nodeId": str(n), "role": r, "self": n == v.me, "lastSync": synced.get(str(n))}
                for n, r in snap.members.roles]
        rows += [{"nodeId": str(n), "role": "replica", "self": n == v.me, "lastSync": synced.get(str(n))}
                 for n in replicas]
        return sorted(rows, key=lambda m: (order[m["role"]], m["nodeId"]))

    def set_replicas(self, vault: str, nodes: list[str]) -> JSON:
        """Replace the vault's backup replicas (``.pk/replicas``, owners only): ``{"commit", "replicas"}``.
        Not an agent method yet (the sharing issue builds what uses replicas)."""
        return set_replicas(self._vault(vault), [NodeId.from_text(n) for n in nodes])

    def head_verified(self, vault: str) -> bool:
        """Whether a read of ``vault`` would use its head as is: the head last verified, nothing new to
        verify first (cheap: a ref read, and the state file's stat). False too when the vault cannot
        be opened (the read itself then reports why)."""
        try:
            v = self._vault(vault)
            head = v.repo.head()
            return head is not None and (head == v.trusted or head == self._trust.verified_head(v.vault_id))
        except PolykeyError:
            return False

    # -- sync glue (keynode.peers.sync) ----------------------------------------------------

    def sync_info(self, vault: str) -> JSON:
        """``{"vaultId", "name", "root", "head"}``: the verified head and the pinned root (what an invite
        carries), and this node's name for the vault."""
        v = self._vault(vault)
        with v.repo.read_lock():
            head = v.snapshot().commit
        names = [n for n, vid in self._index.entries().items() if vid == v.vault_id]
        return {"vaultId": str(v.vault_id), "name": names[0] if names else str(v.vault_id),
                "root": self._trust.pinned_root(v.vault_id), "head": head}

    def knows(self, vault: str, commit: str) -> bool:
        """Whether ``commit`` is in the vault's verified history (its head or an ancestor)."""
        v = self._vault(vault)
        with v.repo.read_lock():
            head = v.snapshot().commit
            try:
                return v.repo.is_ancestor(commit, head)
            except PolykeyError:
                return False

    def ahead_behind(self, vault: str, commit: str) -> list[int] | None:
        """``[ahead, behind]``: commits of our verified head not in ``commit``'s history, and the
        reverse; None when ``commit`` is not held here (never fetched)."""
        v = self._vault(vault)
        with v.repo.read_lock():
            head = v.snapshot().commit
            try:
                v.repo.commit_info(commit)
                return [len(v.repo.new_commits(head, commit)), len(v.repo.new_commits(commit, head))]
            except PolykeyError:
                return None

    def verify(self, vault: str) -> JSON:
        """Walk the whole history and check every commit (signature, author's role as of its parents).

        Returns ``{"ok": True, "commits": n, "head"}``; raises VaultVerificationError naming the first
        bad commit (oldest first) with ``data = {"commit", "reason"}``, or VaultIntegrityError.
        """
        v = self._vault(vault)
        fresh = Vault(v.repo.path, v.vault_id, self.node_key, self._clock, self._rng)  # no cached objects
        try:
            out = _verify(fresh)
        finally:
            fresh.close()
        with v.repo.read_lock():
            v.trusted = None
            v.snapshot()  # against the verified head: VaultRollbackError, VaultStateError; then recorded
        return {"ok": True, "commits": out["commits"], "head": out["head"]}

    def reset_vault(self, vault: str, to: str) -> JSON:
        """Move the vault's branch to commit ``to`` and record it as the verified head (owners only): the
        way out of a rollback or a bad commit. ``to``'s whole history must verify and have the vault's
        pinned root. Returns ``{"name", "vaultId", "commit", "previous", "pending"}``
        (``pending``: other vaults a rebuilt state file left to verify in full at their next use).
        """
        v = self._vault(vault)
        out = {"name": vault, "vaultId": str(v.vault_id), **self._trust.reset(v, to)}
        with self._mutex:
            self._upgrade_tried.discard(v.vault_id)  # a version 1 commit reset to is upgraded at next use
        return out

    # -- sharing (DESIGN.md section 6) ------------------------------------------------

    def share_vault(self, vault: str, node_id: str, role: str = "reader") -> JSON:
        """Make node ``node_id`` a member with ``role`` (owner|writer|reader), or change its role: one
        signed commit, owners only (VaultPermissionError). A new member gets a wrap of the current
        epoch's key. Returns ``{"commit", "nodeId", "role", "changed"}`` (``changed``: ``"added"``,
        ``"role"``, or ``"unchanged"`` with no commit). InvalidInputError for a malformed NodeId, a bad
        role, this node itself, or a backup replica (polykey.vaults.membership.share)."""
        return membership.share(self._vault(vault), NodeId.from_text(node_id), role)

    def unshare_vault(self, vault: str, node_id: str) -> JSON:
        """Remove member ``node_id``: one signed commit (owners only) that starts a new epoch for the
        remaining members and re-encrypts the current tree. History it already had stays readable to
        it. Returns ``{"commit", "nodeId", "epoch", "rotate"}``, ``rotate`` the sorted paths of every
        secret it could read (to be changed). InvalidInputError for a malformed NodeId, a node that is
        not a member, or the last owner (polykey.vaults.membership.unshare)."""
        return membership.unshare(self._vault(vault), NodeId.from_text(node_id))

    # -- sync bookkeeping (polykey.vaults.syncbook) -------------------------------------

    def trust_node(self, node_id: str, auto_accept: bool = False) -> JSON:
        """Trust ``node_id``; with ``auto_accept`` its invites are accepted without a person.
        Returns ``{"nodeId", "autoAccept"}``. InvalidInputError for a malformed NodeId or this node."""
        node = NodeId.from_text(node_id)
        if node == self.node_key.node_id:
            raise InvalidInputError("this node cannot trust itself")
        self._book.trust(node, bool(auto_accept))
        return {"nodeId": str(node), "autoAccept": bool(auto_accept)}

    def untrust_node(self, node_id: str) -> JSON:
        """Trust ``node_id`` no more. Returns ``{"nodeId", "removed": bool}`` (whether it was trusted)."""
        node = NodeId.from_text(node_id)
        return {"nodeId": str(node), "removed": self._book.untrust(node)}

    def trusted_nodes(self) -> list[JSON]:
        """Every trusted node, sorted: ``[{"nodeId", "autoAccept"}]``."""
        return sorted(({"nodeId": str(n), "autoAccept": a} for n, a in self._book.trusted().items()),
                      key=lambda r: r["nodeId"])

    def store_invite(self, vault_id: str, root: str, head: str, sender: str, role: str, name: str) -> bool:
        """Keep an invite received from ``sender`` (received now); whether it was stored (bounded per
        sender and in all: polykey.vaults.syncbook.SyncBook.add_invite). InvalidInputError for a
        malformed VaultId, commit id, NodeId, role or name."""
        if role not in ROLE_BYTES:
            raise InvalidInputError("an invite's role is owner, writer or reader")
        inv = Invite(VaultId.from_text(vault_id), root, head, NodeId.from_text(sender), ROLE_BYTES[role], name,
                     int(self._clock()))
        return self._book.add_invite(inv)

    def list_invites(self) -> list[JSON]:
        """The invites held: ``[{"vaultId", "root", "head", "from", "role", "name", "received", "held"}]``
        (``held``: this node already has that vault), sorted by VaultId then sender."""
        held = set(self._index.entries().values())
        roles = {b: r for r, b in ROLE_BYTES.items()}
        return [{"vaultId": str(i.vault_id), "root": i.root, "head": i.head, "from": str(i.sender),
                 "role": roles[i.role], "name": i.name, "received": i.received, "held": i.vault_id in held}
                for i in self._book.invites()]

    def drop_invites(self, vault_id: str, sender: str | None = None) -> int:
        """Drop the invites for ``vault_id`` (only ``sender``'s, if given); how many were dropped."""
        return self._book.drop_invites(VaultId.from_text(vault_id),
                                       None if sender is None else NodeId.from_text(sender))

    def peer_seen(self, vault: str, peer: str, head: str) -> bool:
        """Record that ``peer`` showed ``head`` of ``vault`` and that this node synced with it now;
        whether it was recorded (False: the node's state holds no record of the vault)."""
        return self._book.saw(self._resolve(vault), NodeId.from_text(peer), head, int(self._clock()))

    def peer_states(self, vault: str) -> list[JSON]:
        """What each peer last showed of ``vault``: ``[{"nodeId", "head", "lastSync"}]`` (unix seconds,
        0 = never), sorted by NodeId bytes."""
        return [{"nodeId": str(p.node), "head": p.head, "lastSync": p.last_sync}
                for p in self._book.peers(self._resolve(vault))]

    # -- secrets -------------------------------------------------------------------

    def set_secret(self, vault: str, path: str, value: bytes) -> JSON:
        """Create or replace one secret (one commit). Parent directories are created.

        Returns ``{"path", "commit", "created": bool}``. SecretIsDirectoryError if ``path`` is a
        directory, SecretNotDirectoryError if a parent is a secret.
        """
        check_value(value)
        return ops.set_secret(self._vault(vault), split_path(path), value)

    def get_secret(self, vault: str, path: str, commit: str | None = None) -> bytes:
        """The value of a secret (at HEAD, or as of ``commit``): a new object nothing else holds,
        which the agent zeroes once it has replied (docs/security.md "Memory"). Never cache it.

        SecretNotFoundError, SecretIsDirectoryError, VaultIntegrityError if it fails authentication.
        """
        return self._vault(vault).read(split_path(path), commit)

    def list_secrets(
        self, vault: str, path: str = "", recursive: bool = False, commit: str | None = None
    ) -> list[JSON]:
        """Entries under directory ``path``, sorted: ``[{"path", "name", "type"}]``.

        ``type`` is ``"secret"`` or ``"dir"``; with ``recursive`` every descendant is listed.
        Listing a secret's path returns just that secret.
        """
        parts = split_path(path, allow_root=True)
        v = self._vault(vault)
        with v.repo.read_lock():
            snap = v.snapshot(commit)
            e = v.find(snap, parts)
            if e is None:
                raise SecretNotFoundError(f"no secret or directory {path!r} in this vault")
            if e.kind == BLOB:
                return [{"path": "/".join(parts), "name": parts[-1], "type": "secret"}]
            keys = v.epoch_keys(snap)
            key = (v.vault_id.raw, parts, recursive)
            cached = self.listings.get(key)
            same_tree = cached is not None and cached[:2] == (keys.commitment, e.oid)  # trees never change
            if cached is not None and same_tree and cached[2] is not None:
                return list(cached[2])  # the rows are shared: callers read them, never change them
            rows = [
                {"path": "/".join(p), "name": p[-1], "type": "secret" if found.kind == BLOB else "dir"}
                for p, found in v.walk(snap, e.oid, parts, recursive)
            ]
        rows.sort(key=lambda r: r["path"])
        # Keep the answer only when the directory was listed unchanged twice in a row: a vault that
        # is written between listings would only churn memory with answers nobody asks for again.
        self.listings.put(key, (keys.commitment, e.oid, rows if same_tree else None))
        return list(rows)

    def remove(self, vault: str, path: str, recursive: bool = False) -> JSON:
        """Remove a secret, or a directory with ``recursive`` (or an empty one without).

        Returns ``{"commit", "removed": n_secrets}``.
        """
        return ops.remove(self._vault(vault), split_path(path), recursive)

    def move(self, vault: str, src: str, dst: str) -> JSON:
        """Rename a secret or directory (one commit). Into ``dst`` if it is an existing directory.

        Returns ``{"path", "count", "commit"}`` (the final path, the number of secrets moved).
        """
        return ops.transfer(self._vault(vault), split_path(src), split_path(dst, allow_root=True), keep_source=False)

    def copy(self, vault: str, src: str, dst: str) -> JSON:
        """Copy a secret or directory (one commit); like :meth:`move` for the destination."""
        return ops.transfer(self._vault(vault), split_path(src), split_path(dst, allow_root=True), keep_source=True)

    def mkdir(self, vault: str, path: str, parents: bool = True) -> JSON:
        """Create an (empty) directory. Returns ``{"path", "commit"}``.

        SecretExistsError if the directory exists, SecretNotDirectoryError if a secret is there.
        """
        return ops.mkdir(self._vault(vault), split_path(path), parents)

    def stat(self, vault: str, path: str) -> JSON:
        """``{"path", "type", "size", "entries", "created", "modified", "author", "revisions", "commit"}``.

        ``size`` is the value's length for a secret (``entries`` None), ``entries`` the number of
        children for a directory (``size`` None).

        ``created``/``modified`` are unix seconds of the first/last commit that wrote it, ``author``
        the NodeId of the last writer, ``revisions`` the number of commits that changed it.
        """
        return _history.stat(self._vault(vault), split_path(path, allow_root=True))

    def history(self, vault: str, path: str, limit: int | None = None) -> list[JSON]:
        """Revisions of one secret, newest first: ``[{"commit", "parents", "time", "author", "message",
        "action", "size", "type"}]``.

        ``action`` is ``"created"``, ``"modified"`` or ``"removed"``; ``size`` and ``type`` describe
        the path after that commit (None when removed). SecretNotFoundError if no commit ever
        wrote the path.
        """
        if limit is not None and not 1 <= limit <= MAX_LOG_LIMIT:
            raise InvalidInputError("the history limit must be a positive number")
        rows = _history.history(self._vault(vault), split_path(path), limit)
        if not rows:
            raise SecretNotFoundError(f"no secret or directory {path.strip('/')!r} in this vault's history")
        return rows

    def revert(self, vault: str, path: str, commit: str) -> JSON:
        """Write the secret's value as of ``commit`` back as a new commit.

        Returns ``{"path", "created", "commit", "revertedTo"}`` (the full id of ``commit``).
        """
        v = self._vault(vault)
        parts = split_path(path)
        value = v.read(parts, commit)
        result = ops.set_secret(v, parts, value, message="revert secret\n")
        result["revertedTo"] = v.repo.resolve(commit)
        return result

    def generate(
        self,
        vault: str,
        path: str,
        length: int = DEFAULT_LENGTH,
        charset: str = DEFAULT_CHARSET,
        reveal: bool = False,
        replace: bool = True,
    ) -> JSON:
        """Store a random password of ``length`` characters from ``charset`` (a name in CHARSETS or a
        literal set). Returns ``{"path", "created", "commit", "length"}`` plus ``"value"`` only when ``reveal``.
        Without ``replace``, SecretExistsError if the secret exists (checked under the write lock).
        """
        value = generate_password(length, charset, self._rng)
        result = ops.set_secret(self._vault(vault), split_path(path), value.encode("utf-8"),
                                message="generate secret\n", replace=replace)
        result["length"] = length
        if reveal:
            result["value"] = value
        return result

    def _parse_items(self, items: dict[str, bytes]) -> dict[tuple[str, ...], bytes]:
        parsed: dict[tuple[str, ...], bytes] = {}
        for path, value in items.items():
            check_value(value)
            parts = split_path(path)
            if parts in parsed:
                raise InvalidInputError(f"{path!r} appears twice in the import")
            parsed[parts] = value
        return parsed

    def stage_import(self, items: dict[str, bytes], token: str | None = None) -> JSON:
        """Hold part of an import too large for one request (polykey.vaults.staging).

        ``token`` None starts a new import. Returns ``{"token", "count"}`` (the items held so far);
        :meth:`import_secrets` with ``stage=token`` commits them. Nothing is written before.
        """
        return dict(zip(("token", "count"), self._staging.add(token, self._parse_items(items))))

    def import_secrets(self, vault: str, items: dict[str, bytes], stage: str | None = None) -> JSON:
        """Write many secrets in one commit: ``items``, plus those staged under ``stage``.

        Returns ``{"commit", "count", "created"}`` (``created``: how many paths were new).
        """
        parsed = self._parse_items(items)
        if stage is not None:
            staged, size = self._staging.take(stage)
            merge_items(staged, parsed, size)
            parsed = staged
        else:
            merge_items({}, parsed, 0)  # the same limits as a staged import
        return ops.import_secrets(self._vault(vault), parsed)

    # -- sync: serving (issue 12; the keynode's sync service calls these for a proven peer) ----------

    def _shared(self, peer: NodeId, vault_id: str) -> tuple[Vault, Snapshot, str]:
        """The vault, its verified head and ``peer``'s role there (a member's role, or ``replica``).
        One SyncRefusedError for every other case (unknown or malformed id, damaged vault, non-member,
        removed member): no existence oracle."""
        role: str | None = None
        try:
            vid = VaultId.from_text(vault_id) if isinstance(vault_id, str) else None
            if vid is not None and vid in self._index.entries().values():
                v = self._vault(str(vid))
                with v.repo.read_lock():
                    snap = v.snapshot()
                    role = snap.members.role_of(peer)
                    if role is None and peer in replicas_of(v, snap):
                        role = "replica"
        except PolykeyError:
            role = None
        if role is None:
            raise SyncRefusedError(REFUSED)
        return v, snap, role

    def serve_heads(self, peer: NodeId, vault_ids: list[str]) -> dict[str, str]:
        """VaultId text -> verified head, for each listed vault this node holds and shares with
        ``peer`` (a member or replica as of that head); others are silently left out. At most
        :data:`MAX_SERVE_IDS` ids (InvalidInputError)."""
        if not isinstance(vault_ids, list) or len(vault_ids) > MAX_SERVE_IDS:
            raise InvalidInputError(f"ask for at most {MAX_SERVE_IDS} vaults at once")
        out = {}
        for vault_id in dict.fromkeys(i for i in vault_ids if isinstance(i, str)):
            with contextlib.suppress(SyncRefusedError):
                out[vault_id] = self._shared(peer, vault_id)[1].commit
        return out

    def serve_scan(self, peer: NodeId) -> list[JSON]:
        """Every vault shared with ``peer``: ``[{"vaultId", "name" (our local name), "role" (the peer's),
        "head", "root" (the pinned root)}]``, sorted by name."""
        out = []
        for name, vid in sorted(self._index.entries().items()):
            with contextlib.suppress(SyncRefusedError):
                _v, snap, role = self._shared(peer, str(vid))
                root = self._trust.pinned_root(vid)
                if root is not None:
                    out.append({"vaultId": str(vid), "name": name, "role": role, "head": snap.commit, "root": root})
        return out

    def serve_plan(self, peer: NodeId, vault_id: str, want: str, haves: list[str]) -> list[tuple[int, str]]:
        """``(type, oid)`` of the objects of commit ``want`` that ``peer``, holding ``haves`` (at most
        :data:`MAX_ASKED_HAVES`), lacks (:func:`polykey.vaults.transfer.plan`). SyncRefusedError unless
        the vault is shared with ``peer`` and ``want`` is a commit of its verified history here."""
        if not isinstance(haves, list) or len(haves) > MAX_ASKED_HAVES:
            raise InvalidInputError(f"a fetch names at most {MAX_ASKED_HAVES} commits it has")
        v, snap, _role = self._shared(peer, vault_id)
        with v.repo.read_lock():
            try:
                known = transfer.is_oid(want) and v.repo.is_ancestor(want, snap.commit)
            except PolykeyError:
                known = False
            if not known:
                raise SyncRefusedError("that commit is not in the vault's verified history on this node")
            return transfer.plan(v, want, haves)

    def serve_read(self, vault_id: str, refs: list[tuple[int, str]]) -> list[bytes]:
        """The raw content of each ``(type, oid)`` (at most :data:`MAX_READ_REFS`), as a plan of
        :meth:`serve_plan` listed them: the caller serves only refs of a plan it made for that peer.
        SyncRefusedError for a vault not held; VaultIntegrityError for a missing object."""
        if not isinstance(refs, list) or len(refs) > MAX_READ_REFS:
            raise InvalidInputError(f"a read names at most {MAX_READ_REFS} objects")
        try:
            vid = VaultId.from_text(vault_id)
        except (InvalidInputError, TypeError):
            raise SyncRefusedError(REFUSED) from None
        if vid not in self._index.entries().values():
            raise SyncRefusedError(REFUSED)
        v = self._vault(str(vid))
        with v.repo.read_lock():
            return [transfer.read_object(v, obj_type, oid) for obj_type, oid in refs]

    def sync_haves(self, vault: str, extra: Sequence[str] = ()) -> list[str]:
        """What to send as haves when fetching ``vault``: :func:`polykey.vaults.transfer.have_list` of
        its verified head, then the commits of ``extra`` (e.g. the heads peers last showed) held here."""
        v = self._vault(vault)
        with v.repo.read_lock():
            return transfer.have_list(v, v.snapshot().commit, extra)

    # -- sync: receiving ---------------------------------------------------------------------------

    def _verify_received(self, qv: Vault, head: str, verified: str) -> None:
        """Verify the commits of ``head`` not in the history of ``verified`` (in the quarantine ``qv``).
        A head that does not descend from ``verified`` must share its history: its new commits' parents
        outside them are in ``verified``'s history, and none is a root."""
        if qv.repo.is_ancestor(verified, head):
            verify_new(qv, head, verified)
            return
        commits = qv.repo.new_commits(head, verified)
        new = set(commits)
        for oid in commits:
            parents = qv.repo.commit_info(oid).parents
            if not parents or any(p not in new and not qv.repo.is_ancestor(p, verified) for p in parents):
                raise transfer.reject(
                    f"the head {head} belongs to another history (commit {oid} is not on this vault's)")
        verify_commits(qv, commits)

    def receive(self, vault: str, peer: NodeId, head: str, incoming: Incoming) -> JSON:
        """Install what ``peer`` sent for ``vault`` (its verified head ``head`` and the objects this node
        lacked) and bring ``head`` in (:func:`polykey.vaults.merge.integrate`).

        Under the vault's write lock: the transfer must be complete; its objects are written as one
        pack in a quarantine repository that reads the vault's objects, the new commits verified
        there (section 8, incrementally from this node's verified head), then the pack is moved into
        the vault, the merge's own commits self-checked, the branch moved and the new head recorded as
        verified, with ``head`` as what ``peer`` last showed (``peer_states``). Any failure:
        SyncRejectedError (``data["reason"]``), the quarantine removed, branch and state unchanged. Returns ``{"before", "after", "action", "conflicts", "dropped",
        "reapplied", "reason", "objects", "bytes"}``.
        """
        if not transfer.is_oid(head):
            raise transfer.reject("the announced head is not a full commit id")
        v = self._vault(vault)
        with v.repo.write_lock():
            ours = v.snapshot().commit  # the guard verified it: it is this node's verified head
            objects_dir = v.repo.path / "objects"
            incoming.check_complete(head, lambda oid: transfer.has_object(v, oid))
            if incoming.count or not v.repo.is_ancestor(head, ours):
                q = transfer.quarantine(self._dir, self._rng(16).hex(), objects_dir)
                try:
                    idx = transfer.write_pack(q, incoming)
                    qv = Vault(q, v.vault_id, self.node_key, self._clock, self._rng)
                    try:
                        self._verify_received(qv, head, ours)
                    except PolykeyError as e:
                        raise transfer.rejected(e) from None
                    finally:
                        qv.close()
                    if idx is not None:
                        transfer.install_pack(idx, objects_dir)
                finally:
                    transfer.drop(q)
                v.repo._reopen()  # noqa: SLF001 - a fresh handle sees the new pack at once
            try:
                outcome = merge.integrate(v, ours, head)
                if outcome.written:
                    verify_commits(v, list(outcome.written))
            except PolykeyError as e:
                raise transfer.rejected(e).within("this node's merge failed its own check") from None
            seen = SyncBook.entry(peer, head, int(self._clock()))  # recorded with the head: one write
            if outcome.head == ours:
                self._book.saw(v.vault_id, peer, head, seen.last_sync)
            elif v.repo.is_ancestor(ours, outcome.head):
                v.repo.set_head(outcome.head)  # a crash before the record: the next open verifies it
                self._trust.accepted(v, outcome.head, seen)
            else:  # adopted, or re-applied on their head: crash-safe in three steps
                self._trust.replace_head(v, ours, outcome.head, seen)
            v.trusted = outcome.head
        return {"before": ours, "after": outcome.head, "action": outcome.action,
                "conflicts": list(outcome.conflicts), "dropped": list(outcome.dropped),
                "reapplied": outcome.reapplied, "reason": outcome.reason,
                "objects": incoming.count, "bytes": incoming.nbytes}

    def clone(self, vault_id: str, root: str, head: str, name: str, incoming: Incoming, sender: NodeId,
              invited: bool = True) -> JSON:
        """Install a vault this node does not hold yet, sent by ``sender`` whose invite pinned ``root``.

        The whole history of ``head`` is verified in a quarantine repository: its root MUST be
        ``root``, its ``.pk/vault`` MUST name ``vault_id``, this node MUST be a member and ``sender`` an
        owner as of ``head`` (else SyncRejectedError). Then the repository is renamed into place, the
        root pinned and ``head`` recorded as verified, and ``name`` added to the index. A crash leaves
        no vault or the whole verified one (a quarantine is swept at the next unlock).
        VaultExistsError if this VaultId is held or ``name`` is taken; InvalidInputError for a bad
        name or id. Returns ``{"name", "vaultId", "head", "commits", "objects", "bytes"}``.
        """
        name = validate_new_name(name)
        vid = VaultId.from_text(vault_id)
        if not (transfer.is_oid(root) and transfer.is_oid(head)):
            raise InvalidInputError("a root and a head are full commit ids")
        self._check_clone_target(vid, name)
        incoming.check_complete(head, lambda _oid: False)
        q = transfer.quarantine(self._dir, self._rng(16).hex(), None)
        try:
            transfer.write_pack(q, incoming)
            qv = Vault(q, vid, self.node_key, self._clock, self._rng)
            try:
                commits = self._verify_clone(qv, root, head, sender, invited)
                qv.repo.set_head(head)
            finally:
                qv.close()
            fsync_tree(q)
        except BaseException:
            transfer.drop(q)
            raise
        with self._clone_mutex:
            self._install_clone(q, vid, root, head, name)
        return {"name": name, "vaultId": str(vid), "head": head, "commits": commits,
                "objects": incoming.count, "bytes": incoming.nbytes}

    def _install_clone(self, q: Path, vid: VaultId, root: str, head: str, name: str) -> None:
        """Rename the verified quarantine ``q`` into place, pin it and name it (under the clone mutex)."""
        path = self._repo_path(vid)
        try:
            self._check_clone_target(vid, name)  # again: another clone may have finished meanwhile
            if path.exists():  # a clone killed after its rename and before the index named it
                trash = path.with_name(f".trash-{path.name}")
                os.rename(path, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(q, path)
            fsutil.fsync_dir(self._dir)
        except BaseException:
            transfer.drop(q)
            raise

        def add(entries: dict[str, VaultId]) -> None:
            if name in entries:
                raise VaultExistsError(f"a vault named {name!r} already exists")
            if vid in entries.values():
                raise VaultExistsError("this node already holds that vault (a clone of a VaultId already held)")
            entries[name] = vid

        try:
            self._trust.cloned(vid, root, head)
            self._index.update(add)
        except BaseException:
            with contextlib.suppress(PolykeyError):
                self._trust.forget(vid)
            shutil.rmtree(path, ignore_errors=True)
            raise

    def _check_clone_target(self, vid: VaultId, name: str) -> None:
        entries = self._index.entries()
        if vid in entries.values():
            raise VaultExistsError("this node already holds that vault (a clone of a VaultId already held)")
        if name in entries:
            raise VaultExistsError(f"a vault named {name!r} already exists")

    def _verify_clone(self, qv: Vault, root: str, head: str, sender: NodeId, invited: bool) -> int:
        """The whole history of ``head`` verified, with the pinned root, this node a member and the
        sender an owner (``invited``: it sent an invite) or else a member; the number of commits.
        SyncRejectedError otherwise."""
        try:
            out = _verify(qv, head)
            members = qv.load(head).members
        except PolykeyError as e:
            raise transfer.rejected(e) from None
        if out["root"] != root:
            raise transfer.reject(f"the history's root {out['root']} is not the root {root} the invite pinned")
        if members.role_of(qv.me) is None:
            raise transfer.reject("the vault is not shared with this node")
        if not invited and members.role_of(sender) is not None:
            return int(out["commits"])  # cloned from what a member lists (`pk vaults scan`)
        if members.role_of(sender) != OWNER:
            raise transfer.reject(
                f"the invite's sender {sender} is not an owner of the vault (an invite only an owner may send)")
        return int(out["commits"])
