"""What a node does when another member's verified head arrives and differs from its own (DESIGN.md
section 3 "Merges"; docs/spec/vault-format.md section 8, rules 5 and 8 to 10).

:func:`integrate` decides, for two verified heads ``ours`` and ``theirs`` of one repository, the
commit the branch should point at, and writes at most one commit (never moving the branch): the
caller holds ``v.repo.write_lock()``, checks every commit in :attr:`Outcome.written` with the
verification rules, then moves the branch.

- Fast-forward when one head descends from the other; two merges of the same two heads adopt the
  one with the smaller commit id (no ping-pong of merge commits).
- Revocation wins (rule 9): a head that brings in commits of a node removed (or made a reader) on
  our side is not merged (``kept``); if our side holds such commits, the result is theirs with this
  node's own changes since the merge base re-applied as one commit (``rebased``).
- Otherwise one merge commit, parents ``[ours, theirs]``, signed by this node: a three-way merge of
  the secret trees against the merge base, computed on the two heads in a canonical order so that
  every node computing it gets the same tree. Within one epoch names are deterministic, so the
  encrypted trees are compared by stored name, descending only into subtrees that differ. The same
  secret changed on both sides, delete against modify, secret against directory: the side whose
  last change of that path since the base is later by (commit time, NodeId bytes, commit id)
  wins, and the conflict is reported by plain path (the losing value stays in history).
- ``.pk`` (rule 8): when one side changed it, the merge keeps that side's ``.pk`` and epoch, and
  the other side's changes are re-encrypted under that epoch's keys (with nonces derived from the
  source blob and path, so the re-encrypted tree is the same on every node). Two different
  ``.pk`` states are merged only by an owner: members three-way (a removal wins, otherwise the
  later side's role), in a new epoch wrapped for the merged members, the merged tree re-encrypted.

Cost: in proportion to the divergence (the commits since the base and the trees they changed),
except where an epoch changed on a side, when the trees of that side are compared by value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import PolykeyError, VaultIntegrityError
from polykey.ids import NodeId
from polykey.vaults import rules
from polykey.vaults.format import (
    DIR_MARKER,
    MAX_DEPTH,
    OWNER,
    WRITER,
    EpochKeys,
    Members,
    Replicas,
    VaultInfo,
    WrappedKeys,
    join_path,
    keys_file_name,
)
from polykey.vaults.repo import BLOB, TREE, Change, CommitInfo, Entry
from polykey.vaults.vault import MARKER, PK_DIR, Parts, Vault

MERGE_MESSAGE = "merge\n"
REAPPLY_MESSAGE = "reapply local changes\n"
READER_REASON = "this node is a reader: a writer's merge will reconcile the two heads"
REMOVED_REASON = "this node is no member on one side: a writer's merge will reconcile the two heads"
PK_REASON = "both sides changed the membership; an owner's node merges them"
REVOKED_REASON = "their head brings in commits by a member removed (or made a reader) on this side; they were refused"
SAME_TREE_REASON = ("the other head holds the same content: the node whose head has the smaller id merges "
                    "the two histories, and this node fast-forwards to that merge")
NO_KEY_REASON = "this node holds no key of an epoch one side is in; a member holding it merges the two heads"
_NONCE_INFO = b"polykey vault merge nonce v1"


@dataclass(frozen=True)
class Outcome:
    """What :func:`integrate` decided."""

    head: str  #: the commit the branch should point at
    action: str  #: "up-to-date" | "fast-forward" | "merged" | "adopted" | "rebased" | "kept"
    #: ``{"path", "winner", "loser", "kind"}``: plain path, the winning and losing side's commit
    #: that last changed it, ``"modified"`` | ``"deleted"`` | ``"type"`` (secret against directory).
    conflicts: list[dict[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  #: commit ids not brought in (revoked writers')
    reapplied: int = 0  #: own commits whose changes were re-applied on top ("rebased")
    reason: str | None = None  #: for "kept": why (one line, no secret name)
    written: list[str] = field(default_factory=list)  #: commits this call wrote (to self-check)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A secret blob, or a directory marker (``keys`` None), at a plain path."""

    oid: str
    keys: EpochKeys | None


