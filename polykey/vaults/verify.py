"""The verification rule (DESIGN.md section 3; docs/spec/vault-format.md section 8).

Every commit, oldest first, MUST carry an SSHSIG (namespace ``git``) by the
Ed25519 key whose NodeId is its author and committer, and that NodeId MUST
hold, as of every parent, a role allowing the change: ``owner`` or ``writer``
for secrets, ``owner`` when ``.pk/`` changes. A root commit MUST be signed by an
owner listed in its own ``.pk/members``. The current epoch's wrapped keys MUST name
exactly the members. Every secret blob this node can
decrypt MUST authenticate under its path. The first commit that breaks a rule
is reported with its id and the reason.
"""

from __future__ import annotations

from typing import Any

from polykey.crypto import sshsig
from polykey.errors import (
    AuthenticationError,
    InvalidInputError,
    PolykeyError,
    VaultIntegrityError,
    VaultVerificationError,
)
from polykey.ids import NodeId
from polykey.vaults.format import DIR_MARKER, MAX_DEPTH, OWNER, WRITER, WrappedKeys, join_path, keys_file_name
from polykey.vaults.identity import author_email
from polykey.vaults.repo import BLOB, TREE, CommitInfo
from polykey.vaults.vault import PK_DIR, Parts, Snapshot, Vault


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _topological(v: Vault, head: str) -> list[CommitInfo]:
    """All commits reachable from ``head``, parents before children."""
    infos: dict[str, CommitInfo] = {}
    order: list[CommitInfo] = []
    stack: list[tuple[str, bool]] = [(head, False)]
    done: set[str] = set()
    while stack:
        oid, expanded = stack.pop()
        if expanded:
            if oid not in done:
                done.add(oid)
                order.append(infos[oid])
            continue
        if oid in done or oid in infos:
            continue
        try:
            info = v.repo.commit_info(oid)
        except VaultIntegrityError:
            raise VaultVerificationError(
                f"commit {oid} is missing or corrupt", commit=oid, reason="missing or corrupt object"
            ) from None
        infos[oid] = info
        stack.append((oid, True))
        for p in reversed(info.parents):
            if p not in done:
                stack.append((p, False))
    return order


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
    info, members = v.metadata(c.tree)
    if not c.parents:
        if members.role_of(signer) != OWNER:
            raise _Bad(f"the first commit is signed by {signer}, who is not an owner in it")
        return
    pk = _pk_tree(v, c.tree)
    for parent in c.parents:
        ptree = v.repo.commit_info(parent).tree
        _pinfo, pmembers = v.metadata(ptree)
        role = pmembers.role_of(signer)
        if role is None:
            raise _Bad(f"signed by {signer}, who was not a member as of parent {parent[:12]}")
        if role not in (OWNER, WRITER):
            raise _Bad(f"signed by {signer}, a {role}, who may not change the vault")
        if pk != _pk_tree(v, ptree) and role != OWNER:
            raise _Bad(f"changes the vault membership or keys, but {signer} is a {role}, not an owner")


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
    checked.add(pk)


def _check_blobs(v: Vault, snap: Snapshot, seen: set[tuple[Parts, str]]) -> None:
    if snap.keys is None:
        return
    stack: list[tuple[Parts, str]] = [((), snap.tree)]
    while stack:
        prefix, tree = stack.pop()
        if (prefix, tree) in seen:
            continue
        seen.add((prefix, tree))
        for name, e in v.repo.list_tree(tree):
            if not prefix and name == PK_DIR:
                continue
            if name == DIR_MARKER:
                if e.kind != BLOB or v.repo.blob_size(e.oid) != 0:
                    raise _Bad(f"a directory marker under {join_path(prefix) or '/'} is not an empty blob")
                continue
            parts = prefix + (snap.keys.decrypt_name(name),)
            if e.kind == TREE:
                if len(parts) > MAX_DEPTH:
                    raise _Bad(f"a tree is nested deeper than {MAX_DEPTH} levels (no secret path is)")
                stack.append((parts, e.oid))
            elif (parts, e.oid) not in seen:
                seen.add((parts, e.oid))
                v.decrypt(snap, parts, e.oid)


def verify(v: Vault) -> dict[str, Any]:
    """Check the whole history; VaultVerificationError names the first bad commit."""
    with v.repo.read_lock():
        head = v.repo.head()
        if head is None:
            raise VaultVerificationError("the vault has no history (its branch is missing)", commit=None,
                                         reason="no branch")
        commits = _topological(v, head)
        seen: set[tuple[Parts, str]] = set()
        checked: set[str] = set()
        for c in commits:
            try:
                signer = _signer(v, c)
                _check_role(v, c, signer)
                _check_keys(v, c, checked)
                _check_blobs(v, v.load(c.id), seen)
            except _Bad as bad:
                raise VaultVerificationError(f"commit {c.id}: {bad.reason}", commit=c.id, reason=bad.reason) from None
            except PolykeyError as e:
                raise VaultVerificationError(f"commit {c.id}: {e.message}", commit=c.id, reason=e.message) from None
        return {"ok": True, "commits": len(commits), "head": head}
