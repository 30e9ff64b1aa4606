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
from typing import Any

from polykey import crypto, fsutil
from polykey.crypto import memory, sshsig
from polykey.errors import (
    InvalidInputError,
    SecretIsDirectoryError,
    SecretNotDirectoryError,
    SecretNotFoundError,
    VaultAccessError,
    VaultFormatError,
    VaultIntegrityError,
    VaultPermissionError,
)
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import (
    DIR_MARKER,
    MAX_DEPTH,
    OWNER,
    WRITER,
    EpochKeys,
    Members,
    VaultInfo,
    WrappedKeys,
    join_path,
    keys_file_name,
)
from polykey.vaults.cache import Entry, TreeNames
from polykey.vaults.repo import BLOB, TREE, Change, GitRepo

PK_DIR = ".pk"
#: How a directory's on-disk ``.keep`` marker appears among *plain* paths (in ``walk`` and in the
#: changes a write builds). A user's own secret may be named ``.keep``: its name is encrypted like any
#: other, so the marker needs a plain key no valid path component can equal (NUL is never allowed).
MARKER = "\0.keep"
Clock = Callable[[], float]
Parts = tuple[str, ...]
_NAME_CACHE_LIMIT = 20_000  # encrypted path components per open vault (~5 MB at most)
_META_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    """The vault as of one commit."""

    commit: str
    tree: str
    info: VaultInfo
    members: Members
    keys: EpochKeys | None  # None when this node has no wrapped key at that epoch


def author_email(node: NodeId) -> str:
    return f"{node}@polykey"


