"""The object transfer of sync, both ends (issue 12; docs/spec/vault-format.md sections 8 and 10).

No network here: the keynode's sync service moves the bytes over the transport and calls these
functions from a worker thread.

- Serving: :func:`have_list` (what an asker sends as its "haves"), :func:`plan` (the objects of a
  wanted commit an asker lacks, in proportion to what changed, never to the vault's size or
  history), :func:`read_object` (one object's raw content, capped per type).
- Receiving: :class:`Incoming` recomputes every object id, parses commits and trees strictly
  (section 8.1) as they arrive, holds them in memory up to a byte cap, and
  :meth:`Incoming.check_complete` accepts only a closed set: everything referenced is received or
  held, nothing received is unreachable from the wanted commit.
- Quarantine: :func:`quarantine` builds ``<vaults>/.incoming-<random>.git`` where the received
  objects are written as one pack and verified before anything is visible; :func:`install_pack`
  then moves that pack into the vault (``.pack`` first, ``.idx`` last: git sees a pack only with
  its index). A crash leaves at most a quarantine directory, swept at the next unlock.

Every rejection is a :class:`SyncRejectedError` with a one-line reason naming the object id (never
its content); ``data={"reason": ...}`` carries the same reason.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, SortMode

from polykey import fsutil
from polykey.errors import PolykeyError, SyncRejectedError, VaultIntegrityError
from polykey.vaults import grammar
from polykey.vaults.format import BLOB_OVERHEAD, MAX_SECRET_BYTES
from polykey.vaults.pack import OBJ_BLOB, OBJ_COMMIT, OBJ_TREE, TYPE_NAMES, object_id, store_objects_pack
from polykey.vaults.repo import GitRepo
from polykey.vaults.vault import Vault

#: At most this many commits in a have list (the head, then first-parent ancestors 1, 2, 4, ... back).
MAX_HAVES = 32
#: How far back along first parents a have list looks (bounds its cost on a long history).
MAX_HAVE_DEPTH = 256
#: At most this many objects in one plan.
MAX_PLAN_OBJECTS = 2_000_000
#: What an :class:`Incoming` holds in memory by default.
MAX_INCOMING_BYTES = 1 << 30
MAX_BLOB_BYTES = MAX_SECRET_BYTES + BLOB_OVERHEAD
#: The largest content of each object type a vault may hold (section 8.1).
MAX_OBJECT_BYTES = {OBJ_COMMIT: grammar.MAX_COMMIT_BYTES, OBJ_TREE: grammar.MAX_TREE_BYTES, OBJ_BLOB: MAX_BLOB_BYTES}
KIND_NAMES = {OBJ_COMMIT: "commit", OBJ_TREE: "tree", OBJ_BLOB: "blob"}
QUARANTINE_PREFIX = ".incoming-"
#: Every name a vault tree may hold anywhere (the exact rules per directory are verify's, 8.1).
_ANY_NAME = re.compile(r"\.pk|\.keep|keys|members|vault|replicas|[0-9a-f]{8}|[0-9a-v]{26,512}")
_HEX40 = re.compile(r"[0-9a-f]{40}")


def reject(reason: str) -> SyncRejectedError:
    """The rejection of a transfer for ``reason`` (one line, object ids at most, never content)."""
    return SyncRejectedError(f"the transfer was rejected: {reason}", reason=reason)


def is_oid(text: object) -> bool:
    """Whether ``text`` is a full lowercase hex object id."""
    return isinstance(text, str) and _HEX40.fullmatch(text) is not None


def _git(v: Vault) -> pygit2.Repository:
    # The transfer reads git objects the way git does (walkers with several hidden commits, raw tree
    # entries): the same package's adapter, reached directly rather than widened for one caller.
    return v.repo._repo  # noqa: SLF001


def has_object(v: Vault, oid: str) -> bool:
    """Whether ``v``'s object store holds ``oid`` (any type)."""
    try:
        return bool(_git(v).odb.exists(pygit2.Oid(hex=oid)))
    except (ValueError, pygit2.GitError):
        return False


def _is_commit(v: Vault, oid: str) -> bool:
    try:
        return int(_git(v).odb.read_header(pygit2.Oid(hex=oid))[0]) == OBJ_COMMIT
    except (KeyError, ValueError, pygit2.GitError):
        return False


# -- serving ------------------------------------------------------------------------------


def _first_parents(repo: pygit2.Repository, oid: pygit2.Oid) -> list[pygit2.Oid]:
    c = repo[oid]
    if not isinstance(c, pygit2.Commit):
        raise ValueError(f"{oid} is not a commit")
    return list(c.parent_ids)


