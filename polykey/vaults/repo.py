"""The pygit2 adapter: one bare repository per vault (docs/spec/vault-format.md section 1).

This module and its siblings in ``polykey.vaults`` are the only importers of pygit2.
It knows git (objects, trees, refs, signed commits, locks) and nothing about
encryption: names and blobs reach it already encrypted.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import ObjectType, Option, SortMode

from polykey.errors import CommitNotFoundError, InvalidInputError, VaultIntegrityError
from polykey.vaults import grammar
from polykey.vaults.identity import Signer, author_email
from polykey.vaults.objects import MODE_BLOB, MODE_TREE, Entries, signed_commit_bytes, tree_bytes
from polykey.vaults.pack import (
    OBJ_BLOB,
    OBJ_COMMIT,
    OBJ_TREE,
    TYPE_NAMES,
    geometric_merge_set,
    object_id,
    pack_ids,
    remove_stale_temporaries,
    store_objects_pack,
    write_objects_pack,
)
from polykey.vaults.packmerge import copy_merge

BRANCH = "refs/heads/main"
LOCK_FILE = "pk-write.lock"
BLOB, TREE = "blob", "tree"
MAX_PACKS = 16
#: libgit2's object cache, all open repositories together (parsed trees and ciphertext blobs).
CACHE_MAX_BYTES = 8 << 20
#: Pack file bytes libgit2 keeps mapped, all open repositories together.
MWINDOW_MAPPED_BYTES = 8 << 20

_configured = False
_configure_mutex = threading.Lock()


def configure_libgit2() -> None:
    """Durable, strict libgit2 (DESIGN.md section 3). Process-wide, idempotent, set once to constants."""
    global _configured
    with _configure_mutex:
        if _configured:
            return
        pygit2.option(Option.ENABLE_FSYNC_GITDIR, True)
        pygit2.option(Option.ENABLE_STRICT_OBJECT_CREATION, True)
        pygit2.option(Option.ENABLE_STRICT_HASH_VERIFICATION, True)
        # Keep parsed trees and (ciphertext) blobs of open vaults in libgit2's per-repository cache:
        # by default blobs are never cached and trees only below 4 KiB.
        pygit2.option(Option.SET_CACHE_OBJECT_LIMIT, ObjectType.TREE, 4 << 20)
        pygit2.option(Option.SET_CACHE_OBJECT_LIMIT, ObjectType.BLOB, 64 << 10)
        # Bound what every open vault together may keep (libgit2's defaults: a 256 MiB object cache
        # and 8 GiB of mapped pack windows, both counted in the agent's RSS once touched).
        pygit2.option(Option.SET_CACHE_MAX_SIZE, CACHE_MAX_BYTES)
        pygit2.option(Option.SET_MWINDOW_MAPPED_LIMIT, MWINDOW_MAPPED_BYTES)
        _configured = True


@dataclass(frozen=True)
class CommitInfo:
    """What history queries need from one commit."""

    id: str
    parents: tuple[str, ...]
    tree: str
    author_name: str
    author_email: str
    committer_name: str
    time: int
    message: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a vault tree: its kind (:data:`BLOB` or :data:`TREE`) and hex object id."""

    kind: str
    oid: str


#: A change to a tree path: the entry to write there, or ``None`` to remove it.
Change = Entry | None


def _entry(e: pygit2.Object) -> Entry:
    # The entry's object class, not ``e.filemode == FileMode.TREE``: pygit2 builds an enum member
    # for every ``filemode`` read, 20 times the cost (5 ms a listing of 10,000 entries).
    return Entry(TREE if type(e) is pygit2.Tree else BLOB, str(e.id))


def _info(c: pygit2.Commit) -> CommitInfo:
    return CommitInfo(
        id=str(c.id),
        parents=tuple(str(p) for p in c.parent_ids),
        tree=str(c.tree_id),
        author_name=c.author.name,
        author_email=c.author.email,
        committer_name=c.committer.name,
        time=int(c.commit_time),
        message=c.message,
    )


