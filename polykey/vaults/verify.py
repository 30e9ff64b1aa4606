"""The verification rule (DESIGN.md section 3; docs/spec/vault-format.md sections 8 and 10.3).

Every commit, oldest first, MUST parse under the strict grammar (:mod:`polykey.vaults.grammar`),
carry an SSHSIG (namespace ``git``) by the Ed25519 key whose NodeId is its author and committer,
and that NodeId MUST hold, as of every parent, a role allowing the change: ``owner`` or ``writer``
for secrets, ``owner`` when ``.pk/`` changes (a merge's ``.pk``, revocation and commit times:
:mod:`polykey.vaults.rules`). A root commit MUST be signed by an owner listed in its own
``.pk/members`` (in format version 2, the creator its VaultId derives from), and a history has one
root; the epoch never goes down and an epoch's key commitment never changes (spec 8.2). The current
epoch's wrapped keys MUST name exactly the members (and, in version 2, open to the key commitment).
Every secret blob this node can decrypt MUST authenticate under its path.
The first commit that breaks a rule is reported with its id and the reason.

:func:`verify` walks the whole history (``pk vaults verify``, the audit); :func:`verify_new`
only the commits not reachable from a verified head, and only the trees and blobs they changed
(an entry equal to the one at the same path of a verified parent of the same epoch was checked
then), so its cost is in proportion to what is new.
"""

from __future__ import annotations

from typing import Any

from polykey.crypto import memory, sshsig
from polykey.errors import (
    AuthenticationError,
    InvalidInputError,
    PolykeyError,
    VaultRollbackError,
    VaultVerificationError,
)
from polykey.ids import NodeId
from polykey.vaults import grammar, rules
from polykey.vaults.format import (
    BLOB_OVERHEAD,
    DIR_MARKER,
    MAX_DEPTH,
    MAX_SECRET_BYTES,
    OWNER,
    UPGRADED,
    V2,
    Members,
    Replicas,
    VaultInfo,
    WrappedKeys,
    join_path,
    keys_file_name,
)
from polykey.vaults.identity import author_email
from polykey.vaults.repo import BLOB, TREE, CommitInfo, Entry
from polykey.vaults.vault import PK_DIR, Parts, Snapshot, Vault


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _signer(v: Vault, c: CommitInfo) -> NodeId:
    armored, payload = v.repo.signature(c.id)
    if armored is None:
        raise _Bad("the commit is not signed")
    try:
        public = sshsig.verify(armored.decode("ascii", "replace"), payload)
    except InvalidInputError as e:
        raise _Bad(f"malformed signature ({e.message})") from None
    except AuthenticationError:
        raise _Bad("the signature is invalid (forged, or the commit was altered)") from None
    signer = NodeId(public)
    if c.author_name != str(signer) or c.committer_name != str(signer) or c.author_email != author_email(signer):
        raise _Bad(f"the author and committer are not the signer {signer}")
    return signer


def _pk_tree(v: Vault, tree: str) -> str | None:
    e = v.repo.entry(tree, PK_DIR)
    return e.oid if e is not None and e.kind == TREE else None


def _check_role(v: Vault, c: CommitInfo, signer: NodeId) -> None:
    if not c.parents:
        if v.metadata(c.tree)[1].role_of(signer) != OWNER:
            raise _Bad(f"the first commit is signed by {signer}, who is not an owner in it")
        return
    rules.check_change(v, c, signer)  # rules 5 and 8: roles as of every parent, what may change .pk


def _check_keys(v: Vault, c: CommitInfo, checked: set[str]) -> None:
    """The current epoch's wrapped keys name exactly the members (section 4.3)."""
    pk = _pk_tree(v, c.tree)
    if pk is None or pk in checked:
        return
    info, members = v.metadata(c.tree)
    e = v.repo.entry(c.tree, f"{PK_DIR}/keys/{keys_file_name(info.epoch)}")
    if e is None or e.kind != BLOB:
        raise _Bad(f"it has no wrapped keys for epoch {info.epoch}")
    wrapped = WrappedKeys.decode(v.repo.read_blob(e.oid))
    if wrapped.epoch != info.epoch:
        raise _Bad("its wrapped keys are for another epoch")
    if {n for n, _w in wrapped.wraps} != {n for n, _r in members.roles}:
        raise _Bad("its wrapped keys do not match its member list")
    _check_commitment(v, info, wrapped)
    _check_replicas(v, c.tree, info, members)
    checked.add(pk)


def _check_commitment(v: Vault, info: VaultInfo, wrapped: WrappedKeys) -> None:
    """Format version 2: the current keys file has a key commitment, and the wrap this node holds
    opens to the committed secret (checked even when the key is already cached; spec 4.3)."""
    name = f"{PK_DIR}/keys/{keys_file_name(info.epoch)}"
    if info.version >= V2 and wrapped.commitment is None:
        raise _Bad(f"{name} has no key commitment (format version 2 requires one)")
    if wrapped.commitment is not None and wrapped.names(v.me):
        memory.wipe(wrapped.open(v.key, v.vault_id))


