"""The merge of sync (polykey.vaults.merge; DESIGN.md section 3 "Merges", vault-format.md section
8 rules 5 and 8 to 10).

Real repositories, real keys: one vault, and each node's view of it as a :class:`Vault` opened
with that node's own key on the same repository. A node writes through the Vault API on the head
its side is at (the branch is moved there under the write lock first), exactly the commits a
peer's history would hold; then :func:`integrate` runs under the write lock as the receiver does,
and every commit it writes must pass the whole-history verification.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from polykey import crypto
from polykey.errors import SecretNotFoundError, VaultIntegrityError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults import ops
from polykey.vaults.format import (
    EpochKeys,
    Members,
    WrappedKeys,
    join_path,
    keys_file_name,
    split_path,
)
from polykey.vaults.identity import NodeKey
from polykey.vaults.merge import PK_REASON, READER_REASON, REMOVED_REASON, REVOKED_REASON, Outcome, integrate
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.service import VaultService
from polykey.vaults.vault import MARKER, PK_DIR, Parts, Snapshot, Vault
from polykey.vaults.verify import verify


class World:
    """One vault and the nodes that hold it; a shared clock that moves 10 s per write."""

    def __init__(self, path: Path) -> None:
        self.now = [float(int(time.time()))]
        self.owner_kp = KeyPair.generate()
        self.svc = VaultService(path, self.owner_kp, clock=self.clock)
        self.svc.create_vault("work")
        real = self.svc._vault("work")  # noqa: SLF001 - the tests write on the real repository
        self.path, self.vid = real.repo.path, real.vault_id
        self.nodes: list[Vault] = []
        self.owner = self.node(self.owner_kp)
        head = self.owner.repo.head()
        assert head is not None
        self.root = head

    def clock(self) -> float:
        return self.now[0]

    def node(self, kp: KeyPair | None = None) -> Vault:
        v = Vault(self.path, self.vid, NodeKey(kp or KeyPair.generate()), self.clock, crypto.random_bytes)
        self.nodes.append(v)
        return v

    def close(self) -> None:
        for v in self.nodes:
            v.close()
        self.svc.close()

    # -- writes on a given head -----------------------------------------------------

    def _on(self, v: Vault, head: str) -> None:
        self.now[0] += 10
        with v.repo.write_lock():
            v.repo.set_head(head)

    def set(self, v: Vault, head: str, path: str, value: bytes) -> str:
        self._on(v, head)
        return str(ops.set_secret(v, split_path(path), value)["commit"])

    def rm(self, v: Vault, head: str, path: str) -> str:
        self._on(v, head)
        return str(ops.remove(v, split_path(path), recursive=True)["commit"])

    def mkdir(self, v: Vault, head: str, path: str) -> str:
        self._on(v, head)
        return str(ops.mkdir(v, split_path(path), parents=True)["commit"])

    def share(self, v: Vault, head: str, node: NodeId, role: str) -> str:
        """Add or change a member, in the same epoch (its secret wrapped for it too)."""
        self._on(v, head)

        def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, Any]]:
            roles = dict(snap.members.roles)
            roles[node] = role
            name = keys_file_name(snap.info.epoch)
            found = v.repo.entry(snap.tree, f"{PK_DIR}/keys/{name}")
            assert found is not None
            secret = WrappedKeys.decode(v.repo.read_blob(found.oid)).unwrap(v.key)
            files = {(PK_DIR, "members"): Members(tuple(sorted(roles.items()))).encode(),
                     (PK_DIR, "keys", name): WrappedKeys.create(snap.info.epoch, secret, list(roles), self.vid).encode()}
            return {k: Entry(BLOB, v.repo.write_blob(d)) for k, d in files.items()}, "share vault\n", {}

        return str(v.write_metadata(build)["commit"])

    def unshare(self, v: Vault, head: str, node: NodeId) -> str:
        """Remove a member: a new epoch for the others, the whole tree re-encrypted under it."""
        self._on(v, head)

        def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, Any]]:
            roles = {n: r for n, r in snap.members.roles if n != node}
            epoch = snap.info.epoch + 1
            secret = crypto.random_bytes(32)
            keys = EpochKeys.derive(self.vid, epoch, secret)
            changes: dict[Parts, Change] = {(name,): None for name, _e in v.repo.list_tree(snap.tree) if name != PK_DIR}
            for parts, e in v.walk(snap, snap.tree, (), True, markers=True):
                if e.kind != BLOB:
                    continue
                if parts[-1] == MARKER:
                    changes[v.stored_path(keys, parts)] = e
                else:
                    blob = keys.encrypt_secret(join_path(parts), v.decrypt(snap, parts, e.oid))
                    changes[v.stored_path(keys, parts)] = Entry(BLOB, v.repo.write_blob(blob))
            files = {(PK_DIR, "vault"): replace(snap.info, epoch=epoch).encode(),
                     (PK_DIR, "members"): Members(tuple(sorted(roles.items()))).encode(),
                     (PK_DIR, "keys", keys_file_name(epoch)): WrappedKeys.create(epoch, secret, list(roles), self.vid).encode()}
            changes.update({k: Entry(BLOB, v.repo.write_blob(d)) for k, d in files.items()})
            return changes, "unshare vault\n", {}

        return str(v.write_metadata(build)["commit"])

    # -- the merge ------------------------------------------------------------------

    def integrate(self, v: Vault, ours: str, theirs: str) -> Outcome:
        """As the receiver runs it: under the write lock; every commit written passes verification
        of the whole history (and the branch is left where it was)."""
        self.now[0] += 10
        with v.repo.write_lock():
            before = v.repo.head()
            out = integrate(v, ours, theirs)
            assert v.repo.head() == before  # integrate never moves the branch
        for commit in out.written:
            assert verify(v, commit)["ok"]
        return out

    def read(self, v: Vault, commit: str, path: str) -> bytes:
        return v.read(split_path(path), commit=commit)

    def tree(self, commit: str) -> str:
        return self.owner.repo.commit_info(commit).tree


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path / "node")
    yield world
    world.close()


def with_writer(w: World) -> tuple[Vault, str]:
    """A writer added at the root; returns its view and the commit that added it (the base)."""
    writer = w.node()
    return writer, w.share(w.owner, w.root, writer.me, "writer")


# -- fast-forward, up to date, bad input ------------------------------------------------


def with_reader(w: World) -> tuple[Vault, Vault, str]:
    """A writer and a reader besides the owner, and the head that shares with both."""
    writer, base = with_writer(w)
    reader = w.node()
    return writer, reader, w.share(w.owner, base, reader.me, "reader")


def test_fast_forward_and_up_to_date(w: World) -> None:
    one = w.set(w.owner, w.root, "a", b"1")
    assert w.integrate(w.owner, w.root, one) == Outcome(one, "fast-forward")
    assert w.integrate(w.owner, one, w.root) == Outcome(one, "up-to-date")
    assert w.integrate(w.owner, one, one) == Outcome(one, "up-to-date")


def test_a_malformed_head_raises(w: World) -> None:
    with pytest.raises(VaultIntegrityError):
        w.integrate(w.owner, w.root, "not a commit")
    with pytest.raises(VaultIntegrityError):
        w.integrate(w.owner, w.root, "ab" * 20)  # well-formed id, no such commit


# -- three-way merges of secrets -----------------------------------------------------------


def test_concurrent_edits_to_different_secrets_are_both_kept(w: World) -> None:
    writer, base = with_writer(w)
    ours = w.set(w.owner, base, "db/password", b"o")
    theirs = w.set(writer, base, "api/key", b"t")
    out = w.integrate(w.owner, ours, theirs)
    assert out.action == "merged" and out.conflicts == [] and out.written == [out.head]
    assert w.owner.repo.commit_info(out.head).parents == (ours, theirs)
    assert w.owner.repo.commit_info(out.head).message == "merge\n"
    assert w.read(w.owner, out.head, "db/password") == b"o"
    assert w.read(w.owner, out.head, "api/key") == b"t"


def test_the_same_secret_changed_on_both_sides_the_later_wins(w: World) -> None:
    writer, base = with_writer(w)
    start = w.set(w.owner, base, "k", b"0")
    ours = w.set(w.owner, start, "k", b"owner's")
    theirs = w.set(writer, start, "k", b"writer's")  # later (the clock moved)
    out = w.integrate(w.owner, ours, theirs)
    assert out.action == "merged"
    assert out.conflicts == [{"path": "k", "winner": theirs, "loser": ours, "kind": "modified"}]
    assert w.read(w.owner, out.head, "k") == b"writer's"
    assert w.read(w.owner, out.conflicts[0]["loser"], "k") == b"owner's"  # the loser stays in history


def test_delete_against_modify(w: World) -> None:
    writer, base = with_writer(w)
    start = w.set(w.owner, base, "k", b"0")
    modified = w.set(w.owner, start, "k", b"1")
    deleted = w.rm(writer, start, "k")  # later: the deletion wins
    out = w.integrate(w.owner, modified, deleted)
    assert out.conflicts == [{"path": "k", "winner": deleted, "loser": modified, "kind": "deleted"}]
    with pytest.raises(SecretNotFoundError):
        w.read(w.owner, out.head, "k")
    again = w.set(w.owner, start, "k", b"2")  # now the modification is later
    out = w.integrate(w.owner, again, deleted)
    assert out.conflicts == [{"path": "k", "winner": again, "loser": deleted, "kind": "deleted"}]
    assert w.read(w.owner, out.head, "k") == b"2"


def test_secret_against_directory(w: World) -> None:
    writer, base = with_writer(w)
    as_dir = w.set(w.owner, base, "x/y", b"in a directory")
    w.mkdir(w.owner, as_dir, "x/z")
    as_secret = w.set(writer, base, "x", b"a secret")  # later
    out = w.integrate(w.owner, as_dir, as_secret)
    assert out.conflicts == [{"path": "x", "winner": as_secret, "loser": as_dir, "kind": "type"}]
    assert w.read(w.owner, out.head, "x") == b"a secret"
    deeper = w.set(w.owner, as_dir, "x/q", b"later still")  # the directory side changes last
    out = w.integrate(w.owner, deeper, as_secret)
    assert [c["kind"] for c in out.conflicts] == ["type"] and out.conflicts[0]["winner"] == deeper
    assert w.read(w.owner, out.head, "x/y") == b"in a directory"
    assert w.read(w.owner, out.head, "x/q") == b"later still"


def test_equal_times_are_ordered_by_node_id(w: World) -> None:
    writer, base = with_writer(w)
    ours = w.set(w.owner, base, "k", b"owner's")
    w.now[0] -= 10  # the same second
    theirs = w.set(writer, base, "k", b"writer's")
    assert w.owner.repo.commit_info(ours).time == w.owner.repo.commit_info(theirs).time
    out = w.integrate(w.owner, ours, theirs)
    later = max((w.owner, ours), (writer, theirs), key=lambda x: x[0].me.raw)[1]
    assert out.conflicts[0]["winner"] == later


def test_the_result_does_not_depend_on_which_head_is_ours(w: World) -> None:
    writer, base = with_writer(w)
    start = w.set(w.owner, base, "a/b", b"0")
    x = w.set(w.owner, start, "a/b", b"x")
    x = w.set(w.owner, x, "c", b"only x")
    y = w.rm(writer, start, "a")
    y = w.set(writer, y, "a", b"a secret now")
    y = w.set(writer, y, "d/e", b"only y")
    one, two = w.integrate(w.owner, x, y), w.integrate(writer, y, x)
    assert one.head != two.head and w.tree(one.head) == w.tree(two.head)
    assert one.conflicts == two.conflicts
    assert w.owner.repo.commit_info(two.head).parents == (y, x)


# -- .pk: one side changed it ------------------------------------------------------------------


def test_a_writer_merges_a_branch_on_which_an_owner_shared(w: World) -> None:
    writer, base = with_writer(w)
    shared = w.share(w.owner, base, KeyPair.generate().node_id, "reader")
    theirs = w.set(writer, base, "k", b"v")
    out = w.integrate(writer, theirs, shared)
    assert out.action == "merged"
    assert w.owner.repo.entry(w.tree(out.head), PK_DIR) == w.owner.repo.entry(w.tree(shared), PK_DIR)
    assert w.read(writer, out.head, "k") == b"v"


def test_edits_concurrent_with_an_unshare_are_re_encrypted_under_the_new_epoch(w: World) -> None:
    writer, reader, base = with_reader(w)
    base = w.set(w.owner, base, "old", b"kept")
    unshared = w.unshare(w.owner, base, reader.me)
    edited = w.set(writer, base, "new", b"written meanwhile")
    edited = w.set(writer, edited, "old", b"changed meanwhile")
    by_owner = w.integrate(w.owner, unshared, edited)
    by_writer = w.integrate(writer, edited, unshared)
    assert by_owner.action == by_writer.action == "merged"
    assert w.tree(by_owner.head) == w.tree(by_writer.head)  # the same re-encryption on every node
    snap = w.owner.load(by_owner.head)
    assert snap.info.epoch == 1 and snap.members.role_of(reader.me) is None
    assert w.read(w.owner, by_owner.head, "new") == b"written meanwhile"
    assert w.read(w.owner, by_owner.head, "old") == b"changed meanwhile"
    assert snap.keys is not None
    for name, _e in w.owner.repo.list_tree(snap.tree):  # every name is under the new epoch's key
        if name != PK_DIR:
            snap.keys.decrypt_name(name)


# -- .pk: both sides changed it -----------------------------------------------------------------


def test_two_membership_changes_merge_only_by_an_owner_in_a_new_epoch(w: World) -> None:
    second = w.node()
    writer = w.node()
    base = w.share(w.owner, w.root, second.me, "owner")
    base = w.share(w.owner, base, writer.me, "writer")
    base = w.set(w.owner, base, "k", b"v")
    x, y = KeyPair.generate().node_id, KeyPair.generate().node_id
    ours = w.share(w.owner, base, x, "reader")
    ours = w.set(w.owner, ours, "o", b"owner's")
    theirs = w.unshare(second, base, writer.me)  # a new epoch on that side
    theirs = w.share(second, theirs, y, "writer")
    kept = w.integrate(writer, ours, theirs)  # writer was removed there: not its merge to make
    assert kept == Outcome(ours, "kept", reason=REMOVED_REASON)
    out = w.integrate(w.owner, ours, theirs)
    assert out.action == "merged"
    snap = w.owner.load(out.head)
    assert snap.info.epoch == 2
    assert dict(snap.members.roles) == {w.owner.me: "owner", second.me: "owner", x: "reader", y: "writer"}
    assert w.read(w.owner, out.head, "k") == b"v" and w.read(w.owner, out.head, "o") == b"owner's"
    assert w.read(second, out.head, "o") == b"owner's"


def test_a_writer_keeps_its_head_when_both_sides_changed_the_membership(w: World) -> None:
    second, writer = w.node(), w.node()
    base = w.share(w.owner, w.root, second.me, "owner")
    base = w.share(w.owner, base, writer.me, "writer")
    ours = w.share(w.owner, base, KeyPair.generate().node_id, "reader")
    theirs = w.share(second, base, KeyPair.generate().node_id, "reader")
    out = w.integrate(writer, ours, theirs)
    assert out == Outcome(ours, "kept", reason=PK_REASON)


def test_a_reader_keeps_its_head(w: World) -> None:
    writer, reader, base = with_reader(w)
    ours = w.set(w.owner, base, "a", b"1")
    theirs = w.set(writer, base, "b", b"2")
    assert w.integrate(reader, ours, theirs) == Outcome(ours, "kept", reason=READER_REASON)


# -- revocation wins --------------------------------------------------------------------------------


def revoked(w: World) -> tuple[Vault, Vault, str, str, str]:
    """A writer that wrote after the base, on the side where it was not yet removed; another writer
    (``me``) with its own change on top; the owner's side that removed the first writer."""
    writer, base = with_writer(w)
    me = w.node()
    base = w.share(w.owner, base, me.me, "writer")
    late = w.set(writer, base, "w", b"after its removal")
    removed = w.unshare(w.owner, base, writer.me)
    return writer, me, base, late, removed