class Vault:
    """An open vault repository, for one keypair."""

    def __init__(self, path: Path, vault_id: VaultId, keypair: KeyPair, clock: Clock, rng: crypto.Rng,
                 tree_names: TreeNames | None = None) -> None:
        self.repo = GitRepo(path)
        self.vault_id = vault_id
        self.keypair = keypair
        self.me = keypair.node_id
        self.clock = clock
        self.rng = rng
        self._head: Snapshot | None = None
        self._meta: dict[str, tuple[VaultInfo, Members]] = {}
        self._keys: dict[int, EpochKeys] = {}
        self._names: dict[tuple[int, str], str] = {}
        #: Decrypted tree listings (shared by the service's vaults, or this vault's own).
        self.tree_names = tree_names if tree_names is not None else TreeNames(max_trees=256, max_bytes=1 << 20)

    @classmethod
    def create(cls, path: Path, vault_id: VaultId, keypair: KeyPair, clock: Clock, rng: crypto.Rng,
               tree_names: TreeNames | None = None) -> Vault:
        """Build the repository beside ``path`` and rename it into place (crash-atomic)."""
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        repo = GitRepo.init(tmp)
        me = keypair.node_id
        secret = rng(32)
        files = {
            (PK_DIR, "vault"): VaultInfo(vault_id, 0).encode(),
            (PK_DIR, "members"): Members(((me, OWNER),)).encode(),
            (PK_DIR, "keys", keys_file_name(0)): WrappedKeys.create(0, secret, [me]).encode(),
        }
        with repo.write_lock():
            changes: dict[Parts, Change] = {k: (BLOB, repo.write_blob(v)) for k, v in files.items()}
            tree = repo.apply(None, changes)
            repo.commit(tree, [], str(me), author_email(me), int(clock()), "create vault\n",
                        lambda payload: sshsig.sign(keypair.seed, payload))
        repo.close()
        _fsync_tree(tmp)
        os.rename(tmp, path)
        fsutil.fsync_dir(path.parent)
        return cls(path, vault_id, keypair, clock, rng, tree_names)

    def close(self) -> None:
        with self.repo.read_lock():
            self.repo.close()

    def wipe_keys(self) -> None:
        """Zero the cached epoch keys in memory (the agent locks): only once nothing uses the vault."""
        keys, self._keys = list(self._keys.values()), {}
        for k in keys:
            memory.wipe(k.content_key)
            memory.wipe(k.name_key)

    # -- snapshots and keys ---------------------------------------------------------

    def snapshot(self, commit: str | None = None) -> Snapshot:
        """HEAD (cached while the branch does not move), or the given commit."""
        if commit is not None:
            return self.load(self.repo.resolve(commit))
        head = self.repo.head()
        if head is None:
            raise VaultIntegrityError("the vault has no history (its branch is missing)")
        cached = self._head
        if cached is not None and cached.commit == head:
            return cached
        self._head = self.load(head)
        return self._head

    def load(self, commit: str) -> Snapshot:
        tree = self.repo.commit_info(commit).tree
        info, members = self.meta(tree)
        return Snapshot(commit, tree, info, members, self._epoch_keys(tree, info.epoch))

    def meta(self, tree: str) -> tuple[VaultInfo, Members]:
        """The ``.pk/vault`` and ``.pk/members`` of a tree (cached by the ``.pk`` tree id)."""
        pk = self.repo.entry(tree, PK_DIR)
        if pk is None or pk[0] != TREE:
            raise VaultFormatError("the vault has no .pk metadata")
        cached = self._meta.get(pk[1])
        if cached is not None:
            return cached
        info = VaultInfo.decode(self._meta_file(pk[1], "vault"))
        members = Members.decode(self._meta_file(pk[1], "members"))
        if info.vault_id != self.vault_id:
            raise VaultIntegrityError("the vault metadata names another vault")
        self._meta[pk[1]] = (info, members)
        return info, members

    def _meta_file(self, pk_tree: str, name: str) -> bytes:
        e = self.repo.entry(pk_tree, name)
        if e is None or e[0] != BLOB:
            raise VaultFormatError(f"the vault has no .pk/{name}")
        if self.repo.blob_size(e[1]) > _META_LIMIT:
            raise VaultFormatError(f".pk/{name} is too large")
        return self.repo.read_blob(e[1])

    def _epoch_keys(self, tree: str, epoch: int) -> EpochKeys | None:
        cached = self._keys.get(epoch)
        if cached is not None:
            return cached
        e = self.repo.entry(tree, f"{PK_DIR}/keys/{keys_file_name(epoch)}")
        if e is None or e[0] != BLOB:
            raise VaultFormatError(f"the vault has no wrapped keys for epoch {epoch}")
        wrapped = WrappedKeys.decode(self.repo.read_blob(e[1]))
        if wrapped.epoch != epoch:
            raise VaultFormatError("the vault's wrapped keys are for another epoch")
        secret = wrapped.unwrap(self.keypair.seed, self.me)
        if secret is None:
            return None  # not cached: a later commit may add a wrap for this node in this epoch
        try:
            keys = self._keys[epoch] = EpochKeys.derive(self.vault_id, epoch, secret)
        finally:
            memory.wipe(secret)
        return keys

    def need_keys(self, snap: Snapshot) -> EpochKeys:
        if snap.keys is None:
            raise VaultAccessError()
        return snap.keys

    def role(self, snap: Snapshot | None = None) -> str | None:
        return (snap or self.snapshot()).members.role_of(self.me)

    # -- names and lookups ----------------------------------------------------------

    def enc(self, keys: EpochKeys, parts: Parts) -> Parts:
        out = []
        for part in parts:
            key = (keys.epoch, part)
            name = self._names.get(key)
            if name is None:
                if len(self._names) >= _NAME_CACHE_LIMIT:
                    self._names.clear()
                name = self._names[key] = keys.encrypt_name(part)
            out.append(name)
        return tuple(out)

    def find(self, snap: Snapshot, parts: Parts) -> tuple[str, str] | None:
        if not parts:
            return (TREE, snap.tree)
        return self.repo.entry(snap.tree, "/".join(self.enc(self.need_keys(snap), parts)))

    def check_parents(self, snap: Snapshot, parts: Parts) -> None:
        """SecretNotDirectoryError if a proper prefix of ``parts`` is a secret."""
        for k in range(len(parts) - 1, 0, -1):
            e = self.find(snap, parts[:k])
            if e is not None:
                if e[0] == BLOB:
                    raise SecretNotDirectoryError(f"{join_path(parts[:k])} is a secret, not a directory")
                return

    def listing(self, keys: EpochKeys, tree: str) -> tuple[Entry, ...]:
        """``(stored name, plain name, kind, oid)`` of each entry of ``tree``, decrypted once per tree
        (:mod:`polykey.vaults.cache`). The plain name is None for ``.pk`` and directory markers."""
        key = (self.vault_id.raw, keys.epoch, tree)
        found = self.tree_names.get(key)
        if found is not None:
            return found
        entries = tuple(
            (name, None if name in (PK_DIR, DIR_MARKER) else keys.decrypt_name(name), kind, oid)
            for name, kind, oid in self.repo.list_tree(tree)
        )
        self.tree_names.put(key, entries)
        return entries

    def walk(self, snap: Snapshot, tree: str, prefix: Parts, recursive: bool,
             markers: bool = False) -> Iterator[tuple[Parts, str, str]]:
        """``(plain parts, kind, oid)`` under ``tree``; ``.pk`` never, dir markers only with ``markers``."""
        keys = self.need_keys(snap)
        for name, plain, kind, oid in self.listing(keys, tree):
            if plain is None:
                if name == PK_DIR and prefix:
                    keys.decrypt_name(name)  # below the root `.pk` is no name of ours: malformed
                if name == DIR_MARKER and markers and kind == BLOB:
                    yield prefix + (MARKER,), kind, oid
                continue
            parts = prefix + (plain,)
            yield parts, kind, oid
            if recursive and kind == TREE:
                if len(parts) > MAX_DEPTH:  # no secret path is this deep: a damaged or forged tree
                    raise VaultIntegrityError(f"a vault tree is nested deeper than {MAX_DEPTH} levels")
                yield from self.walk(snap, oid, parts, True, markers)

    # -- secrets --------------------------------------------------------------------

    def decrypt(self, snap: Snapshot, parts: Parts, oid: str) -> bytes:
        return self.need_keys(snap).decrypt_secret(join_path(parts), self.repo.read_blob(oid))

    def encrypt(self, snap: Snapshot, parts: Parts, value: bytes) -> str:
        blob = self.need_keys(snap).encrypt_secret(join_path(parts), value, rng=self.rng)
        return self.repo.write_blob(blob)

    def encrypt_many(self, snap: Snapshot, items: list[tuple[Parts, bytes]]) -> list[str]:
        keys = self.need_keys(snap)
        return self.repo.write_blobs([keys.encrypt_secret(join_path(p), v, rng=self.rng) for p, v in items])

    def read(self, parts: Parts, commit: str | None = None) -> bytes:
        with self.repo.read_lock():
            snap = self.snapshot(commit)
            e = self.find(snap, parts)
            when = "" if commit is None else f" as of commit {snap.commit[:12]}"
            if e is None:
                raise SecretNotFoundError(f"no secret {join_path(parts)!r} in this vault{when}")
            if e[0] == TREE:
                raise SecretIsDirectoryError(f"{join_path(parts)} is a directory{when}")
            return self.decrypt(snap, parts, e[1])

    def write(self, build: Callable[[Snapshot], tuple[dict[Parts, Change], str, dict[str, Any]]]) -> dict[str, Any]:
        """Run ``build(head) -> (changes by plain parts, message, result)`` and commit it."""
        with self.repo.write_lock():
            self._head = None
            snap = self.snapshot()
            role = snap.members.role_of(self.me)
            if role not in (OWNER, WRITER):
                raise VaultPermissionError(
                    "this node is a reader of the vault and cannot change it" if role else
                    "this node is not a member of the vault"
                )
            changes, message, result = build(snap)
            keys = self.need_keys(snap)
            enc_changes = {self.enc_marker(keys, p): c for p, c in changes.items()}
            tree = self.repo.apply(snap.tree, enc_changes)
            result["commit"] = self.repo.commit(
                tree, [snap.commit], str(self.me), author_email(self.me), int(self.clock()),
                message, lambda payload: sshsig.sign(self.keypair.seed, payload),
            )
            return result

    def enc_marker(self, keys: EpochKeys, parts: Parts) -> Parts:
        if parts and parts[-1] == MARKER:
            return self.enc(keys, parts[:-1]) + (DIR_MARKER,)
        return self.enc(keys, parts)

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