def _check_replicas(v: Vault, tree: str, info: VaultInfo, members: Members) -> None:
    """``.pk/replicas`` (spec 4.4): only in format version 2, never listing a member."""
    e = v.repo.entry(tree, f"{PK_DIR}/replicas")
    if e is None:
        return
    if info.version < V2:
        raise _Bad("a format version 1 vault has a .pk/replicas")
    replicas = Replicas.decode(v.repo.read_blob(e.oid))
    if any(members.role_of(n) is not None for n in replicas.nodes):
        raise _Bad(".pk/replicas lists a member (a member may hold the vault already)")


def _commitment(v: Vault, tree: str, info: VaultInfo) -> bytes | None:
    """The key commitment of the current epoch's keys file of ``tree`` (None: a version 1 file)."""
    e = v.repo.entry(tree, f"{PK_DIR}/keys/{keys_file_name(info.epoch)}")
    if e is None or e.kind != BLOB:
        raise _Bad(f"it has no wrapped keys for epoch {info.epoch}")
    return WrappedKeys.decode(v.repo.read_blob(e.oid)).commitment


def _check_lineage(v: Vault, c: CommitInfo, signer: NodeId) -> None:
    """Format version 2 (spec section 8.2): a root bound to its creator; along every parent, an
    epoch's key never changes, the epoch and the format version never go down and a version 2
    origin never changes."""
    info, _members = v.metadata(c.tree)
    if not c.parents:
        if info.version >= V2 and info.origin == UPGRADED:
            raise _Bad("the root commit claims an upgraded vault (an upgraded vault's root is a version 1 commit)")
        if info.version >= V2 and not info.bound_to(signer):
            raise _Bad(f"the root commit is signed by {signer}, not by the creator its VaultId derives from")
        return
    pk = _pk_tree(v, c.tree)
    for parent in c.parents:
        ptree = v.repo.commit_info(parent).tree
        if pk == _pk_tree(v, ptree):
            continue  # the same .pk: nothing of it changed along this parent
        pinfo, _pmembers = v.metadata(ptree)
        before = _commitment(v, ptree, pinfo) if info.epoch == pinfo.epoch else None
        if before is not None and before != _commitment(v, c.tree, info):
            raise _Bad(f"it changes the key of epoch {info.epoch} (its key commitment differs from parent {parent[:12]}'s)")
        if info.epoch < pinfo.epoch:
            raise _Bad(f"its epoch {info.epoch} goes down from {pinfo.epoch} of parent {parent[:12]}")
        if info.version < pinfo.version:
            raise _Bad(f"its format version {info.version} goes down from parent {parent[:12]}")
        if pinfo.version >= V2 and (info.origin, info.nonce) != (pinfo.origin, pinfo.nonce):
            raise _Bad(f"it changes the vault's origin recorded in .pk/vault of parent {parent[:12]}")
        if pinfo.version < V2 <= info.version and info.origin != UPGRADED:
            raise _Bad("a format version 1 vault becomes version 2 only as an upgraded vault")


def _ident(snap: Snapshot) -> bytes | None:
    return snap.keys.commitment if snap.keys is not None else None


class _Trees:
    """The tree and blob checks of one walk: each ``(path, tree)`` and ``(path, blob)`` pair once."""

    def __init__(self, v: Vault) -> None:
        self.v = v
        self.seen: set[tuple[Parts, str]] = set()
        self._root: tuple[str, list[grammar.TreeEntry]] | None = None

    def parse(self, tree: str) -> list[grammar.TreeEntry]:
        if self._root is not None and self._root[0] == tree:
            return self._root[1]
        return grammar.parse_tree(tree, self.v.repo.raw(tree, "tree", grammar.MAX_TREE_BYTES))

    def root(self, tree: str) -> None:
        """The grammar of a commit's root tree, checked before anything reads through it."""
        entries = self.parse(tree)
        grammar.check_secret_tree(tree, entries, True)
        self._root = (tree, entries)

    def check(self, snap: Snapshot, base: Snapshot | None) -> None:
        """The trees and blobs of ``snap`` that differ from verified ``base`` (same epoch) or all."""
        if base is not None and (base.info.epoch != snap.info.epoch or _ident(base) != _ident(snap)):
            base = None
        stack: list[tuple[Parts, str, str | None]] = [((), snap.tree, base.tree if base else None)]
        while stack:
            prefix, tree, old = stack.pop()
            if (prefix, tree) in self.seen:
                continue
            self.seen.add((prefix, tree))
            entries = self.parse(tree)
            grammar.check_secret_tree(tree, entries, not prefix)
            before = dict(self.v.repo.list_tree(old)) if old is not None else {}
            for e in entries:
                kept = before.get(e.name)
                if kept is not None and kept == Entry(TREE if e.is_tree else BLOB, e.oid):
                    continue  # checked with the verified commit that has it at this very path
                if not prefix and e.name == PK_DIR:
                    self._check_pk(e.oid)
                elif e.name == DIR_MARKER:
                    if self.v.repo.blob_size(e.oid) != 0:
                        raise _Bad(f"a directory marker under {join_path(prefix) or '/'} is not an empty blob")
                else:
                    parts = prefix + (snap.keys.decrypt_name(e.name) if snap.keys else e.name,)
                    if e.is_tree:
                        if len(parts) > MAX_DEPTH:
                            raise _Bad(f"a tree is nested deeper than {MAX_DEPTH} levels (no secret path is)")
                        stack.append((parts, e.oid, kept.oid if kept is not None and kept.kind == TREE else None))
                    else:
                        self._check_blob(snap, parts, e.oid)

    def _check_pk(self, tree: str) -> None:
        entries = self.parse(tree)
        grammar.check_pk_tree(tree, entries)
        keys = next(e.oid for e in entries if e.name == "keys")
        grammar.check_keys_tree(keys, self.parse(keys))

    def _check_blob(self, snap: Snapshot, parts: Parts, oid: str) -> None:
        if (parts, oid) in self.seen:
            return
        self.seen.add((parts, oid))
        if self.v.repo.blob_size(oid) > MAX_SECRET_BYTES + BLOB_OVERHEAD:
            raise _Bad(f"blob {oid[:12]} is larger than any secret")
        if snap.keys is not None:
            self.v.decrypt(snap, parts, oid)