def test_a_removed_members_commit_on_our_side_is_dropped_and_our_own_change_reapplied(w: World) -> None:
    _writer, me, _base, late, removed = revoked(w)
    mine = w.set(me, late, "mine", b"my own change")
    out = w.integrate(me, mine, removed)
    assert out.action == "rebased" and out.reapplied == 1 and out.dropped == [late]
    assert out.written == [out.head]
    info = me.repo.commit_info(out.head)
    assert info.parents == (removed,) and info.message == "reapply local changes\n"
    assert w.read(me, out.head, "mine") == b"my own change"
    with pytest.raises(SecretNotFoundError):
        w.read(me, out.head, "w")


def test_without_own_changes_the_head_is_simply_theirs(w: World) -> None:
    _writer, me, _base, late, removed = revoked(w)
    assert w.integrate(me, late, removed) == Outcome(removed, "rebased", dropped=[late])


def test_theirs_bringing_a_removed_members_commit_is_kept_out(w: World) -> None:
    _writer, me, _base, late, removed = revoked(w)
    mine = w.set(me, late, "mine", b"x")
    out = w.integrate(w.owner, removed, mine)
    assert out == Outcome(removed, "kept", dropped=[late], reason=REVOKED_REASON)


# -- no ping-pong -------------------------------------------------------------------------------------


