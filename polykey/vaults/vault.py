"""One open vault: its keys, snapshots, and the tree reads and writes (docs/spec/vault-format.md).

A :class:`Vault` caches per open repository what a read needs: the HEAD snapshot
(commit, tree, ``.pk/`` metadata), the derived keys of each epoch and encrypted
names, so a ``get`` is one ref read, one tree lookup, one blob read and one AEAD
open. Every operation holds the repository's mutex; writes also hold its file lock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from polykey import crypto, fsutil
from polykey.crypto import memory
from polykey.errors import (
    CommitNotFoundError,
    InvalidInputError,
    NotForThisKeyError,
    SecretIsDirectoryError,
    SecretNotDirectoryError,
    SecretNotFoundError,
    VaultAccessError,
    VaultFormatError,
    VaultIntegrityError,
    VaultPermissionError,
)
from polykey.ids import VaultId
from polykey.vaults.format import (
    DIR_MARKER,
    MAX_DEPTH,
    OWNER,
    V2,
    WRITER,
    EpochKeys,
    Members,
    VaultInfo,
    WrappedKeys,
    join_path,
    keys_file_name,
)
from polykey.vaults.cache import Listed, NameCache, TreeNames
from polykey.vaults.identity import NodeKey
from polykey.vaults.repo import BLOB, TREE, Change, Entry, GitRepo

PK_DIR = ".pk"
#: How a directory's on-disk ``.keep`` marker appears among *plain* paths (in ``walk`` and in the
#: changes a write builds). A user's own secret may be named ``.keep``: its name is encrypted like any
#: other, so the marker needs a plain key no valid path component can equal (NUL is never allowed).
MARKER = "\0.keep"
Clock = Callable[[], float]
Parts = tuple[str, ...]
_NAME_CACHE_LIMIT = 40_000  # names per open vault, both ways together (~6 MB at most)
_METADATA_LIMIT = 8 * 1024 * 1024


class Guard(Protocol):
    """What a vault asks before it uses a head it has not checked, and tells after it committed
    (polykey.vaults.trust.VerifiedHeads; docs/spec/vault-format.md section 10.3)."""

    def check(self, v: Vault, head: str) -> None: ...

    def advanced(self, v: Vault, head: str) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """The vault as of one commit."""

    commit: str
    tree: str
    info: VaultInfo
    members: Members
    keys: EpochKeys | None  # None when this node has no wrapped key at that epoch


class Vault:
    """An open vault repository, for one node key (which signs its commits and opens its keys)."""

    def __init__(self, path: Path, vault_id: VaultId, key: NodeKey, clock: Clock, rng: crypto.Rng,
                 tree_names: TreeNames | None = None) -> None:
        self.repo = GitRepo(path)
        self.vault_id = vault_id
        self.key = key
        self.me = key.node_id
        self.clock = clock
        self.rng = rng
        self._head: Snapshot | None = None
        #: Checks every head before it is used (None: nothing is checked, as in `verify` itself).
        self.guard: Guard | None = None
        #: The head the guard last accepted.
        self.trusted: str | None = None
        self._metadata: dict[str, tuple[VaultInfo, Members]] = {}
        #: Epoch keys by their identity: the key commitment (a version 1 keys file: its blob id).
        self._keys: dict[str, EpochKeys] = {}
        #: The keys (or None: no wrap for this node) a ``.pk`` tree gives, by its tree id.
        self._pk_keys: dict[str, EpochKeys | None] = {}
        #: Plain and stored path components of this vault, both ways.
        self.names = NameCache(_NAME_CACHE_LIMIT)
        #: Decrypted tree listings (shared by the service's vaults, or this vault's own).
        self.tree_names = tree_names if tree_names is not None else TreeNames(max_trees=256, max_bytes=1 << 20)

    @classmethod
    def create(cls, path: Path, info: VaultInfo, key: NodeKey, clock: Clock, rng: crypto.Rng,
               tree_names: TreeNames | None = None) -> Vault:
        """Build the repository beside ``path`` and rename it into place (crash-atomic). ``info`` is
        :meth:`VaultInfo.created` for ``key``'s NodeId: the VaultId is bound to its creator (spec 4.1)."""
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        repo = GitRepo.init(tmp)
        me = key.node_id
        if not info.bound_to(me):
            raise InvalidInputError("a new vault's VaultId must derive from its creator's NodeId")
        vault_id = info.vault_id
        secret = rng(32)
        files = {
            (PK_DIR, "vault"): info.encode(),
            (PK_DIR, "members"): Members(((me, OWNER),)).encode(),
            (PK_DIR, "keys", keys_file_name(0)): WrappedKeys.create(0, secret, [me], vault_id).encode(),
        }
        memory.wipe(secret)
        with repo.write_lock():
            changes: dict[Parts, Change] = {k: Entry(BLOB, repo.write_blob(v)) for k, v in files.items()}
            tree = repo.apply(None, changes)
            repo.commit(tree, [], "create vault\n", key, when=int(clock()))
        repo.close()
        _fsync_tree(tmp)
        os.rename(tmp, path)
        fsutil.fsync_dir(path.parent)
        return cls(path, vault_id, key, clock, rng, tree_names)

    def close(self) -> None:
        with self.repo.read_lock():
            self.repo.close()

    def wipe_keys(self) -> None:
        """Zero the cached epoch keys in memory (the agent locks): only once nothing uses the vault."""
        keys, self._keys, self._pk_keys = list(self._keys.values()), {}, {}
        self.names.clear()
        for k in keys:
            memory.wipe(k.content_key)
            memory.wipe(k.name_key)

    # -- snapshots and keys ---------------------------------------------------------

    def snapshot(self, commit: str | None = None) -> Snapshot:
        """HEAD (cached while the branch does not move), or the given commit: with a guard, only a
        verified head, and only a commit of its history."""
        if commit is not None:
            oid = self.repo.resolve(commit)
            if self.guard is not None and not self.repo.is_ancestor(oid, self.snapshot().commit):
                raise CommitNotFoundError(f"{commit} is not a commit of this vault's verified history")
            return self.load(oid)
        head = self.repo.head()
        if head is None:
            raise VaultIntegrityError("the vault has no history (its branch is missing)")
        if self.guard is not None and head != self.trusted:
            with self.repo.read_lock():
                self._head = None
                self.guard.check(self, head)
                self.trusted = head
        cached = self._head
        if cached is not None and cached.commit == head:
            return cached
        self._head = self.load(head)
        return self._head

    def load(self, commit: str) -> Snapshot:
        tree = self.repo.commit_info(commit).tree
        info, members = self.metadata(tree)
        return Snapshot(commit, tree, info, members, self._unwrap_keys(tree, info))

    def metadata(self, tree: str) -> tuple[VaultInfo, Members]:
        """The ``.pk/vault`` and ``.pk/members`` of a tree (cached by the ``.pk`` tree id)."""
        pk = self.repo.entry(tree, PK_DIR)
        if pk is None or pk.kind != TREE:
            raise VaultFormatError("the vault has no .pk metadata")
        cached = self._metadata.get(pk.oid)
        if cached is not None:
            return cached
        info = VaultInfo.decode(self._metadata_file(pk.oid, "vault"))
        members = Members.decode(self._metadata_file(pk.oid, "members"))
        if info.vault_id != self.vault_id:
            raise VaultIntegrityError("the vault metadata names another vault")
        self._metadata[pk.oid] = (info, members)
        return info, members

    def _metadata_file(self, pk_tree: str, name: str) -> bytes:
        e = self.repo.entry(pk_tree, name)
        if e is None or e.kind != BLOB:
            raise VaultFormatError(f"the vault has no .pk/{name}")
        if self.repo.blob_size(e.oid) > _METADATA_LIMIT:
            raise VaultFormatError(f".pk/{name} is too large")
        return self.repo.read_blob(e.oid)

    def _unwrap_keys(self, tree: str, info: VaultInfo) -> EpochKeys | None:
        """The keys of the current epoch as wrapped for this node in ``tree``; None if it holds no wrap.

        Cached by the key's identity (its commitment), never by the epoch number alone: two
        histories may both have an epoch ``e``, with different secrets (spec 4.3).
        """
        pk = self.repo.entry(tree, PK_DIR)
        if pk is not None and pk.oid in self._pk_keys:  # the same .pk tree: the same keys file
            return self._pk_keys[pk.oid]
        keys = self._open_keys(tree, info)
        if pk is not None:
            self._pk_keys[pk.oid] = keys
        return keys

    def _open_keys(self, tree: str, info: VaultInfo) -> EpochKeys | None:
        epoch, name = info.epoch, f"{PK_DIR}/keys/{keys_file_name(info.epoch)}"
        e = self.repo.entry(tree, name)
        if e is None or e.kind != BLOB:
            raise VaultFormatError(f"the vault has no wrapped keys for epoch {epoch}")
        wrapped = WrappedKeys.decode(self.repo.read_blob(e.oid))
        if wrapped.epoch != epoch:
            raise VaultFormatError("the vault's wrapped keys are for another epoch")
        if info.version >= V2 and wrapped.commitment is None:
            raise VaultFormatError(f"{name} has no key commitment (format version 2 requires one)")
        if not wrapped.names(self.me):
            return None  # a later commit may add a wrap for this node in this epoch
        ident = wrapped.commitment.hex() if wrapped.commitment is not None else e.oid
        cached = self._keys.get(ident)
        if cached is not None:
            return cached
        secret = wrapped.open(self.key, self.vault_id)
        try:
            keys = self._keys[ident] = EpochKeys.derive(self.vault_id, epoch, secret)
        finally:
            memory.wipe(secret)
        return keys

    def epoch_keys(self, snap: Snapshot) -> EpochKeys:
        """The snapshot's epoch keys; VaultAccessError if this node holds no wrap of them."""
        if snap.keys is None:
            raise VaultAccessError()
        return snap.keys

    def role(self, snap: Snapshot | None = None) -> str | None:
        return (snap or self.snapshot()).members.role_of(self.me)

    # -- names and lookups ----------------------------------------------------------

    def encrypt_path(self, keys: EpochKeys, parts: Parts) -> Parts:
        """The stored (encrypted) name of each component of a plain path (cached)."""
        return tuple(self.names.stored(keys, part) for part in parts)

    def find(self, snap: Snapshot, parts: Parts) -> Entry | None:
        """The entry at plain path ``parts`` (the root tree for ``()``), or None."""
        if not parts:
            return Entry(TREE, snap.tree)
        return self.repo.entry(snap.tree, "/".join(self.encrypt_path(self.epoch_keys(snap), parts)))

    def check_parents(self, snap: Snapshot, parts: Parts) -> None:
        """SecretNotDirectoryError if a proper prefix of ``parts`` is a secret."""
        for k in range(len(parts) - 1, 0, -1):
            e = self.find(snap, parts[:k])
            if e is not None:
                if e.kind == BLOB:
                    raise SecretNotDirectoryError(f"{join_path(parts[:k])} is a secret, not a directory")
                return

    def listing(self, keys: EpochKeys, tree: str) -> tuple[Listed, ...]:
        """The stored and plain names of each entry of ``tree``, decrypted once per tree
        (:mod:`polykey.vaults.cache`). The plain name is None for ``.pk`` and directory markers."""
        key = (self.vault_id.raw, keys.commitment, tree)
        found = self.tree_names.get(key)
        if found is not None:
            return found
        entries = tuple(
            Listed(name, None if name in (PK_DIR, DIR_MARKER) else self.names.plain(keys, name), e)
            for name, e in self.repo.list_tree(tree)
        )
        self.tree_names.put(key, entries)
        return entries

    def walk(self, snap: Snapshot, tree: str, prefix: Parts, recursive: bool,
             markers: bool = False) -> Iterator[tuple[Parts, Entry]]:
        """``(plain parts, entry)`` under ``tree``; ``.pk`` never, dir markers only with ``markers``."""
        keys = self.epoch_keys(snap)
        for listed in self.listing(keys, tree):
            e = listed.entry
            if listed.plain is None:
                if listed.stored == PK_DIR and prefix:
                    keys.decrypt_name(listed.stored)  # below the root `.pk` is no name of ours: malformed
                if listed.stored == DIR_MARKER and markers and e.kind == BLOB:
                    yield prefix + (MARKER,), e
                continue
            parts = prefix + (listed.plain,)
            yield parts, e
            if recursive and e.kind == TREE:
                if len(parts) > MAX_DEPTH:  # no secret path is this deep: a damaged or forged tree
                    raise VaultIntegrityError(f"a vault tree is nested deeper than {MAX_DEPTH} levels")
                yield from self.walk(snap, e.oid, parts, True, markers)

    # -- secrets --------------------------------------------------------------------

    def decrypt(self, snap: Snapshot, parts: Parts, oid: str) -> bytes:
        return self.epoch_keys(snap).decrypt_secret(join_path(parts), self.repo.read_blob(oid))

    def encrypt(self, snap: Snapshot, parts: Parts, value: bytes) -> str:
        blob = self.epoch_keys(snap).encrypt_secret(join_path(parts), value, rng=self.rng)
        return self.repo.write_blob(blob)

    def encrypt_many(self, snap: Snapshot, items: list[tuple[Parts, bytes]]) -> list[str]:
        keys = self.epoch_keys(snap)
        return self.repo.write_blobs([keys.encrypt_secret(join_path(p), v, rng=self.rng) for p, v in items])

    def read(self, parts: Parts, commit: str | None = None) -> bytes:
        with self.repo.read_lock():
            snap = self.snapshot(commit)
            e = self.find(snap, parts)
            when = "" if commit is None else f" as of commit {snap.commit[:12]}"
            if e is None:
                raise SecretNotFoundError(f"no secret {join_path(parts)!r} in this vault{when}")
            if e.kind == TREE:
                raise SecretIsDirectoryError(f"{join_path(parts)} is a directory{when}")
            return self.decrypt(snap, parts, e.oid)

    def write(self, build: Callable[[Snapshot], tuple[dict[Parts, Change], str, dict[str, Any]]]) -> dict[str, Any]:
        """Run ``build(head) -> (changes by plain parts, message, result)`` and commit it."""

        def stored(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, Any]]:
            changes, message, result = build(snap)
            keys = self.epoch_keys(snap)
            return {self.stored_path(keys, p): c for p, c in changes.items()}, message, result

        return self._write((OWNER, WRITER), "it", stored)

    def write_metadata(self, build: Callable[[Snapshot], tuple[dict[Parts, Change], str, dict[str, Any]]]
                       ) -> dict[str, Any]:
        """Like :meth:`write`, owners only, with changes by *stored* path (``.pk/...``)."""
        return self._write((OWNER,), "its members, keys or replicas", build)

    def _write(self, roles: tuple[str, ...], what: str,
               build: Callable[[Snapshot], tuple[dict[Parts, Change], str, dict[str, Any]]]) -> dict[str, Any]:
        with self.repo.write_lock():
            self._head = None
            snap = self.snapshot()
            role = snap.members.role_of(self.me)
            if role not in roles:
                raise VaultPermissionError(
                    f"this node is a {role} of the vault and cannot change {what}" if role else
                    "this node is not a member of the vault"
                )
            changes, message, result = build(snap)
            tree = self.repo.apply(snap.tree, changes)
            # commit times never go back along history (section 8, rule 10): a slow clock is clamped
            when = max(int(self.clock()), self.repo.commit_info(snap.commit).time)
            result["commit"] = self.repo.commit(tree, [snap.commit], message, self.key, when=when)
            if self.guard is not None:
                self.guard.advanced(self, result["commit"])
                self.trusted = result["commit"]
            return result

    def stored_path(self, keys: EpochKeys, parts: Parts) -> Parts:
        """The tree path a plain change path is stored at: names encrypted, :data:`MARKER` as ``.keep``."""
        if parts and parts[-1] == MARKER:
            return self.encrypt_path(keys, parts[:-1]) + (DIR_MARKER,)
        return self.encrypt_path(keys, parts)

    def empty_blob(self) -> str:
        return self.repo.write_blob(b"")


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsutil.fsync_dir(Path(dirpath))


def check_not_root(parts: Parts) -> None:
    if not parts:
        raise InvalidInputError("the vault root cannot be used here")
