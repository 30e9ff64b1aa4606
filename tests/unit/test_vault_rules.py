"""Rules a merge can satisfy, revocation that wins, and commit times (vault-format.md section 8,
rules 5 and 8 to 10).

Today's code never makes a merge (sync will), so the histories here are built by hand: real
repositories, real keys, commits signed by the project's own signer on any parents, exactly as a
peer's history would arrive. Each is checked by the audit (`verify`) and by the incremental check
a read runs first (`get_secret`), which must refuse it without serving anything.
"""

from __future__ import annotations

from dataclasses import replace

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from polykey.errors import VaultVerificationError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import Members, WrappedKeys, join_path, keys_file_name
from polykey.vaults.identity import NodeKey
from polykey.vaults.repo import BLOB, TREE, Change, Entry
from polykey.vaults.service import VaultService
from polykey.vaults.vault import Vault

Changes = dict[tuple[str, ...], Change]


class History:
    """One vault, and commits built by hand on any parents (an unguarded Vault, as one with the
    repository in hand). The service reads through its guard, with an injected clock."""

    def __init__(self, path: Path, owner: KeyPair) -> None:
        self.owner = owner
        self.now = [float(int(time.time()))]
        self.svc = VaultService(path, owner, clock=lambda: self.now[0])
        self.svc.create_vault("work")
        real = self.svc._vault("work")  # noqa: SLF001 - tests build commits on the real repository
        self.v = Vault(real.repo.path, real.vault_id, NodeKey(owner), real.clock, real.rng)
        self.root = self.head()

    def head(self) -> str:
        head = self.v.repo.head()
        assert head is not None
        return head

    def commit(self, parents: list[str], signer: KeyPair, make: Callable[[], Changes] = dict,
               tree_of: str | None = None, when: int | None = None) -> str:
        """A commit on ``parents`` of the tree of ``tree_of`` (the first parent) with ``make()``'s
        changes, signed by ``signer``; ``main`` moves to it."""
        with self.v.repo.write_lock():
            tree = self.v.repo.apply(self.v.repo.commit_info(tree_of or parents[0]).tree, make())
            if when is None:
                when = max([int(self.now[0])] + [self.v.repo.commit_info(p).time for p in parents])
            return self.v.repo.commit(tree, parents, "merge\n" if len(parents) > 1 else "set secret\n",
                                      NodeKey(signer), when=when)

    def secret(self, at: str, path: str, value: bytes) -> Callable[[], Changes]:
        def make() -> Changes:
            keys = self.v.load(at).keys
            assert keys is not None
            parts = tuple(path.split("/"))
            blob = self.v.repo.write_blob(keys.encrypt_secret(join_path(parts), value))
            return {self.v.encrypt_path(keys, parts): Entry(BLOB, blob)}

        return make

    def members(self, at: str, changes: dict[NodeId, str | None], new_epoch: bool = False) -> Callable[[], Changes]:
        """``.pk`` of ``at`` with members added, changed or removed (None), optionally in a new epoch
        (only on a vault without secrets: nothing is re-encrypted)."""

        def make() -> Changes:
            snap = self.v.load(at)
            roles = {n: r for n, r in snap.members.roles}
            for node, role in changes.items():
                if role is None:
                    roles.pop(node)
                else:
                    roles[node] = role
            epoch = snap.info.epoch + (1 if new_epoch else 0)
            return self.pk(epoch, roles, at)

        return make

    def pk(self, epoch: int, roles: dict[NodeId, str], at: str) -> Changes:
        name = keys_file_name(epoch)
        found = self.v.repo.entry(self.v.repo.commit_info(at).tree, f".pk/keys/{name}")
        secret = (WrappedKeys.decode(self.v.repo.read_blob(found.oid)).unwrap(NodeKey(self.owner))
                  if found is not None else self.v.rng(32))
        info = replace(self.v.load(at).info, epoch=epoch)  # the vault's own .pk/vault (format version 2)
        files = {
            (".pk", "vault"): info.encode(),
            (".pk", "members"): Members(tuple(sorted(roles.items()))).encode(),
            (".pk", "keys", name): WrappedKeys.create(epoch, secret, list(roles), self.v.vault_id).encode(),
        }
        return {k: Entry(BLOB, self.v.repo.write_blob(data)) for k, data in files.items()}

    def pk_of(self, commit: str) -> Callable[[], Changes]:
        """The ``.pk`` of ``commit``, for a merge that carries it."""
        def make() -> Changes:
            e = self.v.repo.entry(self.v.repo.commit_info(commit).tree, ".pk")
            assert e is not None
            return {(".pk",): Entry(TREE, e.oid)}

        return make

    def refused(self, commit: str, words: str) -> None:
        """Refused by the check before use (nothing served) and by the audit, naming ``commit``."""
        for attempt in (lambda: self.svc.get_secret("work", "a"), lambda: self.svc.verify("work")):
            with pytest.raises(VaultVerificationError) as info:
                attempt()
            assert info.value.data["commit"] == commit, info.value.message
            assert words in info.value.message, info.value.message

    def accepted(self) -> None:
        assert self.svc.verify("work")["head"] == self.head()
        self.svc.list_secrets("work", "", recursive=True)  # served