def have_list(v: Vault, head: str, extra: Iterable[str] = ()) -> list[str]:
    """What an asker holding ``head`` sends as its haves: ``head``, then its first-parent ancestors at
    distances 1, 2, 4, 8, ... and the oldest one looked at (at most :data:`MAX_HAVE_DEPTH` back, so
    the cost does not grow with a long history), then the commits of ``extra`` held here (in its
    order); at most :data:`MAX_HAVES` in all."""
    extras = [e for e in dict.fromkeys(extra) if is_oid(e) and e != head and _is_commit(v, e)]
    room = MAX_HAVES - min(len(extras), MAX_HAVES // 2)
    out = [head]
    last, next_at = head, 1
    repo = _git(v)
    try:
        # first parents one object at a time: libgit2's walker prepares the whole history first
        # (59 ms at 4,000 commits), and the cost must not grow with a long history
        parents = _first_parents(repo, pygit2.Oid(hex=head))
        for distance in range(1, MAX_HAVE_DEPTH + 1):
            if not parents or len(out) >= room:
                break
            last = str(parents[0])
            if distance == next_at:
                out.append(last)
                next_at *= 2
            parents = _first_parents(repo, parents[0])
    except (KeyError, ValueError, pygit2.GitError):
        raise VaultIntegrityError("the vault history has a missing or corrupt commit") from None
    if last != out[-1] and len(out) < room:
        out.append(last)  # the oldest looked at (the root of a short history): a common base
    seen = set(out)
    out += [e for e in extras if e not in seen][: MAX_HAVES - len(out)]
    return out


def plan(v: Vault, want: str, haves: Iterable[str]) -> list[tuple[int, str]]:
    """``(object type, oid)`` of every object reachable from commit ``want`` that an asker holding the
    commits ``haves`` (and everything reachable from them) lacks; haves unknown here are ignored.

    Commits come oldest first, each followed by the trees and blobs it introduced: for each new commit
    its tree is compared with each parent's, descending only into subtrees whose id differs, and an
    entry is listed unless a parent has the same id at the same path (or it was listed already).
    Cost in proportion to what changed. VaultIntegrityError beyond :data:`MAX_PLAN_OBJECTS` or for a
    missing object.
    """
    repo = _git(v)
    try:
        walker = repo.walk(pygit2.Oid(hex=want), SortMode.TOPOLOGICAL | SortMode.REVERSE)
        for h in dict.fromkeys(haves):
            if is_oid(h) and _is_commit(v, h):
                walker.hide(pygit2.Oid(hex=h))
        out: list[tuple[int, str]] = []
        listed: set[str] = set()

        def emit(obj_type: int, oid: str) -> None:
            if oid in listed:
                return
            if len(out) >= MAX_PLAN_OBJECTS:
                raise VaultIntegrityError(f"a transfer may carry at most {MAX_PLAN_OBJECTS:,} objects")
            listed.add(oid)
            out.append((obj_type, oid))

        for c in walker:
            emit(OBJ_COMMIT, str(c.id))
            parent_trees = [p.tree_id for p in c.parents]
            if c.tree_id not in parent_trees:
                emit(OBJ_TREE, str(c.tree_id))
                _plan_tree(repo, c.tree_id, parent_trees, emit)
        return out
    except (KeyError, ValueError, pygit2.GitError):
        raise VaultIntegrityError("the vault history has a missing or corrupt object") from None


def _plan_tree(repo: pygit2.Repository, tree: pygit2.Oid, before: list[pygit2.Oid],
               emit: Callable[[int, str], None]) -> None:
    """Emit the entries of ``tree`` (and below) that none of the ``before`` trees has at the same path."""
    stack = [(tree, before)]
    while stack:
        oid, olds = stack.pop()
        old_entries: list[dict[str, pygit2.Oid]] = []
        for old in olds:
            obj = repo[old]
            old_entries.append({e.name or "": e.id for e in obj} if isinstance(obj, pygit2.Tree) else {})
        obj = repo[oid]
        if not isinstance(obj, pygit2.Tree):
            raise VaultIntegrityError(f"vault object {str(oid)[:12]} is not a tree")
        for e in obj:
            name = e.name or ""
            if any(entries.get(name) == e.id for entries in old_entries):
                continue  # the asker has it at this very path
            is_tree = e.filemode == FileMode.TREE
            emit(OBJ_TREE if is_tree else OBJ_BLOB, str(e.id))
            if is_tree:
                stack.append((e.id, [entries[name] for entries in old_entries if name in entries]))


def read_object(v: Vault, obj_type: int, oid: str) -> bytes:
    """The raw content of object ``oid`` of ``obj_type``, at most its type's cap (section 8.1).
    VaultIntegrityError if it is missing, of another type or larger."""
    if not isinstance(obj_type, int) or obj_type not in KIND_NAMES or not is_oid(oid):
        raise VaultIntegrityError("an object reference is not (commit, tree or blob; a full object id)")
    return v.repo.raw(oid, KIND_NAMES[obj_type], MAX_OBJECT_BYTES[obj_type])


# -- receiving -----------------------------------------------------------------------------


class Incoming:
    """The objects received for one vault, checked as they arrive and held in memory.

    :meth:`add` recomputes the object id, caps the size per type, and parses commits and trees
    (grammar, section 8.1); duplicates are ignored. Past ``max_bytes`` in all: SyncRejectedError.
    Not thread-safe: one transfer feeds one instance.
    """

    def __init__(self, max_bytes: int = MAX_INCOMING_BYTES) -> None:
        self.max_bytes = max_bytes
        self._objects: dict[str, tuple[int, bytes]] = {}
        #: Per received commit or tree, what it references: ``(type expected, oid)``.
        self._refs: dict[str, tuple[tuple[int, str], ...]] = {}
        self._bytes = 0
        self._part: tuple[int, int, list[bytes]] | None = None  # (type, size, chunks)
        self._part_bytes = 0

    @property
    def count(self) -> int:
        """Objects received (duplicates once)."""
        return len(self._objects)

    @property
    def nbytes(self) -> int:
        """Content bytes received and held, including a part-received object."""
        return self._bytes + self._part_bytes

    def _room(self, n: int) -> None:
        if self.nbytes + n > self.max_bytes:
            raise reject(f"the transfer is larger than {self.max_bytes:,} bytes")

    def add(self, obj_type: int, data: bytes, oid: str | None = None) -> str:
        """Check and keep one object; returns its id (which must be ``oid`` when the sender named
        it). SyncRejectedError naming what is wrong."""
        if self._part is not None:
            raise reject("a whole object arrived while another was arriving in parts")
        return self._add(obj_type, bytes(data), oid)

    def _add(self, obj_type: int, data: bytes, expected: str | None = None) -> str:
        if not isinstance(obj_type, int) or obj_type not in KIND_NAMES:
            raise reject(f"an object of unknown type {obj_type!r} (only commit, tree and blob)")
        if expected is not None:
            if object_id(TYPE_NAMES[obj_type], data).hex() != expected:
                name = expected if is_oid(expected) else "with a malformed id"
                raise reject(f"object {name} does not hash to its id (altered in transit)")
        return self._check(obj_type, data)

    def _check(self, obj_type: int, data: bytes) -> str:
        kind = KIND_NAMES[obj_type]
        if len(data) > MAX_OBJECT_BYTES[obj_type]:
            oid = object_id(TYPE_NAMES[obj_type], data).hex()
            raise reject(f"{kind} {oid} is larger than {MAX_OBJECT_BYTES[obj_type]:,} bytes")
        oid = object_id(TYPE_NAMES[obj_type], data).hex()
        if oid in self._objects:
            if self._objects[oid][0] != obj_type:  # unreachable for SHA-1 in practice
                raise reject(f"object {oid} arrived with two types")
            return oid
        self._room(len(data))
        try:
            if obj_type == OBJ_COMMIT:
                header = grammar.parse_commit(oid, data)
                refs = ((OBJ_TREE, header.tree), *((OBJ_COMMIT, p) for p in header.parents))
            elif obj_type == OBJ_TREE:
                entries = grammar.parse_tree(oid, data)
                for e in entries:
                    if _ANY_NAME.fullmatch(e.name) is None:
                        raise reject(f"tree {oid} has a name that is not a canonical vault name")
                refs = tuple((OBJ_TREE if e.is_tree else OBJ_BLOB, e.oid) for e in entries)
            else:
                refs = ()
        except VaultIntegrityError as e:
            raise reject(e.message) from None
        self._objects[oid] = (obj_type, data)
        if refs:
            self._refs[oid] = refs
        self._bytes += len(data)
        return oid

    def add_part(self, obj_type: int, chunk: bytes, offset: int, size: int, oid: str | None = None) -> str | None:
        """One part of a large object: parts come in order (``offset`` contiguous from 0) and the
        object is :meth:`add`-ed (with ``oid``, as given with its last part) once ``size`` bytes
        arrived. Returns its id then, else None."""
        if not isinstance(obj_type, int) or obj_type not in KIND_NAMES:
            raise reject(f"an object of unknown type {obj_type!r} (only commit, tree and blob)")
        if not isinstance(size, int) or not 0 < size <= MAX_OBJECT_BYTES[obj_type]:
            raise reject(f"a {KIND_NAMES[obj_type]} announced as {size!r} bytes "
                          f"(at most {MAX_OBJECT_BYTES[obj_type]:,})")
        if offset == 0 and self._part is None:
            self._part, self._part_bytes = (obj_type, size, []), 0
        part = self._part
        if part is None or part[0] != obj_type or part[1] != size or offset != self._part_bytes:
            raise reject("an object's parts arrived out of order or with another type or size")
        if not chunk or self._part_bytes + len(chunk) > size:
            raise reject("an object's part is empty or runs past its announced size")
        self._room(len(chunk))
        part[2].append(bytes(chunk))
        self._part_bytes += len(chunk)
        if self._part_bytes < size:
            return None
        data = b"".join(part[2])
        self._part, self._part_bytes = None, 0
        return self._add(obj_type, data, oid)

    def check_complete(self, want: str, have: Callable[[str], bool]) -> None:
        """Every object referenced by a received commit or tree is received (of the right type) or
        held here (``have(oid)``), and every received object is reachable from ``want`` through
        received objects. ``want`` itself must be received, or held with nothing received."""
        if self._part is not None:
            raise reject("an object arrived only in part")
        if not is_oid(want):
            raise reject("the wanted head is not a full commit id")
        if want not in self._objects:
            if self._objects:
                extra = next(iter(self._objects))
                raise reject(f"object {extra} was sent but the head {want} was not")
            if not have(want):
                raise reject(f"the head {want} was not sent")
            return
        if self._objects[want][0] != OBJ_COMMIT:
            raise reject(f"the head {want} is not a commit")
        reached = {want}
        stack = [want]
        while stack:
            oid = stack.pop()
            for ref_type, ref in self._refs.get(oid, ()):
                if ref in reached:
                    continue
                got = self._objects.get(ref)
                if got is None:
                    if not have(ref):
                        raise reject(f"object {ref} (referenced by {oid}) was not sent (an incomplete transfer)")
                    continue
                if got[0] != ref_type:
                    raise reject(f"object {ref} is a {KIND_NAMES[got[0]]} where {oid} references a "
                                  f"{KIND_NAMES[ref_type]}")
                reached.add(ref)
                stack.append(ref)
        if len(reached) != len(self._objects):
            extra = next(o for o in self._objects if o not in reached)
            raise reject(f"object {extra} is not reachable from the head {want} (extra objects)")

    def objects(self) -> list[tuple[int, bytes]]:
        """``(type, content)`` of every received object, in arrival order."""
        return list(self._objects.values())

    def commit_ids(self) -> list[str]:
        return [oid for oid, (t, _d) in self._objects.items() if t == OBJ_COMMIT]


# -- quarantine and install --------------------------------------------------------------------


def quarantine(vaults_dir: Path, token: str, alternate: Path | None) -> Path:
    """A fresh bare repository ``<vaults_dir>/.incoming-<token>.git`` (0700); with ``alternate`` (a
    vault's ``objects`` directory) it reads that vault's objects too (``objects/info/alternates``)."""
    path = vaults_dir / f"{QUARANTINE_PREFIX}{token}.git"
    if alternate is None:  # a clone: this repository becomes the vault, made as every vault is
        GitRepo.init(path).close()
        os.chmod(path, 0o700)
        return path
    # A pull's quarantine lives for one transfer and is never kept (its pack is moved into the vault):
    # the least libgit2 opens -- HEAD, objects/, refs/ -- without libgit2's init, which writes and
    # fsyncs a config, a description and more (~2.4 ms of a ~25 ms pull).
    os.mkdir(path, 0o700)
    for sub in ("objects/pack", "objects/info", "refs/heads"):
        (path / sub).mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n", encoding="ascii")
    (path / "objects" / "info" / "alternates").write_text(str(alternate.resolve()) + "\n", encoding="ascii")
    return path


def write_pack(repo_path: Path, incoming: Incoming) -> Path | None:
    """Store every received object as one durable pack in the repository at ``repo_path``; the
    pack's ``.idx`` (None when nothing was received)."""
    objects = incoming.objects()
    if not objects:
        return None
    return store_objects_pack(repo_path / "objects", objects)[1]


def install_pack(idx: Path, objects_dir: Path) -> None:
    """Move a verified pack (``idx`` and its ``.pack``) into ``objects_dir/pack`` durably: the
    ``.pack`` first, the ``.idx`` last (git uses a pack only with its index), then the directory
    is fsynced. Under the vault's write lock."""
    pack_dir = objects_dir / "pack"
    pack_dir.mkdir(exist_ok=True)
    final_idx = pack_dir / idx.name
    if final_idx.exists():
        return  # the very same objects were installed already
    os.replace(idx.with_suffix(".pack"), pack_dir / idx.with_suffix(".pack").name)
    os.replace(idx, final_idx)
    fsutil.fsync_dir(pack_dir)


def drop(path: Path) -> None:
    """Remove a quarantine directory (nothing in it was used)."""
    shutil.rmtree(path, ignore_errors=True)


def rejected(e: PolykeyError) -> SyncRejectedError:
    """``e`` (a verification or integrity failure of received objects) as the transfer's rejection."""
    if isinstance(e, SyncRejectedError):
        return e
    return reject(e.message)