def test_two_nodes_merging_the_same_heads_adopt_one_merge(w: World) -> None:
    writer, base = with_writer(w)
    ours = w.set(w.owner, base, "a", b"1")
    theirs = w.set(writer, base, "b", b"2")
    m1 = w.integrate(w.owner, ours, theirs).head
    m2 = w.integrate(writer, theirs, ours).head
    assert w.tree(m1) == w.tree(m2)
    smaller = min(m1, m2)
    first, second = w.integrate(w.owner, m1, m2), w.integrate(writer, m2, m1)
    assert {first.head, second.head} == {smaller}
    assert {first.action, second.action} == {"adopted", "up-to-date"}
    assert first.written == second.written == []


def test_two_owners_merging_two_membership_states_converge(w: World) -> None:
    second = w.node()
    base = w.share(w.owner, w.root, second.me, "owner")
    ours = w.share(w.owner, base, KeyPair.generate().node_id, "reader")
    theirs = w.share(second, base, KeyPair.generate().node_id, "reader")
    m1 = w.integrate(w.owner, ours, theirs).head
    m2 = w.integrate(second, theirs, ours).head
    assert w.tree(m1) != w.tree(m2)  # each wrapped a fresh epoch key
    first, other = w.integrate(w.owner, m1, m2), w.integrate(second, m2, m1)
    assert first.head == other.head == min(m1, m2)


