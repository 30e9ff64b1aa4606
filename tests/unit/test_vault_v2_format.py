"""Vault format v2 (issue 11 items 2, 3, 6): the bound VaultId, key commitments, keys cached by
identity, and backup replicas (docs/spec/vault-format.md sections 4.1, 4.3, 4.4, 8)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from polykey import crypto
from polykey.errors import InvalidInputError, VaultFormatError, VaultIntegrityError, VaultVerificationError
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import (
    CREATED,
    UPGRADED,
    V1,
    V2,
    EpochKeys,
    Replicas,
    VaultInfo,
    WrappedKeys,
    derive_vault_id,
    key_commitment,
)
from polykey.vaults.identity import NodeKey
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.service import VaultService
from polykey.vaults.vault import Vault
from polykey.vaults.verify import verify

from .test_vault_verify import craft, member_change, owner, svc  # noqa: F401 - the same vault fixtures


def _vault(svc: VaultService) -> Vault:
    return svc._vault("work")  # noqa: SLF001 - tests craft commits on the real repository


# -- codecs ------------------------------------------------------------------------------------


def test_vault_file_v2_round_trips_and_binds_the_creator() -> None:
    me, nonce = KeyPair.generate().node_id, b"\x01" * 32
    info = VaultInfo.created(me, nonce)
    assert info.vault_id == derive_vault_id(me, nonce) and info.bound_to(me)
    assert not info.bound_to(KeyPair.generate().node_id)
    data = info.encode()
    assert len(data) == 58 and VaultInfo.decode(data) == info and VaultInfo.decode(data).encode() == data
    up = VaultInfo(info.vault_id, 3).upgraded()
    assert (up.version, up.origin, up.epoch) == (V2, UPGRADED, 3) and not up.bound_to(me)
    assert VaultInfo.decode(up.encode()) == up
    assert VaultInfo.decode(VaultInfo(info.vault_id, 0).encode()).version == V1  # version 1 still reads


@pytest.mark.parametrize("bad", [
    lambda d: d[:-1],  # truncated
    lambda d: d[:25] + b"\x03" + d[26:],  # unknown origin
    lambda d: d[:25] + bytes([UPGRADED]) + d[26:],  # upgraded with a nonce
    lambda d: d[:4] + b"\x03" + d[5:],  # unknown version
    lambda d: b"PKVX" + d[4:],
    lambda d: d + b"\x00",
])
def test_vault_file_v2_decoding_is_strict(bad) -> None:  # type: ignore[no-untyped-def]
    data = VaultInfo.created(KeyPair.generate().node_id, b"\x02" * 32).encode()
    with pytest.raises(VaultFormatError):
        VaultInfo.decode(bad(data))


def test_keys_file_v2_carries_a_commitment_checked_after_unwrapping() -> None:
    me = KeyPair.generate()
    vid, secret = VaultId(b"\x03" * 16), b"\x04" * 32
    wrapped = WrappedKeys.create(2, secret, [me.node_id], vid)
    assert wrapped.commitment == key_commitment(vid, 2, secret) == EpochKeys.derive(vid, 2, secret).commitment
    data = wrapped.encode()
    assert WrappedKeys.decode(data) == wrapped and WrappedKeys.decode(data).encode() == data
    assert wrapped.open(NodeKey(me), vid) == secret
    with pytest.raises(VaultIntegrityError, match=r"\.pk/keys/00000002"):
        WrappedKeys(2, wrapped.wraps, key_commitment(vid, 2, b"\x05" * 32)).open(NodeKey(me), vid)
    with pytest.raises(VaultIntegrityError):  # the commitment binds the VaultId
        wrapped.open(NodeKey(me), VaultId(b"\x06" * 16))
    with pytest.raises(VaultFormatError):
        WrappedKeys.decode(data[:-1])
    assert WrappedKeys.decode(WrappedKeys.create(0, secret, [me.node_id]).encode()).commitment is None  # v1


def test_replicas_round_trip_and_strict_decoding() -> None:
    a, b = sorted((KeyPair.generate().node_id for _ in range(2)), key=lambda n: n.raw)
    data = Replicas((b, a, b)).encode()
    assert Replicas.decode(data) == Replicas((a, b)) and Replicas.decode(data).encode() == data
    for bad in (data[:-1], data + b"\x00", data[:7] + b.raw + a.raw, b"PKVR\x01\x00\x00", b"PKVR\x02" + data[5:]):
        with pytest.raises(VaultFormatError):
            Replicas.decode(bad)
    with pytest.raises(InvalidInputError):
        Replicas(()).encode()


# -- vaults ------------------------------------------------------------------------------------


def test_a_new_vault_is_bound_to_its_creator(svc: VaultService, owner: KeyPair) -> None:
    snap = _vault(svc).snapshot()
    assert snap.info.version == V2 and snap.info.origin == CREATED and snap.info.bound_to(owner.node_id)
    v = _vault(svc)
    keys_file = v.repo.entry(snap.tree, ".pk/keys/00000000")
    assert keys_file is not None and snap.keys is not None
    assert WrappedKeys.decode(v.repo.read_blob(keys_file.oid)).commitment == snap.keys.commitment


def _rotate(v: Vault, parent: str, secret: bytes, value: bytes) -> str:
    """An owner-signed commit on ``parent`` starting epoch 1 under ``secret``, with db/password = value."""
    with v.repo.write_lock():
        snap = v.load(parent)
        keys = EpochKeys.derive(v.vault_id, 1, secret)
        changes: dict[tuple[str, ...], Change] = {name: None for name in
                                                  [(n,) for n, _e in v.repo.list_tree(snap.tree) if n != ".pk"]}
        changes[(".pk", "vault")] = Entry(BLOB, v.repo.write_blob(replace(snap.info, epoch=1).encode()))
        changes[(".pk", "keys", "00000000")] = None
        changes[(".pk", "keys", "00000001")] = Entry(
            BLOB, v.repo.write_blob(WrappedKeys.create(1, secret, [v.me], v.vault_id).encode()))
        changes[(keys.encrypt_name("db"), keys.encrypt_name("password"))] = Entry(
            BLOB, v.repo.write_blob(keys.encrypt_secret("db/password", value)))
        return v.repo.commit(v.repo.apply(snap.tree, changes), [parent], "rotate keys\n", v.key, when=1_800_000_000)


def test_keys_are_cached_by_identity_not_by_epoch_number(svc: VaultService, owner: KeyPair) -> None:
    """Two branches that both start an epoch 1, with different secrets (two owners revoking at once)."""
    v = _vault(svc)
    base = v.snapshot().commit
    a = _rotate(v, base, b"\x0a" * 32, b"from a")
    b = _rotate(v, base, b"\x0b" * 32, b"from b")
    plain = Vault(v.repo.path, v.vault_id, NodeKey(owner), v.clock, v.rng)  # no guard: any commit
    try:
        for commit, value in ((a, b"from a"), (b, b"from b"), (a, b"from a")):
            assert plain.read(("db", "password"), commit) == value
        assert verify(plain, a)["ok"] and verify(plain, b)["ok"]
    finally:
        plain.close()


def test_owners_set_replicas_and_members_shows_them(svc: VaultService) -> None:
    r1 = KeyPair.generate().node_id
    out = svc.set_replicas("work", [str(r1)])
    assert out["replicas"] == [str(r1)]
    assert {"nodeId": str(r1), "role": "replica", "self": False, "lastSync": None} in svc.members("work")
    assert svc.verify("work")["ok"]
    with pytest.raises(InvalidInputError):
        svc.set_replicas("work", [str(_vault(svc).me)])  # a member is not a replica
    svc.set_replicas("work", [])
    assert [m["role"] for m in svc.members("work")] == ["owner"]
    assert svc.get_secret("work", "db/password") == b"hunter2"


def test_a_writer_cannot_change_the_replicas(svc: VaultService, owner: KeyPair) -> None:
    v = _vault(svc)
    writer = KeyPair.generate()
    craft(v, lambda: member_change(v, owner, writer.node_id, "writer"), owner)
    replicas = Replicas((KeyPair.generate().node_id,)).encode()
    bad = craft(v, lambda: {(".pk", "replicas"): Entry(BLOB, v.repo.write_blob(replicas))}, writer)
    fresh = Vault(v.repo.path, v.vault_id, NodeKey(owner), v.clock, v.rng)
    try:
        with pytest.raises(VaultVerificationError, match="not an owner") as e:
            verify(fresh)
        assert e.value.data["commit"] == bad
    finally:
        fresh.close()


def test_replicas_may_not_list_a_member(svc: VaultService, owner: KeyPair) -> None:
    v = _vault(svc)
    me: NodeId = owner.node_id
    bad = craft(v, lambda: {(".pk", "replicas"): Entry(BLOB, v.repo.write_blob(Replicas((me,)).encode()))}, owner)
    with pytest.raises(VaultVerificationError, match="lists a member") as e:
        svc.verify("work")
    assert e.value.data["commit"] == bad


def test_a_vault_commitment_is_a_real_hkdf() -> None:
    vid, secret = VaultId(b"\x07" * 16), b"\x08" * 32
    assert key_commitment(vid, 5, secret) == crypto.derive(
        secret, b"polykey vault v2 key commitment", 32, vid.raw + (5).to_bytes(4, "big"))


@pytest.mark.parametrize("change,words", [
    (lambda info: VaultInfo(info.vault_id, info.epoch), "format version 1 goes down"),
    (lambda info: info.upgraded(), "changes the vault's origin"),
    (lambda info: replace(info, nonce=b"\x09" * 32), "changes the vault's origin"),
])
def test_the_format_version_and_origin_never_go_back(svc: VaultService, owner: KeyPair, change, words) -> None:  # type: ignore[no-untyped-def]
    """Even an owner cannot turn a version 2 vault back to version 1 or rewrite where its VaultId
    comes from (the keys file is left as it is: version 2, which version 1 also reads)."""
    v = _vault(svc)
    info = v.snapshot().info
    bad = craft(v, lambda: {(".pk", "vault"): Entry(BLOB, v.repo.write_blob(change(info).encode()))}, owner)
    with pytest.raises(VaultVerificationError, match=words) as e:
        svc.get_secret("work", "db/password")
    assert e.value.data["commit"] == bad
