"""Vault format v2 (issue 11 items 2 and 3): a root nobody else can forge, epochs with an identity.

As in test_vault_trust_cli.py, each bad history is built on disk with stock git and the project's
own codecs while the agent is stopped, and must be refused by reads, a write and `pk vaults
verify` through a real agent: one line, exit 65 (or 85 for another history), nothing on stdout,
nothing written. Most are signed by the vault's own owner (a malicious owner, or a stolen key),
so that only the format v2 rule under test can refuse them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import CREATED, V2, Members, Replicas, WrappedKeys, key_commitment

from ..conftest import Node
from . import vault_forge as forge
from .agent_util import pk
from .test_vault_trust_cli import _as_before_the_state_file, _make, _refused, _stop

PATH = ("db", "password")
S1, S2 = b"\x51" * 32, b"\x52" * 32  # epoch secrets the forger picks


def _me(node: Node) -> NodeId:
    return NodeId.from_text(node.node_id)


def _signed(repo: Path, tree: str, parents: list[str], signer: KeyPair) -> str:
    bad = forge.commit(repo, tree, parents, signer.node_id, signer)
    forge.move_main(repo, bad)
    return bad


def _epoch_tree(node: Node, repo: Path, epoch: int, wrapped: WrappedKeys, secret: bytes, value: bytes) -> str:
    """The vault's tree at ``epoch`` with the keys file ``wrapped`` and ``value`` under ``secret``."""
    head = forge.head(repo)
    info = replace(forge.vault_info(repo, head), epoch=epoch)
    return forge.vault_tree(repo, info, Members(((_me(node), "owner"),)), wrapped, secret, PATH, value)


def _stopped(node: Node) -> tuple[Path, KeyPair, str]:
    """A vault `app` with a secret, the agent stopped: its repository, the owner's key, its head."""
    repo = _make(node)
    _stop(node)
    return repo, forge.owner_key(node), forge.head(repo)


def test_a_new_vault_is_bound_to_its_creator(node: Node) -> None:
    repo = _make(node)
    info = forge.vault_info(repo, forge.head(repo))
    assert (info.version, info.origin) == (V2, CREATED) and info.bound_to(_me(node))
    assert forge.wrapped_keys(repo, forge.head(repo)).commitment is not None


def test_a_second_root_is_refused(node: Node) -> None:
    repo, owner, head = _stopped(node)
    tree = forge.tree_of(repo, head)
    second = forge.commit(repo, tree, [], owner.node_id, owner, message="create vault\n")
    merge = _signed(repo, tree, [head, second], owner)
    _refused(node, 65, "second root")
    assert forge.head(repo) == merge


def test_a_root_not_signed_by_the_vaults_creator_is_refused(node: Node) -> None:
    repo = _make(node)
    good = forge.head(repo)
    _stop(node)
    # Another node rebuilds the vault from scratch under the same VaultId, itself an owner beside us.
    them, me = KeyPair.generate(), _me(node)
    vid = VaultId.from_text(repo.name.removesuffix(".git"))
    info = replace(forge.vault_info(repo, good), nonce=b"\x07" * 32)
    members = Members(tuple(sorted([(them.node_id, "owner"), (me, "owner")], key=lambda m: m[0].raw)))
    tree = forge.vault_tree(repo, info, members, WrappedKeys.create(0, S1, [them.node_id, me], vid), S1, PATH,
                            b"evil")
    root = _signed(repo, tree, [], them)
    r = pk(node, "secrets", "get", "app:db/password")  # the root this node pinned is not in that history
    assert (r.code, r.out) == (85, b"") and root in r.err and good in r.err, r.err
    r = pk(node, "vaults", "verify", "app")  # the audit walks the history itself first
    assert (r.code, r.out) == (65, b"") and root in r.err and "creator" in r.err, r.err
    _as_before_the_state_file(node)  # a node that had pinned nothing yet: the rule itself refuses it
    _refused(node, 65, root, "creator")
    assert forge.head(repo) == root