# -- more shapes ---------------------------------------------------------------------------------------


def test_a_conflict_across_an_epoch_change(w: World) -> None:
    writer, reader, base = with_reader(w)
    base = w.set(w.owner, base, "k", b"0")
    edited = w.set(writer, base, "k", b"writer's")
    unshared = w.unshare(w.owner, base, reader.me)  # re-encrypts k: not a change of its value
    assert w.integrate(w.owner, unshared, edited).conflicts == []
    later = w.set(w.owner, unshared, "k", b"owner's, later")
    out = w.integrate(w.owner, later, edited)
    assert out.conflicts == [{"path": "k", "winner": later, "loser": edited, "kind": "modified"}]
    assert w.read(w.owner, out.head, "k") == b"owner's, later"
    sooner = w.set(writer, edited, "k", b"writer's, later still")
    out = w.integrate(writer, sooner, later)
    assert out.conflicts == [{"path": "k", "winner": sooner, "loser": later, "kind": "modified"}]
    assert w.read(writer, out.head, "k") == b"writer's, later still"


def test_directories_made_and_removed_concurrently(w: World) -> None:
    writer, base = with_writer(w)
    base = w.set(w.owner, base, "d/a", b"1")
    base = w.set(w.owner, base, "d/b", b"2")
    ours = w.mkdir(w.owner, base, "empty/dir")
    ours = w.rm(w.owner, ours, "d/a")
    theirs = w.rm(writer, base, "d")  # the whole directory
    out = w.integrate(w.owner, ours, theirs)
    assert out.conflicts == []
    listed = {p for p, _e in w.owner.walk(w.owner.load(out.head), w.tree(out.head), (), True, markers=True)}
    assert listed == {("empty",), ("empty", "dir"), ("empty", "dir", MARKER)}


