"""The pygit2 adapter: one bare repository per vault (docs/spec/vault-format.md section 1).

This module and its siblings in ``polykey.vaults`` are the only importers of pygit2.
It knows git (objects, trees, refs, signed commits, locks) and nothing about
encryption: names and blobs reach it already encrypted.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType, Option, SortMode

from polykey.errors import CommitNotFoundError, InvalidInputError, VaultIntegrityError
from polykey.vaults.pack import remove_stale_temporaries, write_pack

BRANCH = "refs/heads/main"
LOCK_FILE = "pk-write.lock"
BLOB, TREE = "blob", "tree"
PACK_THRESHOLD = 64

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


#: A change to a tree path: ``(kind, hex oid)`` to write an entry, or ``None`` to remove it.
Change = tuple[str, str] | None


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
                yield
            finally:
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
        try:
            obj = self._repo[oid]
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError(f"commit {oid[:12]} is missing or corrupt") from None
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

    def commit(self, tree: str, parents: list[str], name: str, email: str, when: int,
               message: str, signer: object) -> str:
        """Write a signed commit and move the branch to it (caller holds :meth:`write_lock`).

        ``signer(payload: bytes) -> str`` returns the armored SSH signature.
        """
        who = pygit2.Signature(name, email, when, 0)
        content = self._repo.create_commit_string(
            who, who, message, pygit2.Oid(hex=tree), [pygit2.Oid(hex=p) for p in parents]
        )
        armored = signer(content.encode("utf-8"))  # type: ignore[operator]
        oid = self._repo.create_commit_with_signature(content, armored.rstrip("\n"))
        self._repo.references.create(BRANCH, oid, force=True)
        return str(oid)

    # -- objects and trees -----------------------------------------------------------

    def write_blob(self, data: bytes) -> str:
        return str(self._repo.create_blob(data))

    def write_blobs(self, blobs: list[bytes]) -> list[str]:
        """Many blobs at once: one packfile (two files, two fsyncs) instead of a file per blob."""
        if len(blobs) < PACK_THRESHOLD:
            return [self.write_blob(b) for b in blobs]
        return write_pack(self.path / "objects", blobs)

    def read_blob(self, oid: str) -> bytes:
        try:
            obj = self._repo[oid]
            if not isinstance(obj, pygit2.Blob):
                raise ValueError
            return obj.data
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault object is missing or corrupt") from None

    def blob_size(self, oid: str) -> int:
        try:
            return int(self._repo.odb.read_header(pygit2.Oid(hex=oid))[1])
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault object is missing or corrupt") from None

    def entry(self, tree: str, path: str) -> tuple[str, str] | None:
        """``(kind, oid)`` at ``path`` (``a/b``) under ``tree``, or None."""
        try:
            obj = self._repo[tree]
            if not isinstance(obj, pygit2.Tree):
                raise ValueError
            e = obj[path]
        except KeyError:
            return None
        except (ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault tree is missing or corrupt") from None
        return (TREE if e.filemode == FileMode.TREE else BLOB, str(e.id))

    def list_tree(self, tree: str) -> list[tuple[str, str, str]]:
        """``[(name, kind, oid)]`` of one tree."""
        try:
            obj = self._repo[tree]
            if not isinstance(obj, pygit2.Tree):
                raise ValueError
            return [(e.name or "", TREE if e.filemode == FileMode.TREE else BLOB, str(e.id)) for e in obj]
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault tree is missing or corrupt") from None

    def apply(self, tree: str | None, changes: dict[tuple[str, ...], Change]) -> str:
        """A new tree: ``tree`` with ``changes`` (keyed by name tuples) applied. Empty subtrees vanish."""
        out = self._apply(tree, changes)
        if out is None:
            out = str(self._repo.TreeBuilder().write())
        return out

    def _apply(self, tree: str | None, changes: dict[tuple[str, ...], Change]) -> str | None:
        try:
            tb = self._repo.TreeBuilder(self._repo[tree]) if tree else self._repo.TreeBuilder()
        except (KeyError, ValueError, pygit2.GitError):
            raise VaultIntegrityError("a vault tree is missing or corrupt") from None
        nested: dict[str, dict[tuple[str, ...], Change]] = {}
        for parts, change in changes.items():
            if len(parts) == 1:
                if change is None:
                    if tb.get(parts[0]) is not None:
                        tb.remove(parts[0])
                else:
                    kind, oid = change
                    tb.insert(parts[0], pygit2.Oid(hex=oid), FileMode.TREE if kind == TREE else FileMode.BLOB)
            else:
                nested.setdefault(parts[0], {})[parts[1:]] = change
        for name, sub in nested.items():
            current = tb.get(name)
            base = str(current.id) if current is not None and current.type_str == "tree" else None
            new = self._apply(base, sub)
            if new is None:
                if current is not None:
                    tb.remove(name)
            else:
                tb.insert(name, pygit2.Oid(hex=new), FileMode.TREE)
        if len(tb) == 0:
            return None
        return str(tb.write())
