"""Rules a merge can satisfy, revocation that wins, and commit times (docs/spec/vault-format.md
section 8, rules 5, 8, 9 and 10).

Called by :mod:`polykey.vaults.verify` for every commit it checks, oldest first, so the parents
of a commit are verified when its own rules run: a parent's author is then its signer. Nothing
here needs a key, so a keyless replica checks the same rules.

- :func:`check_change` (rules 5 and 8): the signer holds ``owner`` or ``writer`` as of every
  parent; a one-parent commit that changes ``.pk`` is an owner's. A merge's ``.pk`` is the
  three-way result of its parents' against their merge base (the side that changed it), unless
  an owner merges; an owner merging two different ``.pk`` states after either side started a
  new epoch starts a newer one.
- :func:`check_revocation` (rule 9): a merge brings in no commit whose signer could write as of
  the merge base and cannot as of the other parent (removed or made a reader there).
- :func:`check_times` (rule 10): a commit is not older than its parents nor more than
  :data:`MAX_FUTURE_SECONDS` ahead of this node's clock.

At most two parents, and a committer equal to the author (name, email and time), are the
grammar's (section 8.1, :mod:`polykey.vaults.grammar`), not repeated here.
"""

from __future__ import annotations

from polykey.ids import NodeId
from polykey.vaults.format import OWNER, WRITER, Members
from polykey.vaults.repo import TREE, CommitInfo
from polykey.vaults.vault import PK_DIR, Vault

#: How far ahead of the receiver's clock a commit may be dated (section 8, rule 10).
MAX_FUTURE_SECONDS = 600


class RuleError(Exception):
    """A commit breaks one of these rules; ``reason`` says which (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _pk(v: Vault, commit: str) -> tuple[str | None, int, Members]:
    """A commit's ``.pk`` tree id, epoch and members."""
    tree = v.repo.commit_info(commit).tree
    e = v.repo.entry(tree, PK_DIR)
    info, members = v.metadata(tree)
    return (e.oid if e is not None and e.kind == TREE else None), info.epoch, members


def _writers(members: Members) -> set[NodeId]:
    return {n for n, role in members.roles if role in (OWNER, WRITER)}


def check_times(v: Vault, c: CommitInfo, now: float) -> None:
    """Rule 10: not older than a parent; unless this node signed it (its author is its signer, checked
    first), not more than ten minutes ahead of ``now``."""
    for parent in c.parents:
        if c.time < v.repo.commit_info(parent).time:
            raise RuleError(f"it is dated before its parent {parent[:12]} (commit times never go back)")
    if c.time > now + MAX_FUTURE_SECONDS and c.author_name != str(v.me):  # our own were not received
        raise RuleError(f"it is dated {int(c.time - now)} s ahead of this node's clock "
                        f"(at most {MAX_FUTURE_SECONDS} s are allowed)")


def check_change(v: Vault, c: CommitInfo, signer: NodeId) -> None:
    """Rules 5 and 8 for a commit with parents: the signer's role as of each, and what it may do
    to ``.pk``."""
    parents = [_pk(v, p) for p in c.parents]
    roles = []
    for parent, (_tree, _epoch, members) in zip(c.parents, parents):
        role = members.role_of(signer)
        if role is None:
            raise RuleError(f"signed by {signer}, who was not a member as of parent {parent[:12]}")
        if role not in (OWNER, WRITER):
            raise RuleError(f"signed by {signer}, a {role}, who may not change the vault")
        roles.append(role)
    owner = all(r == OWNER for r in roles)
    pk, epoch, _members = _pk(v, c.id)
    if len(parents) == 1:
        if pk != parents[0][0] and not owner:
            raise RuleError(f"changes the vault membership or keys, but {signer} is a {roles[0]}, not an owner")
        return
    (pk1, e1, _m1), (pk2, e2, _m2) = parents
    pkb, eb, _mb = _pk(v, _merge_base(v, c))
    if pk1 == pkb:
        merged: str | None = pk2
    elif pk2 == pkb or pk1 == pk2:
        merged = pk1
    else:
        merged = None  # both sides changed .pk, differently
    if pk == merged:
        return
    if not owner:
        raise RuleError(
            f"a merge by {signer}, not an owner, " + (
                "of two different .pk states (membership or keys changed on both sides)" if merged is None
                else "that does not keep the .pk of the side that changed it"))
    if pk1 != pk2 and (e1 != eb or e2 != eb) and epoch <= max(e1, e2):
        raise RuleError("merges two .pk states after a new epoch without starting a newer epoch")


def _merge_base(v: Vault, c: CommitInfo) -> str:
    base = v.repo.merge_base(c.parents[0], c.parents[1])
    if base is None:
        raise RuleError("it merges two unrelated histories")
    return base


def revoked_commits(v: Vault, side: str, other: str, base: str) -> list[str]:
    """Rule 9 for one parent: the commits reachable from ``side`` and not from ``other`` (parents
    first) signed by a node that could write as of ``base`` and cannot as of ``other`` (removed or
    made a reader there). The commits are verified, so each author is its signer. Cost: two member
    lists compared; the commits of ``side`` are walked only when a node lost write access."""
    revoked = {str(n) for n in _writers(_pk(v, base)[2]) - _writers(_pk(v, other)[2])}
    if not revoked:
        return []
    return [oid for oid in v.repo.new_commits(side, other) if v.repo.commit_info(oid).author_name in revoked]


def check_revocation(v: Vault, c: CommitInfo) -> None:
    """Rule 9: for each parent of a merge, the commits it brings in (reachable from it and not from
    the other parent) are not by a node that could write as of the merge base and cannot as of the
    other parent (:func:`revoked_commits`)."""
    if len(c.parents) != 2:
        return
    base = _merge_base(v, c)
    for side, other in (c.parents, tuple(reversed(c.parents))):
        for oid in revoked_commits(v, side, other, base)[:1]:
            author = v.repo.commit_info(oid).author_name
            raise RuleError(f"it brings in commit {oid[:12]} by {author}, who was removed or made a "
                            f"reader as of parent {other[:12]} (revocation wins)")
