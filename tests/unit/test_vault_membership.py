"""Sharing and unsharing a vault (issue 12; polykey.vaults.membership; DESIGN.md section 6).

Real repositories, real keys: a second node reads the vault by opening the same repository with
its own NodeKey, as a clone would hold it. `git fsck --strict` is the real git binary.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.errors import InvalidInputError, VaultAccessError, VaultPermissionError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import OWNER, READER, WRITER, WrappedKeys, keys_file_name
from polykey.vaults.identity import NodeKey
from polykey.vaults.membership import share, unshare
from polykey.vaults.service import VaultService
from polykey.vaults.vault import PK_DIR, Vault
from polykey.vaults.verify import verify

SECRETS = {"db/password": b"one", "db/user": b"admin", "api/key": b"k-123", "top": b"t", "a/b/c/deep": b"d"}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[VaultService]:
    """A node with vault `work`: a few secrets, an empty directory (`empty/`)."""
    with VaultService(tmp_path / "node", KeyPair.generate()) as s:
        s.create_vault("work")
        s.import_secrets("work", SECRETS)
        s.mkdir("work", "empty")
        yield s


def _as(svc: VaultService, key: NodeKey) -> Vault:
    """The vault's repository opened by another node (no guard: as a clone would read it)."""
    v = svc._vault("work")  # noqa: SLF001 - the repository under the service
    return Vault(v.repo.path, v.vault_id, key, time.time, os.urandom)


def _node() -> NodeKey:
    return NodeKey(KeyPair.generate())