def test_same_value_on_both_sides_is_no_conflict(w: World) -> None:
    writer, base = with_writer(w)
    ours = w.set(w.owner, base, "k", b"same")
    theirs = w.set(writer, base, "k", b"same")
    out = w.integrate(w.owner, ours, theirs)
    assert out.action == "merged" and out.conflicts == []
    assert w.read(w.owner, out.head, "k") == b"same"


def test_a_merge_on_a_merge_keeps_merging(w: World) -> None:
    writer, base = with_writer(w)
    ours = w.set(w.owner, base, "a", b"1")
    theirs = w.set(writer, base, "b", b"2")
    merged = w.integrate(w.owner, ours, theirs).head
    more = w.set(writer, theirs, "c", b"3")
    mine = w.set(w.owner, merged, "a", b"4")
    out = w.integrate(w.owner, mine, more)
    assert out.action == "merged" and out.conflicts == []
    assert [w.read(w.owner, out.head, p) for p in "abc"] == [b"4", b"2", b"3"]


def test_own_changes_reapplied_over_a_new_epoch_and_never_over_a_directory(w: World) -> None:
    writer, base = with_writer(w)
    me = w.node()
    base = w.share(w.owner, base, me.me, "writer")
    base = w.set(w.owner, base, "shared", b"0")
    late = w.set(writer, base, "w", b"after its removal")
    removed = w.unshare(w.owner, base, writer.me)
    removed = w.set(w.owner, removed, "dir/x", b"the owner's directory")
    mine = w.set(me, late, "shared", b"mine")
    mine = w.set(me, mine, "dir", b"a secret of mine")
    mine = w.rm(me, mine, "shared")
    mine = w.set(me, mine, "shared", b"mine, again")
    out = w.integrate(me, mine, removed)
    assert out.action == "rebased" and out.reapplied == 4 and out.dropped == [late]
    assert w.read(me, out.head, "shared") == b"mine, again"
    assert w.read(me, out.head, "dir/x") == b"the owner's directory"


def test_heads_with_the_same_content_are_joined_by_one_node_only(w: World) -> None:
    """Three writers after a partition end with heads of equal trees but different histories. Only
    the node holding the smaller head writes the merge that joins them; the other keeps its head
    (no merge of its own that the first would merge again) and fast-forwards to that merge."""
    writer, base = with_writer(w)
    ours = w.rm(w.owner, w.set(w.owner, base, "t", b"1"), "t")
    theirs = w.rm(writer, w.set(writer, base, "u", b"2"), "u")
    assert w.tree(ours) == w.tree(theirs) == w.tree(base) and ours != theirs
    small, large = sorted((ours, theirs))
    small_node, large_node = (w.owner, writer) if small == ours else (writer, w.owner)
    kept = w.integrate(large_node, large, small)
    assert kept.action == "kept" and kept.head == large and kept.written == []
    joined = w.integrate(small_node, small, large)
    assert joined.action == "merged" and w.tree(joined.head) == w.tree(small)
    assert w.integrate(large_node, large, joined.head).action == "fast-forward"