Changes = dict[Parts, Leaf | None]


class _Kept(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def integrate(v: Vault, ours: str, theirs: str) -> Outcome:
    """Decide where the branch goes when verified head ``theirs`` arrives and the branch is at
    verified head ``ours`` (both in ``v.repo``, the caller holding its write lock), writing at most
    one commit (in :attr:`Outcome.written`, to be checked by the caller before the branch moves).

    Deterministic: the same tree whichever node computes it and whichever head is ``ours``. Never
    raises for two verified heads of one history; a malformed input raises VaultIntegrityError.
    """
    for oid in (ours, theirs):
        if not isinstance(oid, str) or len(oid) != 40 or any(c not in "0123456789abcdef" for c in oid):
            raise VaultIntegrityError("a head to merge is not a 40-digit lowercase commit id")
    repo = v.repo
    repo.commit_info(ours), repo.commit_info(theirs)  # both are commits, or VaultIntegrityError
    if ours == theirs or repo.is_ancestor(theirs, ours):
        return Outcome(ours, "up-to-date")
    if repo.is_ancestor(ours, theirs):
        return Outcome(theirs, "fast-forward")
    adopted = _adoption(v, ours, theirs)
    if adopted is not None:
        return adopted
    if theirs < ours and repo.commit_info(ours).tree == repo.commit_info(theirs).tree:
        # Same content, two histories: only one of the two nodes writes the merge that joins them,
        # or each would merge the other's merge for ever (three writers after a partition heals).
        return Outcome(ours, "kept", reason=SAME_TREE_REASON)
    a, b = sorted((ours, theirs))  # canonical order: the result never depends on which is ours
    base = repo.merge_base(a, b)
    if base is None:
        raise VaultIntegrityError("the two heads have no common ancestor (two unrelated histories)")
    refused = rules.revoked_commits(v, theirs, ours, base)
    if refused:
        return Outcome(ours, "kept", dropped=refused, reason=REVOKED_REASON)
    stale = rules.revoked_commits(v, ours, theirs, base)
    if stale:
        return _rebase(v, ours, theirs, stale)
    try:
        return _Merge(v, ours, theirs, a, b, base).run()
    except _Kept as kept:
        return Outcome(ours, "kept", reason=kept.reason)


def _adoption(v: Vault, ours: str, theirs: str) -> Outcome | None:
    """Rule "no ping-pong": two merge commits of the same two parents (as a set). Both nodes keep the
    one with the smaller id. With a deterministic merge the trees are the same; an owner's merge of
    two membership states wraps a fresh epoch key, so its tree differs from another owner's merge
    of the same heads, and adopting the smaller one is what stops the two from merging forever."""
    o, t = v.repo.commit_info(ours), v.repo.commit_info(theirs)
    if len(o.parents) != 2 or len(t.parents) != 2 or set(o.parents) != set(t.parents):
        return None
    return Outcome(theirs, "adopted") if theirs < ours else Outcome(ours, "up-to-date")


def _writer_or_owner(v: Vault, commit: str) -> bool:
    return v.metadata(v.repo.commit_info(commit).tree)[1].role_of(v.me) in (OWNER, WRITER)


def _when(v: Vault, *parents: str) -> int:
    """Rule 10: not before any parent, whatever this node's clock says."""
    return max([int(v.clock())] + [v.repo.commit_info(p).time for p in parents])


def _rebase(v: Vault, ours: str, theirs: str, stale: list[str]) -> Outcome:
    """Our side holds commits of a node that lost write access on their side: theirs, plus this
    node's own changes since the base re-applied as one commit (rule 9, revocation wins). Own
    changes of secrets only (not of ``.pk``); an own secret where theirs holds a directory at that
    path or a secret at a parent path is not re-applied (it stays in this node's history)."""
    mine = [c for c in v.repo.new_commits(ours, theirs) if v.repo.commit_info(c).author_name == str(v.me)]
    if not mine:
        return Outcome(theirs, "rebased", dropped=stale)
    if not _writer_or_owner(v, theirs):  # removed or made a reader there: our writes go with it
        return Outcome(theirs, "rebased", dropped=stale + [c for c in mine if c not in stale])
    m = _Merge(v, ours, theirs, ours, theirs, theirs)
    try:
        target = m.keys.of(theirs)
        own: Changes = {}
        for c in mine:  # parents first, so a later change of a path overrides an earlier one
            info = v.repo.commit_info(c)
            if len(info.parents) != 1:
                continue  # an own merge brings in others' changes, not its own
            own.update(m.diff(info.parents[0], c))
    except _Kept as kept:
        return Outcome(ours, "kept", reason=kept.reason)
    tree = v.repo.commit_info(theirs).tree
    ops: dict[Parts, Change] = {}
    for p, leaf in sorted(own.items()):
        stored = v.stored_path(target, p)
        now = v.repo.entry(tree, "/".join(stored))
        if leaf is None:
            if now is not None and now.kind == BLOB:  # never a directory of theirs by that name
                ops[stored] = None
            continue
        if (now is not None and now.kind == TREE) or any(
                (e := v.repo.entry(tree, "/".join(stored[:k]))) is not None and e.kind == BLOB
                for k in range(1, len(stored))):
            continue
        oid = m.translate(p, leaf, target)
        if now is None or now.oid != oid:
            ops[stored] = Entry(BLOB, oid)
    if not ops:
        return Outcome(theirs, "rebased", dropped=stale, reapplied=len(mine))
    new_tree = v.repo.apply(tree, _consistent(ops))
    commit = v.repo.write_commit(new_tree, [theirs], REAPPLY_MESSAGE, v.key, when=_when(v, theirs))
    return Outcome(commit, "rebased", dropped=stale, reapplied=len(mine), written=[commit])


def _consistent(ops: dict[Parts, Change]) -> dict[Parts, Change]:
    """Drop the changes below a path that becomes a secret (the secret replaces that directory)."""
    blobs = {p for p, c in ops.items() if c is not None and c.kind == BLOB}
    return {p: c for p, c in ops.items() if not any(p[:k] in blobs for k in range(1, len(p)))}


class _Keys:
    """The epoch keys of commits: this node's own wrap, or, when a commit's keys file holds none
    (this node was added later in the same epoch), a key already opened with the same commitment."""

    def __init__(self, v: Vault) -> None:
        self.v = v
        self.ring: dict[bytes, EpochKeys] = {}

    def of(self, commit: str) -> EpochKeys:
        snap = self.v.load(commit)
        if snap.keys is not None:
            self.ring[snap.keys.commitment] = snap.keys
            return snap.keys
        e = self.v.repo.entry(snap.tree, f"{PK_DIR}/keys/{keys_file_name(snap.info.epoch)}")
        commitment = WrappedKeys.decode(self.v.repo.read_blob(e.oid)).commitment if e is not None else None
        found = self.ring.get(commitment) if commitment is not None else None
        if found is None:
            raise _Kept(NO_KEY_REASON)
        return found


def _pk_oid(v: Vault, commit: str) -> str | None:
    e = v.repo.entry(v.repo.commit_info(commit).tree, PK_DIR)
    return e.oid if e is not None and e.kind == TREE else None


def _order(c: CommitInfo) -> tuple[int, bytes, str]:
    """Last-writer-wins order: commit time, then the signer's NodeId bytes, then the commit id."""
    try:
        node = NodeId.from_text(c.author_name).raw
    except PolykeyError:
        raise VaultIntegrityError(f"commit {c.id[:12]} has no NodeId as its author") from None
    return c.time, node, c.id


class _Merge:
    """One three-way merge of heads ``a`` and ``b`` (canonical order) against ``base``."""

    def __init__(self, v: Vault, ours: str, theirs: str, a: str, b: str, base: str) -> None:
        self.v, self.ours, self.theirs = v, ours, theirs
        self.heads, self.base = (a, b), base
        self.keys = _Keys(v)

    # -- the decision ------------------------------------------------------------

    def run(self) -> Outcome:
        v, (a, b), base = self.v, self.heads, self.base
        roles = [v.metadata(v.repo.commit_info(h).tree)[1].role_of(v.me) for h in (self.ours, self.theirs)]
        if None in roles:
            raise _Kept(REMOVED_REASON)
        if any(role not in (OWNER, WRITER) for role in roles):
            raise _Kept(READER_REASON)
        pka, pkb, pk0 = _pk_oid(v, a), _pk_oid(v, b), _pk_oid(v, base)
        both = pka != pk0 and pkb != pk0 and pka != pkb
        if both and not all(v.metadata(v.repo.commit_info(h).tree)[1].role_of(v.me) == OWNER for h in (a, b)):
            raise _Kept(PK_REASON)
        # the side whose .pk (and epoch) the result is in: the side that changed it, else a
        r = 1 if (pka == pk0 and pkb != pk0) else 0
        ka, kb = self.keys.of(a), self.keys.of(b)
        k0 = self.keys.of(base)
        kr = (ka, kb)[r]
        changes = (self.diff(base, a, k0, ka), self.diff(base, b, k0, kb))
        final, conflicts = self.decide(changes, r, k0)
        if both:
            tree = self.remerge_pk(final, kr)
        else:
            ops: dict[Parts, Change] = {}
            for p, leaf in final.items():
                current = changes[r][p] if p in changes[r] else self.base_leaf(p, k0)
                if _same(leaf, current):
                    continue
                ops[v.stored_path(kr, p)] = None if leaf is None else Entry(BLOB, self.translate(p, leaf, kr))
            tree = v.repo.apply(v.repo.commit_info(self.heads[r]).tree, _consistent(ops))
        commit = v.repo.write_commit(tree, [self.ours, self.theirs], MERGE_MESSAGE, v.key,
                                     when=_when(v, self.ours, self.theirs))
        return Outcome(commit, "merged", conflicts=conflicts, written=[commit])

    def decide(self, changes: tuple[Changes, Changes], r: int, k0: EpochKeys
               ) -> tuple[dict[Parts, Leaf | None], list[dict[str, str]]]:
        """The final state of every path either side changed, and the conflicts it resolved."""
        sets = [{p for p, leaf in c.items() if leaf is not None} for c in changes]
        dirs = [{p[:k] for p in s for k in range(1, len(p))} for s in sets]
        owner: dict[Parts, int] = {}  # the side whose change decides a path
        conflicts: list[tuple[Parts, str, int, int]] = []  # (path, kind, one side, the other)
        regions: dict[Parts, int] = {}  # a secret on one side, a directory on the other: its winner
        for s in (0, 1):
            for p in sorted(sets[s]):
                if p[-1] != MARKER and p in dirs[1 - s]:
                    regions[p] = s
                    conflicts.append((p, "type", s, 1 - s))
        for p in sorted(changes[0].keys() & changes[1].keys()):
            if any(p[:k] in regions for k in range(1, len(p) + 1)):
                continue
            x, y = changes[0][p], changes[1][p]
            if _same(x, y) or (x is not None and y is not None and self.equal(p, x, y)):
                owner[p] = r
            else:
                conflicts.append((p, "modified" if x is not None and y is not None else "deleted", 0, 1))
        last = [self.last_changes(h, sorted({c[0] for c in conflicts})) for h in self.heads]
        reports = []
        for p, kind, s, o in conflicts:
            w, l_ = (s, o) if _order(last[s][p]) > _order(last[o][p]) else (o, s)
            if p in regions:
                regions[p] = w
            else:
                owner[p] = w
            reports.append({"path": join_path(p[:-1] if p[-1] == MARKER else p), "winner": last[w][p].id,
                            "loser": last[l_][p].id, "kind": kind})
        final: dict[Parts, Leaf | None] = {}
        for p in sorted(changes[0].keys() | changes[1].keys()):
            region = next((p[:k] for k in range(1, len(p) + 1) if p[:k] in regions), None)
            if region is not None:
                side = regions[region]
            elif p in owner:
                side = owner[p]
            else:
                side = 0 if p in changes[0] else 1
            final[p] = changes[side][p] if p in changes[side] else self.base_leaf(p, k0)
        reports.sort(key=lambda c: (c["path"], c["kind"]))
        return final, reports

    # -- trees in plain paths --------------------------------------------------------

    def diff(self, old: str, new: str, ko: EpochKeys | None = None, kn: EpochKeys | None = None) -> Changes:
        """The plain paths whose secret or marker differs from commit ``old`` to commit ``new``."""
        ko = ko or self.keys.of(old)
        kn = kn or self.keys.of(new)
        to, tn = self.v.repo.commit_info(old).tree, self.v.repo.commit_info(new).tree
        out: Changes = {}
        if ko.commitment == kn.commitment:
            self._stored_diff(kn, to, tn, (), out)
            return out
        before, after = dict(self.leaves(ko, to, ())), dict(self.leaves(kn, tn, ()))
        for p in before.keys() | after.keys():
            x, y = before.get(p), after.get(p)
            if x is None or y is None or not self.equal(p, x, y):
                out[p] = y
        return out

    def _stored_diff(self, keys: EpochKeys, old: str | None, new: str | None, prefix: Parts, out: Changes) -> None:
        before = dict(self.v.repo.list_tree(old)) if old else {}
        after = dict(self.v.repo.list_tree(new)) if new else {}
        for name in sorted(before.keys() | after.keys()):
            x, y = before.get(name), after.get(name)
            if x == y or (not prefix and name == PK_DIR):
                continue
            if name == DIR_MARKER:
                out[prefix + (MARKER,)] = Leaf(y.oid, None) if y is not None else None
                continue
            parts = _deeper(prefix, keys.decrypt_name(name))
            if x is not None and y is not None and x.kind == TREE and y.kind == TREE:
                self._stored_diff(keys, x.oid, y.oid, parts, out)
                continue
            if x is not None:
                if x.kind == TREE:
                    out.update((p, None) for p, _leaf in self.leaves(keys, x.oid, parts))
                else:
                    out[parts] = None
            if y is not None:
                if y.kind == TREE:
                    out.update(self.leaves(keys, y.oid, parts))
                else:
                    out[parts] = Leaf(y.oid, keys)

    def leaves(self, keys: EpochKeys, tree: str, prefix: Parts) -> Iterator[tuple[Parts, Leaf]]:
        """Every secret and marker under ``tree`` (``.pk`` of the root tree excepted)."""
        for name, e in self.v.repo.list_tree(tree):
            if not prefix and name == PK_DIR:
                continue
            if name == DIR_MARKER:
                yield prefix + (MARKER,), Leaf(e.oid, None)
                continue
            parts = _deeper(prefix, keys.decrypt_name(name))
            if e.kind == TREE:
                yield from self.leaves(keys, e.oid, parts)
            else:
                yield parts, Leaf(e.oid, keys)

    def base_leaf(self, p: Parts, k0: EpochKeys) -> Leaf | None:
        e = self.v.repo.entry(self.v.repo.commit_info(self.base).tree, "/".join(self.v.stored_path(k0, p)))
        if e is None or e.kind != BLOB:
            return None
        return Leaf(e.oid, None if p[-1] == MARKER else k0)

    def value(self, p: Parts, leaf: Leaf) -> bytes:
        if leaf.keys is None:
            return b""
        return leaf.keys.decrypt_secret(join_path(p), self.v.repo.read_blob(leaf.oid))

    def equal(self, p: Parts, x: Leaf, y: Leaf) -> bool:
        """Whether two leaves at one path hold the same value (compared in constant time)."""
        if x.oid == y.oid:
            return True
        if (x.keys is None) != (y.keys is None):
            return False
        return crypto.constant_time_eq(self.value(p, x), self.value(p, y))

    def translate(self, p: Parts, leaf: Leaf, keys: EpochKeys) -> str:
        """The blob of ``leaf`` under ``keys``: itself in the same epoch, else re-encrypted with a
        nonce derived from the source blob and path (the same blob on every node computing it)."""
        if leaf.keys is None or leaf.keys.commitment == keys.commitment:
            return leaf.oid
        path = join_path(p)
        info = _NONCE_INFO + bytes.fromhex(leaf.oid) + path.encode("utf-8")

        def nonce(n: int) -> bytes:
            return crypto.derive(keys.content_key, info, n)

        return self.v.repo.write_blob(keys.encrypt_secret(path, self.value(p, leaf), rng=nonce))

    # -- last writer wins -----------------------------------------------------------

    def last_changes(self, head: str, paths: list[Parts]) -> dict[Parts, CommitInfo]:
        """For each path, the latest (:func:`_order`) commit on ``head``'s side since the base that
        changed it (its entry differs from every parent's); ``head`` itself if none did."""
        found: dict[Parts, CommitInfo] = {}
        if not paths:
            return found
        for oid in self.v.repo.new_commits(head, self.base):
            c = self.v.repo.commit_info(oid)
            for p in paths:
                if (p not in found or _order(c) > _order(found[p])) and self.changed(c, p):
                    found[p] = c
        top = self.v.repo.commit_info(head)
        return {p: found.get(p, top) for p in paths}

    def changed(self, c: CommitInfo, p: Parts) -> bool:
        kc = self.keys.of(c.id)
        now = self.v.repo.entry(c.tree, "/".join(self.v.stored_path(kc, p)))
        for parent in c.parents:
            kp = self.keys.of(parent)
            ptree = self.v.repo.commit_info(parent).tree
            if kp.commitment == kc.commitment:
                if self.v.repo.entry(ptree, "/".join(self.v.stored_path(kp, p))) == now:
                    return False
            elif self.state(kp, ptree, p) == self.state(kc, c.tree, p):
                return False
        return True

    def state(self, keys: EpochKeys, tree: str, p: Parts) -> Any:
        """The plain content at ``p`` (across epochs, where stored names differ)."""
        e = self.v.repo.entry(tree, "/".join(self.v.stored_path(keys, p)))
        if e is None:
            return None
        if e.kind == BLOB:
            return self.value(p, Leaf(e.oid, None if p[-1] == MARKER else keys))
        return frozenset((q, self.value(p + q, leaf)) for q, leaf in self.leaves(keys, e.oid, ()))

    # -- two membership states (an owner's merge) -------------------------------------------

    def remerge_pk(self, final: dict[Parts, Leaf | None], kr: EpochKeys) -> str:
        """Members merged three-way in a new epoch wrapped for them; the merged tree re-encrypted."""
        v, (a, b) = self.v, self.heads
        tree_r = v.repo.commit_info(a).tree  # decide() put the result in a's epoch (r = 0)
        plain = dict(self.leaves(kr, tree_r, ()))
        for p, leaf in final.items():
            if leaf is None:
                plain.pop(p, None)
            else:
                plain[p] = leaf
        infos = [v.metadata(v.repo.commit_info(h).tree) for h in (self.base, a, b)]
        later = 0 if _order(self.last_pk_change(a)) > _order(self.last_pk_change(b)) else 1
        members = _merge_members(infos[0][1], infos[1][1], infos[2][1], later)
        replicas = _merge_replicas(*(self._replicas(h) for h in (self.base, a, b)))
        replicas = tuple(n for n in replicas if members.role_of(n) is None)
        info: VaultInfo = max((infos[1][0], infos[2][0]), key=lambda i: i.version)
        epoch = max(infos[1][0].epoch, infos[2][0].epoch) + 1
        secret = v.rng(32)
        try:
            wrapped = WrappedKeys.create(epoch, secret, [n for n, _r in members.roles], v.vault_id)
            keys = EpochKeys.derive(v.vault_id, epoch, secret)
        finally:
            memory.wipe(secret)
        changes: dict[Parts, Change] = {}
        for h in (b, a):  # every epoch's keys file either side has (a's where both have one)
            ktree = v.repo.entry(v.repo.commit_info(h).tree, f"{PK_DIR}/keys")
            for name, e in v.repo.list_tree(ktree.oid) if ktree is not None else []:
                changes[(PK_DIR, "keys", name)] = e
        files = {("vault",): replace(info, epoch=epoch).encode(), ("members",): members.encode(),
                 ("keys", keys_file_name(epoch)): wrapped.encode()}
        if replicas:
            files[("replicas",)] = Replicas(replicas).encode()
        for file, data in files.items():
            changes[(PK_DIR,) + file] = Entry(BLOB, v.repo.write_blob(data))
        for p, leaf in plain.items():
            changes[v.stored_path(keys, p)] = Entry(BLOB, self.translate(p, leaf, keys))
        return v.repo.apply(None, changes)

    def _replicas(self, commit: str) -> tuple[NodeId, ...]:
        e = self.v.repo.entry(self.v.repo.commit_info(commit).tree, f"{PK_DIR}/replicas")
        return () if e is None else Replicas.decode(self.v.repo.read_blob(e.oid)).nodes

    def last_pk_change(self, head: str) -> CommitInfo:
        """The latest commit on ``head``'s side since the base that changed ``.pk``."""
        best = self.v.repo.commit_info(head)
        found = None
        for oid in self.v.repo.new_commits(head, self.base):
            c = self.v.repo.commit_info(oid)
            pk = _pk_oid(self.v, oid)
            if all(_pk_oid(self.v, q) != pk for q in c.parents) and (found is None or _order(c) > _order(found)):
                found = c
        return found or best


def _merge_members(base: Members, a: Members, b: Members, later: int) -> Members:
    """Three-way: a member removed on either side is removed; a role changed on one side is that
    side's; changed (or added) differently on both, the later side's."""
    roles: dict[NodeId, str] = {}
    for node in {n for n, _r in a.roles} | {n for n, _r in b.roles}:
        r0, ra, rb = base.role_of(node), a.role_of(node), b.role_of(node)
        if r0 is not None and (ra is None or rb is None):
            continue  # a removal wins
        if ra is None or rb is None:
            role = ra or rb
        elif ra == rb or rb == r0:
            role = ra
        elif ra == r0:
            role = rb
        else:
            role = (ra, rb)[later]
        assert role is not None
        roles[node] = role
    return Members(tuple(sorted(roles.items(), key=lambda m: m[0].raw)))


def _merge_replicas(base: tuple[NodeId, ...], a: tuple[NodeId, ...], b: tuple[NodeId, ...]) -> tuple[NodeId, ...]:
    """Three-way: added on either side is kept, removed on either side is removed."""
    kept = {n for n in set(a) | set(b) if n not in base or (n in a and n in b)}
    return tuple(sorted(kept, key=lambda n: n.raw))


def _same(x: Leaf | None, y: Leaf | None) -> bool:
    return (x is None and y is None) or (x is not None and y is not None and x.oid == y.oid)


def _deeper(prefix: Parts, name: str) -> Parts:
    if len(prefix) >= MAX_DEPTH:
        raise VaultIntegrityError(f"a vault tree is nested deeper than {MAX_DEPTH} levels")
    return prefix + (name,)