def test_a_wrong_key_commitment_is_refused(node: Node) -> None:
    repo, owner, head = _stopped(node)
    keys = forge.wrapped_keys(repo, head)
    assert keys.commitment is not None
    flipped = WrappedKeys(keys.epoch, keys.wraps, bytes([keys.commitment[0] ^ 1]) + keys.commitment[1:])
    tree = forge.put(repo, forge.tree_of(repo, head), (".pk", "keys", "00000000"), "100644",
                     forge.write(repo, "blob", flipped.encode()))
    bad = _signed(repo, tree, [head], owner)
    _refused(node, 65, bad, ".pk/keys/00000000", "key commitment")


@pytest.mark.parametrize("case", ["commitment-for-another-secret", "same-epoch-new-key", "non-member"])
def test_a_forged_epoch_key_is_refused(node: Node, case: str) -> None:
    """A wrap sealed to our key by someone else (sealed boxes are anonymous): for a new epoch whose
    commitment is for another secret, re-keying an existing epoch, or signed by a non-member."""
    repo = _make(node)
    owner, me = forge.owner_key(node), _me(node)
    vid = VaultId.from_text(repo.name.removesuffix(".git"))
    _stop(node)
    head = forge.head(repo)
    sealed = WrappedKeys.create(1, S1, [me]).wraps
    if case == "commitment-for-another-secret":
        wrapped, signer, words = WrappedKeys(1, sealed, key_commitment(vid, 1, S2)), owner, ["key commitment"]
    elif case == "same-epoch-new-key":
        wrapped, signer, words = WrappedKeys.create(0, S1, [me], vid), owner, ["changes the key of epoch 0"]
    else:
        wrapped, signer, words = WrappedKeys.create(1, S1, [me], vid), KeyPair.generate(), ["not a member"]
    bad = _signed(repo, _epoch_tree(node, repo, wrapped.epoch, wrapped, S1, b"evil"), [head], signer)
    _refused(node, 65, bad, *words)
    assert forge.head(repo) == bad


def test_an_epoch_going_down_is_refused(node: Node) -> None:
    repo = _make(node)
    owner, me = forge.owner_key(node), _me(node)
    vid = VaultId.from_text(repo.name.removesuffix(".git"))
    _stop(node)
    epoch0 = forge.head(repo)
    # A real rotation to epoch 1 by the owner is accepted and served...
    rotated = _signed(repo, _epoch_tree(node, repo, 1, WrappedKeys.create(1, S1, [me], vid), S1, b"rotated"),
                      [epoch0], owner)
    assert pk(node, "secrets", "get", "app:db/password").out == b"rotated"
    _stop(node)
    # ... but going back to epoch 0 on top of it is not, even signed by the owner.
    bad = _signed(repo, forge.tree_of(repo, epoch0), [rotated], owner)
    _refused(node, 65, bad, "epoch 0 goes down from 1")
    assert forge.head(repo) == bad


def test_replicas_set_by_an_owner_are_shown_and_a_member_listed_as_one_is_refused(node: Node) -> None:
    """`.pk/replicas` (issue 11 item 6): no command sets it yet, so the owner's commit is made on disk."""
    repo, owner, head = _stopped(node)
    replica = KeyPair.generate().node_id
    listed = forge.put(repo, forge.tree_of(repo, head), (".pk", "replicas"), "100644",
                       forge.write(repo, "blob", Replicas((replica,)).encode()))
    good = _signed(repo, listed, [head], owner)
    rows = pk(node, "vaults", "members", "app", "--format", "json").json
    assert rows == [{"nodeId": node.node_id, "role": "owner", "self": True, "lastSync": None},
                    {"nodeId": str(replica), "role": "replica", "self": False, "lastSync": None}]
    assert pk(node, "vaults", "verify", "app").code == 0
    _stop(node)
    member = forge.put(repo, forge.tree_of(repo, good), (".pk", "replicas"), "100644",
                       forge.write(repo, "blob", Replicas((_me(node),)).encode()))
    bad = _signed(repo, member, [good], owner)
    _refused(node, 65, bad, "lists a member")