def _fsck(svc: VaultService) -> None:
    path = svc._vault("work").repo.path  # noqa: SLF001
    r = subprocess.run(["git", "-C", str(path), "fsck", "--strict"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _keys_file(v: Vault, epoch: int) -> WrappedKeys:
    e = v.repo.entry(v.snapshot().tree, f"{PK_DIR}/keys/{keys_file_name(epoch)}")
    assert e is not None
    return WrappedKeys.decode(v.repo.read_blob(e.oid))


# -- share -----------------------------------------------------------------------------------------


def test_share_adds_a_member_who_can_then_read(svc: VaultService) -> None:
    bob = _node()
    assert _as(svc, bob).snapshot().keys is None  # no wrap for bob yet
    with pytest.raises(VaultAccessError):
        _as(svc, bob).read(("db", "password"))
    before = _keys_file(_as(svc, bob), 0)
    out = svc.share_vault("work", str(bob.node_id), "writer")
    assert out["changed"] == "added" and out["role"] == WRITER and out["nodeId"] == str(bob.node_id)
    v = _as(svc, bob)
    assert v.snapshot().commit == out["commit"]
    assert v.read(("db", "password")) == b"one"
    assert v.snapshot().members.role_of(bob.node_id) == WRITER
    after = _keys_file(v, 0)  # the same epoch and secret: one more wrap, the commitment kept
    assert after.commitment == before.commitment and after.epoch == 0
    assert {n for n, _w in after.wraps} == {n for n, _w in before.wraps} | {bob.node_id}
    assert dict(before.wraps).items() <= dict(after.wraps).items()  # the others' wraps are untouched
    assert svc.log("work", 1)[0]["message"] == "share vault"
    assert {m["nodeId"]: m["role"] for m in svc.members("work")}[str(bob.node_id)] == WRITER
    assert verify(_as(svc, _node()))["ok"]  # a keyless verifier: every rule that needs no key
    assert verify(v)["ok"] and verify(_as(svc, svc.node_key))["ok"]
    _fsck(svc)


def test_sharing_again_changes_the_role_or_nothing(svc: VaultService) -> None:
    bob = _node()
    added = svc.share_vault("work", str(bob.node_id))
    assert added["role"] == READER  # the default
    wrapped = _keys_file(_as(svc, bob), 0)
    changed = svc.share_vault("work", str(bob.node_id), OWNER)
    assert changed["changed"] == "role" and changed["commit"] != added["commit"]
    assert _keys_file(_as(svc, bob), 0) == wrapped  # no new wrap for a member
    assert _as(svc, bob).snapshot().members.role_of(bob.node_id) == OWNER
    same = svc.share_vault("work", str(bob.node_id), OWNER)
    assert same == {"commit": changed["commit"], "nodeId": str(bob.node_id), "role": OWNER, "changed": "unchanged"}
    assert svc.log("work", 1)[0]["commit"] == changed["commit"]  # nothing committed
    # The new owner may now share in turn, through the vault itself.
    carol = _node()
    share(_as(svc, bob), carol.node_id, READER)
    assert _as(svc, carol).read(("top",)) == b"t"
    assert verify(_as(svc, svc.node_key))["ok"]


def test_share_refusals(svc: VaultService) -> None:
    me = str(svc.node_key.node_id)
    with pytest.raises(InvalidInputError, match="itself"):
        svc.share_vault("work", me, WRITER)
    with pytest.raises(InvalidInputError, match="role"):
        svc.share_vault("work", str(_node().node_id), "admin")
    with pytest.raises(InvalidInputError, match="NodeId"):
        svc.share_vault("work", "not-a-node", READER)
    replica = _node().node_id
    svc.set_replicas("work", [str(replica)])
    with pytest.raises(InvalidInputError, match="replica"):
        svc.share_vault("work", str(replica), READER)
    # Non-owners cannot share: a writer and a reader, each through its own view of the vault.
    writer, reader = _node(), _node()
    svc.share_vault("work", str(writer.node_id), WRITER)
    svc.share_vault("work", str(reader.node_id), READER)
    head = svc.log("work", 1)[0]["commit"]
    for who in (writer, reader):
        with pytest.raises(VaultPermissionError):
            share(_as(svc, who), _node().node_id, READER)
        with pytest.raises(VaultPermissionError):
            unshare(_as(svc, who), svc.node_key.node_id)
    with pytest.raises(VaultPermissionError):  # a stranger neither
        share(_as(svc, _node()), _node().node_id, READER)
    assert svc.log("work", 1)[0]["commit"] == head  # nothing written by any refusal


# -- unshare ---------------------------------------------------------------------------------------


def test_unshare_starts_a_new_epoch_and_reencrypts_the_tree(svc: VaultService) -> None:
    bob, carol = _node(), _node()
    svc.share_vault("work", str(bob.node_id), WRITER)
    svc.share_vault("work", str(carol.node_id), READER)
    old = svc.log("work", 1)[0]["commit"]
    old_tree = _as(svc, bob).snapshot().tree

    out = svc.unshare_vault("work", str(bob.node_id))
    assert out["epoch"] == 1 and out["nodeId"] == str(bob.node_id)
    assert out["rotate"] == sorted(SECRETS)  # every secret bob could read, and nothing else
    last = svc.log("work", 1)[0]
    assert (last["commit"], last["message"]) == (out["commit"], "unshare vault")

    # Bob can no longer read the head, but the history he had stays readable to him.
    bobs = _as(svc, bob)
    with pytest.raises(VaultAccessError):
        bobs.read(("db", "password"))
    assert bobs.read(("db", "password"), commit=old) == b"one"
    # The remaining members read everything, under the new epoch.
    for key in (svc.node_key, carol):
        v = _as(svc, key)
        assert v.snapshot().info.epoch == 1
        assert {"/".join(p): v.read(p) for p, e in v.walk(v.snapshot(), v.snapshot().tree, (), True)
                if e.kind == "blob"} == SECRETS
    assert svc.get_secret("work", "a/b/c/deep") == b"d"
    assert {r["path"]: r["type"] for r in svc.list_secrets("work", "", recursive=True)}["empty"] == "dir"

    v = _as(svc, svc.node_key)
    snap = v.snapshot()
    assert sorted(str(n) for n, _r in snap.members.roles) == sorted([str(svc.node_key.node_id), str(carol.node_id)])
    new_keys = _keys_file(v, 1)
    assert {n for n, _w in new_keys.wraps} == {svc.node_key.node_id, carol.node_id}
    assert new_keys.commitment is not None and new_keys.commitment != _keys_file(v, 0).commitment
    assert _keys_file(v, 0).names(bob.node_id)  # the old epoch's file stays as it was
    # Nothing of the old tree is reused: every name and blob is new (only .pk's old keys file stays).
    old_names = {n for n, _e in v.repo.list_tree(old_tree)} - {PK_DIR}
    assert not old_names & {n for n, _e in v.repo.list_tree(snap.tree)}

    for key in (svc.node_key, carol, bob, _node()):  # members, the removed node, a keyless replica
        assert verify(_as(svc, key))["ok"]
    svc.verify("work")
    _fsck(svc)
    # Writes go on under the new epoch, and bob's wrap never comes back.
    svc.set_secret("work", "db/password", b"two")
    with pytest.raises(VaultAccessError):
        _as(svc, bob).read(("db", "password"))
    assert _as(svc, carol).read(("db", "password")) == b"two"
    assert verify(_as(svc, carol))["ok"]


def test_unshare_refusals_and_the_last_owner(svc: VaultService) -> None:
    head = svc.log("work", 1)[0]["commit"]
    me = str(svc.node_key.node_id)
    with pytest.raises(InvalidInputError, match="last owner"):
        svc.unshare_vault("work", me)
    with pytest.raises(InvalidInputError, match="not a member"):
        svc.unshare_vault("work", str(_node().node_id))
    with pytest.raises(InvalidInputError, match="NodeId"):
        svc.unshare_vault("work", "v123")
    assert svc.log("work", 1)[0]["commit"] == head
    # With a second owner, this node may leave; it then cannot read, and the other owner can.
    other = _node()
    svc.share_vault("work", str(other.node_id), OWNER)
    out = svc.unshare_vault("work", me)
    assert out["rotate"] == sorted(SECRETS)
    with pytest.raises(VaultAccessError):
        svc.get_secret("work", "top")
    v = _as(svc, other)
    assert v.read(("top",)) == b"t" and v.snapshot().members.role_of(NodeId.from_text(me)) is None
    with pytest.raises(InvalidInputError, match="last owner"):
        unshare(v, other.node_id)
    assert verify(v)["ok"]


def test_unshare_of_an_empty_vault_and_twice_in_a_row(tmp_path: Path) -> None:
    with VaultService(tmp_path / "node", KeyPair.generate()) as svc:
        svc.create_vault("work")
        a, b = _node(), _node()
        svc.share_vault("work", str(a.node_id), READER)
        svc.share_vault("work", str(b.node_id), READER)
        assert svc.unshare_vault("work", str(a.node_id))["rotate"] == []
        svc.set_secret("work", "x", b"1")
        second = svc.unshare_vault("work", str(b.node_id))
        assert (second["epoch"], second["rotate"]) == (2, ["x"])
        assert svc.get_secret("work", "x") == b"1"
        assert verify(_as(svc, svc.node_key))["commits"] == 6
        _fsck(svc)
