"""Merge rules, revocation that wins, and commit times (issue 11 item 4), through a real agent and
the real `pk`.

Each history is what a peer could hand over: commits by other members (real keys, the project's
own commit layout), merges included, written with stock git while the agent is stopped. Reads,
a write and `pk vaults verify` must all refuse it (exit 65, one line naming the commit and the
rule, nothing on stdout) and nothing is written on top of it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import EpochKeys, Members, WrappedKeys, keys_file_name
from polykey.vaults.identity import NodeKey

from ..conftest import Node
from . import vault_forge as forge
from .agent_util import pk


class Forge:
    """A node's vault `app` (one secret by the owner) and commits built on it with stock git."""

    def __init__(self, node: Node) -> None:
        created = pk(node, "vaults", "create", "app", "--format", "json")
        assert created.code == 0, created.err
        assert pk(node, "secrets", "set", "app:db/password", input=b"good").code == 0
        self.node = node
        self.repo = forge.repo_of(node, created.json["vaultId"])  # type: ignore[index]
        self.vid = VaultId.from_text(created.json["vaultId"])  # type: ignore[index]
        self.owner = forge.owner_key(node)
        blob = subprocess.run(["git", "-C", str(self.repo), "cat-file", "blob", "main:.pk/keys/00000000"],
                              capture_output=True, check=True).stdout
        self.secret = WrappedKeys.decode(blob).unwrap(NodeKey(self.owner))
        self.keys = EpochKeys.derive(self.vid, 0, self.secret)
        assert pk(node, "agent", "stop", password=False).code == 0
        self.start = forge.head(self.repo)

    def tree_with(self, commit: str, roles: dict[NodeId, str] | None = None,
                  secret: tuple[str, bytes] | None = None) -> str:
        """The tree of ``commit`` with ``.pk/members`` (and wraps) set to ``roles`` and/or one more
        top-level secret."""
        entries = forge.entries(self.repo, forge.git(self.repo, "rev-parse", f"{commit}^{{tree}}"))
        if roles is not None:
            wraps = WrappedKeys.create(0, self.secret, list(roles), self.vid).encode()
            keys = forge.tree(self.repo, [("100644", keys_file_name(0), forge.write(self.repo, "blob", wraps))])
            members = Members(tuple(sorted(roles.items()))).encode()
            pk_tree = forge.tree(self.repo, [
                ("40000", "keys", keys), ("100644", "members", forge.write(self.repo, "blob", members)),
                ("100644", "vault", forge.write(self.repo, "blob", forge.vault_info(self.repo, commit).encode()))])
            entries = [(m, n, pk_tree if n == ".pk" else o) for m, n, o in entries]
        if secret is not None:
            name, value = secret
            blob = forge.write(self.repo, "blob", self.keys.encrypt_secret(name, value))
            entries = sorted(entries + [("100644", self.keys.encrypt_name(name), blob)],
                             key=lambda e: e[1] + ("/" if e[0] == "40000" else ""))
        return forge.tree(self.repo, entries)

    def roles(self, **changes: tuple[NodeId, str | None]) -> dict[NodeId, str]:
        roles: dict[NodeId, str] = {self.owner.node_id: "owner"}
        for node, role in changes.values():
            if role is not None:
                roles[node] = role
        return roles

    def commit(self, parents: list[str], signer: KeyPair, tree: str, when: int | None = None) -> str:
        return forge.commit(self.repo, tree, parents, signer.node_id, signer, when=when,
                            message="merge\n" if len(parents) > 1 else "set secret\n")

    def add(self, member: KeyPair, role: str) -> str:
        """An owner's commit on the start adding ``member``."""
        return self.commit([self.start], self.owner,
                           self.tree_with(self.start, self.roles(m=(member.node_id, role))))

    def refused(self, head: str, bad: str, *words: str) -> None:
        forge.move_main(self.repo, head)
        for args, given in ((["secrets", "get", "app:db/password"], None), (["secrets", "set", "app:x"], b"v"),
                            (["vaults", "verify", "app"], None)):
            r = pk(self.node, *args, input=given)
            assert (r.code, r.out) == (65, b""), (args, r.code, r.out, r.err)
            assert len(r.err.splitlines()) == 1 and bad in r.err, (args, r.err)
            assert all(w in r.err for w in words), (args, r.err)
        assert forge.head(self.repo) == head  # nothing was written on top of it


def test_a_commit_dated_30_minutes_ahead_is_refused(node: Node) -> None:
    f = Forge(node)
    writer = KeyPair.generate()
    added = f.add(writer, "writer")
    bad = f.commit([added], writer, f.tree_with(added, secret=("x", b"late")), when=int(time.time()) + 30 * 60)
    f.refused(bad, bad, "ahead of this node's clock")


def test_a_removed_members_commit_merged_after_its_removal_is_refused(node: Node) -> None:
    f = Forge(node)
    writer = KeyPair.generate()
    added = f.add(writer, "writer")
    removal = f.commit([added], f.owner, f.tree_with(added, f.roles()))
    late = f.commit([added], writer, f.tree_with(added, secret=("x", b"after removal")))
    merge = f.commit([removal, late], f.owner, f.tree_with(removal))
    f.refused(merge, merge, late[:12], "revocation wins")


def test_a_writer_changing_pk_outside_the_merge_rule_is_refused(node: Node) -> None:
    f = Forge(node)
    writer, reader = KeyPair.generate(), KeyPair.generate()
    added = f.add(writer, "writer")
    shared = f.commit([added], f.owner, f.tree_with(added, f.roles(w=(writer.node_id, "writer"),
                                                                   r=(reader.node_id, "reader"))))
    mine = f.commit([added], writer, f.tree_with(added, secret=("x", b"mine")))
    merge = f.commit([mine, shared], writer, f.tree_with(mine))  # keeps its own, stale .pk
    f.refused(merge, merge, "not an owner", "does not keep the .pk")


def test_a_readers_commit_is_refused(node: Node) -> None:
    f = Forge(node)
    reader = KeyPair.generate()
    added = f.add(reader, "reader")
    bad = f.commit([added], reader, f.tree_with(added, secret=("x", b"by a reader")))
    f.refused(bad, bad, "a reader")


def test_a_merge_by_the_rules_is_served(node: Node) -> None:
    f = Forge(node)
    writer = KeyPair.generate()
    added = f.add(writer, "writer")
    mine = f.commit([added], writer, f.tree_with(added, secret=("x", b"from the writer")))
    theirs = f.commit([added], f.owner, f.tree_with(added, secret=("y", b"from the owner")))
    merge = f.commit([mine, theirs], writer, f.tree_with(mine, secret=("y", b"from the owner")))
    forge.move_main(f.repo, merge)
    r = pk(node, "secrets", "get", "app:x")
    assert (r.code, r.out) == (0, b"from the writer"), r.err
    assert pk(node, "vaults", "verify", "app").code == 0