class GitRepo:
    """An open bare vault repository."""

    def __init__(self, path: Path) -> None:
        configure_libgit2()
        self.path = path
        try:
            self._repo = pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.BARE)
        except pygit2.GitError:
            raise VaultIntegrityError("the vault repository cannot be opened (corrupt or missing)") from None
        self._mutex = threading.RLock()
        self._pending: dict[str, tuple[int, bytes]] | None = None

    def _reopen(self) -> None:
        """A fresh libgit2 handle: after packs were merged here or by another process."""
        self._repo.free()
        try:
            self._repo = pygit2.Repository(str(self.path), pygit2.enums.RepositoryOpenFlag.BARE)
        except pygit2.GitError:
            raise VaultIntegrityError("the vault repository cannot be opened (corrupt or missing)") from None

    def _get(self, oid: str) -> pygit2.Object:
        """Look an object up; once more on a fresh handle if a pack it was in has been merged away."""
        try:
            return self._repo[oid]
        except (KeyError, pygit2.GitError):
            self._reopen()
        try:
            return self._repo[oid]
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError(f"vault object {oid[:12]} is missing or corrupt") from None

    @classmethod
    def init(cls, path: Path) -> GitRepo:
        configure_libgit2()
        pygit2.init_repository(str(path), bare=True, initial_head="main")
        return cls(path)

    def close(self) -> None:
        self._repo.free()

    # -- locking -----------------------------------------------------------------

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive against other threads and processes. Clears lock files a killed writer left."""
        with self._mutex:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # We hold the only write lock, so any git lock file is stale (a killed writer).
                for stale in (self.path / "refs" / "heads" / "main.lock", self.path / "HEAD.lock",
                              self.path / "packed-refs.lock"):
                    stale.unlink(missing_ok=True)
                remove_stale_temporaries(self.path / "objects")
                self._pending = {}
                yield
            finally:
                self._pending = None
                os.close(fd)

    @contextmanager
    def read_lock(self) -> Iterator[None]:
        with self._mutex:
            yield

    # -- refs and commits ----------------------------------------------------------

    def head(self) -> str | None:
        try:
            return str(self._repo.references[BRANCH].target)
        except KeyError:
            return None
        except pygit2.GitError:
            raise VaultIntegrityError("the vault's branch reference is corrupt") from None

    def resolve(self, rev: str) -> str:
        """A full commit id for a full or abbreviated (>= 4 hex digits) one."""
        if not (4 <= len(rev) <= 40) or any(c not in "0123456789abcdef" for c in rev.lower()):
            raise InvalidInputError("a commit id is 4 to 40 hexadecimal digits")
        try:
            obj = self._repo.revparse_single(rev.lower())
        except (KeyError, ValueError, pygit2.GitError):
            raise CommitNotFoundError(f"no commit {rev} in this vault") from None
        if not isinstance(obj, pygit2.Commit):
            raise CommitNotFoundError(f"{rev} is not a commit of this vault")
        return str(obj.id)

    def commit_info(self, oid: str) -> CommitInfo:
        return _info(self._commit(oid))

    def _commit(self, oid: str) -> pygit2.Commit:
        obj = self._get(oid)
        if not isinstance(obj, pygit2.Commit):
            raise VaultIntegrityError(f"object {oid[:12]} is not a commit")
        return obj

    def signature(self, oid: str) -> tuple[bytes | None, bytes]:
        """``(armored signature or None, signed payload)`` of a commit."""
        c = self._commit(oid)
        sig, payload = c.gpg_signature
        if sig is None:
            return None, c.read_raw()
        return sig, payload

    def walk(self, head: str, *, oldest_first: bool = False) -> Iterator[CommitInfo]:
        mode = SortMode.TOPOLOGICAL | SortMode.TIME
        if oldest_first:
            mode |= SortMode.REVERSE
        try:
            for c in self._repo.walk(pygit2.Oid(hex=head), mode):
                yield _info(c)
        except pygit2.GitError:
            raise VaultIntegrityError("the vault history has a missing or corrupt commit") from None

    def new_commits(self, head: str, since: str | None) -> list[str]:
        """Commits reachable from ``head`` and not from ``since`` (all of them for None), parents
        before children: what libgit2's walk visits, in proportion to the new commits."""
        try:
            walker = self._repo.walk(pygit2.Oid(hex=head), SortMode.TOPOLOGICAL | SortMode.REVERSE)
            if since is not None:
                walker.hide(pygit2.Oid(hex=since))
            return [str(c.id) for c in walker]
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("the vault history has a missing or corrupt commit") from None

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        """Whether ``ancestor`` is ``commit`` or one of its ancestors."""
        if ancestor == commit:
            return True
        try:
            return bool(self._repo.descendant_of(pygit2.Oid(hex=commit), pygit2.Oid(hex=ancestor)))
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("the vault history has a missing or corrupt commit") from None

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits (libgit2's choice among several), or None."""
        try:
            found = self._repo.merge_base(pygit2.Oid(hex=a), pygit2.Oid(hex=b))
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("the vault history has a missing or corrupt commit") from None
        return None if found is None else str(found)

    def raw(self, oid: str, kind: str, limit: int) -> bytes:
        """The content of object ``oid`` of ``kind`` (``commit``, ``tree``, ``blob``), at most ``limit``
        bytes (its size is read from the header first)."""
        try:
            obj_type, size = self._repo.odb.read_header(pygit2.Oid(hex=oid))
            if TYPE_NAMES.get(int(obj_type)) != kind.encode() or size > limit:
                raise VaultIntegrityError(f"vault object {oid[:12]} is not a {kind} of at most {limit} bytes",
                                          object=oid)
            return bytes(self._repo.odb.read(pygit2.Oid(hex=oid))[1])
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError(f"vault object {oid[:12]} is missing or corrupt", object=oid) from None

    def set_head(self, oid: str) -> None:
        """Move the branch to ``oid`` (an existing commit), durably. The caller holds :meth:`write_lock`."""
        try:
            self._repo.references.create(BRANCH, pygit2.Oid(hex=oid), force=True)
        except pygit2.GitError:
            self._reopen()  # a pack written since (write_commit) was not seen yet
            self._repo.references.create(BRANCH, pygit2.Oid(hex=oid), force=True)

    def write_commit(self, tree: str, parents: list[str], message: str, signer: Signer, *, when: int) -> str:
        """Write a commit of ``tree`` on ``parents`` (none for the first, two for a merge), authored
        and signed by ``signer`` at ``when`` (unix seconds), with every object staged so far, as one
        durable pack; the branch does not move (spec section 5). The caller holds :meth:`write_lock`.
        This is the only way a commit is written."""
        me = signer.node_id
        data = signed_commit_bytes(tree, parents, str(me), author_email(me), when, message, signer.sign)
        oid = self._stage(OBJ_COMMIT, data)
        self._flush()
        return oid

    def commit(self, tree: str, parents: list[str], message: str, signer: Signer, *, when: int) -> str:
        """:meth:`write_commit`, then move the branch to the new commit (durably). The caller holds
        :meth:`write_lock`."""
        oid = self.write_commit(tree, parents, message, signer, when=when)
        try:
            self._repo.references.create(BRANCH, pygit2.Oid(hex=oid), force=True)
        except pygit2.GitError:
            self._reopen()  # the new pack was not seen yet
            self._repo.references.create(BRANCH, pygit2.Oid(hex=oid), force=True)
        self._consolidate()
        return oid

    def _stage(self, obj_type: int, data: bytes) -> str:
        if self._pending is None:
            raise RuntimeError("vault objects are written only under the write lock")
        oid = object_id(TYPE_NAMES[obj_type], data).hex()
        self._pending[oid] = (obj_type, data)
        return oid

    def _flush(self) -> None:
        """Store the staged objects as one durable pack."""
        assert self._pending is not None
        if self._pending:
            write_objects_pack(self.path / "objects", list(self._pending.values()))
            self._pending.clear()

    def _consolidate(self) -> None:
        """Merge small packs (geometric progression) so lookups never scan many packs."""
        pack_dir = self.path / "objects" / "pack"
        with os.scandir(pack_dir) as it:
            names = [e.name for e in it if e.name.startswith("pack-") and e.name.endswith(".idx")]
        if len(names) <= MAX_PACKS:
            return
        packs = []
        for idx in (pack_dir / n for n in names):
            try:
                packs.append((idx.with_suffix(".pack").stat().st_size, idx))
            except FileNotFoundError:
                continue
        merge = geometric_merge_set(packs, MAX_PACKS)
        if not merge:
            return
        merged = copy_merge(self.path / "objects", merge)  # entries copied, no object read
        if merged is None:  # a pack with deltas (stock git made it): merge by reading its objects
            objects: list[tuple[int, bytes]] = []
            for idx in merge:
                for oid in pack_ids(idx):
                    obj_type, data = self._repo.odb.read(pygit2.Oid(hex=oid))
                    objects.append((int(obj_type), data))
            merged = store_objects_pack(self.path / "objects", objects)[1]
        for idx in merge:
            if idx == merged:
                continue  # the merge gave this very pack back: it is the result
            idx.unlink(missing_ok=True)
            idx.with_suffix(".pack").unlink(missing_ok=True)
        self._reopen()

    # -- objects and trees -----------------------------------------------------------

    def write_blob(self, data: bytes) -> str:
        """Stage a blob for the commit being written (under :meth:`write_lock`)."""
        return self._stage(OBJ_BLOB, data)

    def write_blobs(self, blobs: list[bytes]) -> list[str]:
        return [self._stage(OBJ_BLOB, b) for b in blobs]

    def read_blob(self, oid: str) -> bytes:
        obj = self._get(oid)
        if not isinstance(obj, pygit2.Blob):
            raise VaultIntegrityError(f"vault object {oid[:12]} is not a blob")
        data: bytes = obj.data
        return data

    def blob_size(self, oid: str) -> int:
        try:
            return int(self._repo.odb.read_header(pygit2.Oid(hex=oid))[1])
        except (KeyError, ValueError, pygit2.GitError):
            return len(self.read_blob(oid))

    def _tree(self, tree: str) -> pygit2.Tree:
        obj = self._get(tree)
        if not isinstance(obj, pygit2.Tree):
            raise VaultIntegrityError(f"vault object {tree[:12]} is not a tree")
        return obj

    def entry(self, tree: str, path: str) -> Entry | None:
        """The entry at ``path`` (``a/b``) under ``tree``, or None."""
        obj = self._tree(tree)
        try:
            # pygit2 1.21 keeps a reference to the key of every Tree lookup (Tree[key], `in`, `/`):
            # a fresh string per lookup leaked ~100 bytes per `secrets get` in the agent. The
            # interned copy is one object per distinct path, so what is kept is bounded by the
            # vault's names, not by the number of requests.
            e = obj[sys.intern(path)]
        except KeyError:
            return None
        except (ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault tree is missing or corrupt") from None
        return _entry(e)

    def list_tree(self, tree: str) -> list[tuple[str, Entry]]:
        """``[(name, entry)]`` of one tree."""
        try:
            return [(e.name or "", _entry(e)) for e in self._tree(tree)]
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault tree is missing or corrupt") from None

    def apply(self, tree: str | None, changes: dict[tuple[str, ...], Change]) -> str:
        """Stage a new tree: ``tree`` with ``changes`` (keyed by name tuples). Empty subtrees vanish."""
        out = self._apply(tree, changes)
        return out if out is not None else self._stage(OBJ_TREE, b"")

    def _apply(self, tree: str | None, changes: dict[tuple[str, ...], Change]) -> str | None:
        entries: Entries = {}
        if tree:
            for e in self._tree(tree):
                entries[e.name or ""] = (int(e.filemode), e.id.raw)
        nested: dict[str, dict[tuple[str, ...], Change]] = {}
        for parts, change in changes.items():
            if len(parts) == 1:
                if change is None:
                    entries.pop(parts[0], None)
                else:
                    mode = MODE_TREE if change.kind == TREE else MODE_BLOB
                    entries[parts[0]] = (mode, bytes.fromhex(change.oid))
            else:
                nested.setdefault(parts[0], {})[parts[1:]] = change
        for name, sub in nested.items():
            mode, raw = entries.get(name, (0, b""))
            base = raw.hex() if mode == MODE_TREE else None
            new = self._apply(base, sub)
            if new is None:
                entries.pop(name, None)
            else:
                entries[name] = (MODE_TREE, bytes.fromhex(new))
        if not entries:
            return None
        data = tree_bytes(entries)
        if len(entries) > grammar.MAX_TREE_ENTRIES or len(data) > grammar.MAX_TREE_BYTES:
            raise InvalidInputError(f"a directory may hold at most {grammar.MAX_TREE_ENTRIES:,} entries "
                                    f"and {grammar.MAX_TREE_BYTES >> 20} MiB of names (vault-format.md section 8.1)")
        return self._stage(OBJ_TREE, data)