@pytest.fixture
def h(tmp_path: Path) -> Iterator[History]:
    made = History(tmp_path / "node", KeyPair.generate())
    yield made
    made.v.close()
    made.svc.close()


@pytest.fixture
def writer() -> KeyPair:
    return KeyPair.generate()


def with_writer(h: History, writer: KeyPair) -> str:
    return h.commit([h.root], h.owner, h.members(h.root, {writer.node_id: "writer"}))


# -- rule 8: what a merge may do to .pk ------------------------------------------------


def test_a_writers_merge_with_one_pk_state_is_accepted(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    mine = h.commit([base], writer, h.secret(base, "a", b"by writer"))
    theirs = h.commit([base], h.owner, h.secret(base, "b", b"by owner"))
    h.commit([mine, theirs], writer, h.secret(mine, "b", b"merged"))
    h.accepted()
    assert h.svc.get_secret("work", "a") == b"by writer"


def test_a_writer_may_merge_a_branch_on_which_an_owner_shared(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    mine = h.commit([base], writer, h.secret(base, "a", b"1"))
    shared = h.commit([base], h.owner, h.members(base, {KeyPair.generate().node_id: "reader"}))
    h.commit([mine, shared], writer, h.pk_of(shared))  # .pk changed on one side: that side's
    h.accepted()


def test_a_writers_merge_keeping_the_stale_pk_is_refused(h: History, writer: KeyPair) -> None:
    """Keeping its own side's .pk would undo the owner's change (here: drop a member)."""
    base = with_writer(h, writer)
    mine = h.commit([base], writer, h.secret(base, "a", b"1"))
    shared = h.commit([base], h.owner, h.members(base, {KeyPair.generate().node_id: "writer"}))
    bad = h.commit([mine, shared], writer)
    h.refused(bad, "does not keep the .pk of the side that changed it")


def test_a_writer_changing_pk_in_a_merge_is_refused(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    mine = h.commit([base], writer, h.secret(base, "a", b"1"))
    theirs = h.commit([base], h.owner, h.secret(base, "b", b"2"))
    bad = h.commit([mine, theirs], writer, h.members(mine, {writer.node_id: "owner"}))
    h.refused(bad, "not an owner")


def test_two_pk_states_merge_only_by_an_owner(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    r1, r2 = KeyPair.generate().node_id, KeyPair.generate().node_id
    one = h.commit([base], h.owner, h.members(base, {r1: "reader"}))
    two = h.commit([base], h.owner, h.members(base, {r2: "reader"}))
    bad = h.commit([one, two], writer)
    h.refused(bad, "two different .pk states")
    h.svc.reset_vault("work", two)
    h.commit([one, two], h.owner, h.members(one, {r2: "reader"}))  # the union, by an owner
    h.accepted()


def test_an_owners_merge_after_a_new_epoch_starts_a_newer_one(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    removed = h.commit([base], h.owner, h.members(base, {writer.node_id: None}, new_epoch=True))
    added = h.commit([base], h.owner, h.members(base, {KeyPair.generate().node_id: "reader"}))
    merged_roles = dict(h.v.load(added).members.roles)
    del merged_roles[writer.node_id]
    bad = h.commit([removed, added], h.owner, lambda: h.pk(1, merged_roles, removed))
    h.refused(bad, "without starting a newer epoch")
    h.svc.reset_vault("work", added)
    h.commit([removed, added], h.owner, lambda: h.pk(2, merged_roles, removed))  # epoch 2, wrapped for both
    h.accepted()
    assert [m["role"] for m in h.svc.members("work")] == ["owner", "reader"]


# -- rule 9: revocation wins ---------------------------------------------------------------


def test_a_removed_members_write_after_its_removal_never_comes_back(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    removal = h.commit([base], h.owner, h.members(base, {writer.node_id: None}))
    late = h.commit([base], writer, h.secret(base, "a", b"from the removed member"))
    bad = h.commit([removal, late], h.owner)  # the owner's merge keeps the removal; it brings `late` in
    h.refused(bad, f"brings in commit {late[:12]}")
    h.svc.reset_vault("work", removal)
    bad = h.commit([late, removal], h.owner, tree_of=removal)  # the other order: the same
    h.refused(bad, "revocation wins")


def test_a_removed_members_write_before_its_removal_stays(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    early = h.commit([base], writer, h.secret(base, "a", b"before the removal"))
    other = h.commit([base], h.owner, h.secret(base, "b", b"owner"))
    merged = h.commit([other, early], h.owner, h.secret(other, "a", b"before the removal"))
    h.commit([merged], h.owner, h.members(merged, {writer.node_id: None}))
    h.accepted()
    assert h.svc.get_secret("work", "a") == b"before the removal"


def test_a_member_removed_on_its_own_branch_after_writing_is_kept(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    wrote = h.commit([base], writer, h.secret(base, "a", b"1"))
    removal = h.commit([wrote], h.owner, h.members(wrote, {writer.node_id: None}))
    other = h.commit([base], h.owner, h.secret(base, "b", b"2"))
    h.commit([removal, other], h.owner)
    h.accepted()


def test_a_writer_made_reader_loses_its_concurrent_writes(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    demoted = h.commit([base], h.owner, h.members(base, {writer.node_id: "reader"}))
    late = h.commit([base], writer, h.secret(base, "a", b"x"))
    bad = h.commit([demoted, late], h.owner)
    h.refused(bad, "removed or made a reader")


def test_a_member_added_on_one_side_writes_there(h: History) -> None:
    new = KeyPair.generate()
    added = h.commit([h.root], h.owner, h.members(h.root, {new.node_id: "writer"}))
    wrote = h.commit([added], new, h.secret(added, "a", b"new member"))
    other = h.commit([h.root], h.owner, h.secret(h.root, "b", b"owner"))
    h.commit([other, wrote], h.owner, h.pk_of(wrote))
    h.accepted()


def test_at_most_two_parents(h: History) -> None:
    one = h.commit([h.root], h.owner, h.secret(h.root, "a", b"1"))
    two = h.commit([h.root], h.owner, h.secret(h.root, "b", b"2"))
    three = h.commit([h.root], h.owner, h.secret(h.root, "c", b"3"))
    bad = h.commit([one, two, three], h.owner)
    h.refused(bad, "more than 2 parents")


# -- rule 10: commit times ---------------------------------------------------------------------


def test_a_commit_dated_in_the_future_is_refused_at_receipt(h: History, writer: KeyPair) -> None:
    base = with_writer(h, writer)
    bad = h.commit([base], writer, h.secret(base, "a", b"1"), when=int(h.now[0]) + 30 * 60)
    h.refused(bad, "1800 s ahead of this node's clock")
    h.now[0] += 25 * 60  # within ten minutes of the receiver's clock now
    h.accepted()


def test_a_commit_older_than_its_parent_is_refused(h: History) -> None:
    parent = h.commit([h.root], h.owner, h.secret(h.root, "a", b"1"))
    bad = h.commit([parent], h.owner, h.secret(parent, "a", b"2"), when=h.v.repo.commit_info(parent).time - 1)
    h.refused(bad, "dated before its parent")


def test_a_merge_older_than_either_parent_is_refused(h: History) -> None:
    one = h.commit([h.root], h.owner, h.secret(h.root, "a", b"1"))
    later = h.commit([h.root], h.owner, h.secret(h.root, "b", b"2"), when=int(h.now[0]) + 60)
    bad = h.commit([one, later], h.owner, when=int(h.now[0]))
    h.refused(bad, f"dated before its parent {later[:12]}")


def test_the_vault_clamps_a_slow_clock(h: History) -> None:
    h.svc.set_secret("work", "a", b"1")
    first = h.v.repo.commit_info(h.head()).time
    h.now[0] -= 3600  # the node's clock went back an hour
    h.svc.set_secret("work", "a", b"2")
    assert h.v.repo.commit_info(h.head()).time == first
    h.accepted()  # its own commits were never received: not refused as dated ahead of its clock