def _check_commits(v: Vault, commits: list[str], pinned: bool) -> str | None:
    """Check ``commits`` (parents first; their parents outside the list already verified). Returns
    the root among them. ``pinned``: the history already has its root, so none may be new."""
    trees = _Trees(v)
    checked: set[str] = set()
    root = None
    for oid in commits:
        try:
            header = grammar.parse_commit(oid, v.repo.raw(oid, "commit", grammar.MAX_COMMIT_BYTES))
            if not header.parents and (pinned or root is not None):
                raise _Bad("a second root commit (a history has exactly one)")
            root = root if header.parents else oid
            c = v.repo.commit_info(oid)
            signer = _signer(v, c)
            trees.root(header.tree)
            _check_role(v, c, signer)
            rules.check_revocation(v, c)
            rules.check_times(v, c, v.clock())
            _check_keys(v, c, checked)
            _check_lineage(v, c, signer)
            snap = v.load(c.id)
            trees.check(snap, v.load(c.parents[0]) if c.parents else None)
        except (_Bad, rules.RuleError) as bad:
            raise VaultVerificationError(f"commit {oid}: {bad.reason}", commit=oid, reason=bad.reason) from None
        except PolykeyError as e:
            raise VaultVerificationError(f"commit {oid}: {e.message}", commit=oid, reason=e.message) from None
    return root


def _head(v: Vault) -> str:
    head = v.repo.head()
    if head is None:
        raise VaultVerificationError("the vault has no history (its branch is missing)", commit=None,
                                     reason="no branch")
    return head


def _history(v: Vault, head: str, since: str | None) -> list[str]:
    try:
        return v.repo.new_commits(head, since)
    except PolykeyError:
        raise VaultVerificationError(f"the history of {head} has a missing or corrupt commit", commit=head,
                                     reason="missing or corrupt object") from None


def verify(v: Vault, head: str | None = None) -> dict[str, Any]:
    """Check the whole history of ``head`` (the branch by default); VaultVerificationError names the
    first bad commit. Returns ``{"ok", "commits", "head", "root"}``."""
    with v.repo.read_lock():
        head = head or _head(v)
        commits = _history(v, head, None)
        root = _check_commits(v, commits, pinned=False)
        return {"ok": True, "commits": len(commits), "head": head, "root": root}


def verify_new(v: Vault, head: str, verified: str) -> int:
    """Check the commits of ``head`` not reachable from ``verified`` (section 10.3); the number checked.

    VaultRollbackError, naming both, if ``head`` does not descend from ``verified``.
    """
    if head == verified:
        return 0
    with v.repo.read_lock():
        commits = _history(v, head, verified)
        if not any(verified in v.repo.commit_info(c).parents for c in commits):
            raise VaultRollbackError(
                f"the vault's head {head} does not descend from {verified}, the head this node last verified "
                "(a rollback or another history); nothing of it was used",
                head=head, verified=verified)
        _check_commits(v, commits, pinned=True)
        return len(commits)


def verify_commits(v: Vault, commits: list[str]) -> int:
    """Check just ``commits`` (parents first), whose parents outside the list are verified already:
    received commits on a diverged head, or the commits a merge wrote (its self-check). None may be
    a root (the history's root is pinned). VaultVerificationError names the first bad one; returns
    how many were checked."""
    with v.repo.read_lock():
        _check_commits(v, commits, pinned=True)
        return len(commits)
