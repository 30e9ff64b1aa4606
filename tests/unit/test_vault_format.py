"""Vault byte formats: hypothesis round-trips of every codec and strict rejection (spec vault-format.md)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.crypto import sshsig
from polykey.errors import (
    AuthenticationError,
    InvalidInputError,
    NotForThisKeyError,
    VaultFormatError,
    VaultIndexError,
    VaultIntegrityError,
)
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults import index
from polykey.vaults.format import (
    BLOB_OVERHEAD,
    ROLES,
    EpochKeys,
    Members,
    VaultInfo,
    WrappedKeys,
    secret_size,
    split_path,
)
from polykey.vaults.identity import NodeKey

vault_ids = st.binary(min_size=16, max_size=16).map(VaultId)
node_ids = st.binary(min_size=32, max_size=32).map(NodeId)
epochs = st.integers(0, 2**32 - 1)
components = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x7f"), min_size=1, max_size=40
).filter(lambda c: c not in (".", "..") and all(ord(x) >= 0x20 for x in c) and len(c.encode()) <= 255)
KEYS = EpochKeys.derive(VaultId(b"\x01" * 16), 7, b"\x02" * 32)


@given(vault_ids, epochs)
def test_vault_info_round_trip(vid: VaultId, epoch: int) -> None:
    data = VaultInfo(vid, epoch).encode()
    assert len(data) == 25
    assert VaultInfo.decode(data) == VaultInfo(vid, epoch)
    assert VaultInfo.decode(data).encode() == data


def test_vault_info_rejects() -> None:
    good = VaultInfo(VaultId(b"\0" * 16), 0).encode()
    for bad in (good + b"\0", good[:-1], b"XXXX" + good[4:], good[:4] + b"\x02" + good[5:]):
        with pytest.raises(VaultFormatError):
            VaultInfo.decode(bad)


@given(st.dictionaries(node_ids, st.sampled_from(ROLES), min_size=1, max_size=20))
def test_members_round_trip(roles: dict[NodeId, str]) -> None:
    m = Members(tuple(sorted(roles.items())))
    data = m.encode()
    back = Members.decode(data)
    assert back == m and back.encode() == data
    for node, role in roles.items():
        assert back.role_of(node) == role


def test_members_rejects_unsorted_duplicate_unknown_role_trailing() -> None:
    a, b = NodeId(b"\x01" * 32), NodeId(b"\x02" * 32)
    data = Members(((a, "owner"), (b, "reader"))).encode()
    swapped = data[:7] + data[7 + 33 :] + data[7 : 7 + 33]
    dup = data[:7] + data[7 : 7 + 33] * 2
    bad_role = data[:-1] + b"\x09"
    for bad in (swapped, dup, bad_role, data + b"\0", data[:-1], data[:5], Members(()).encode()):
        with pytest.raises(VaultFormatError):
            Members.decode(bad)


@settings(max_examples=20, deadline=None)
@given(epochs, st.integers(1, 4))
def test_wrapped_keys_round_trip_and_unwrap(epoch: int, n: int) -> None:
    pairs = [KeyPair.generate() for _ in range(n)]
    secret = os.urandom(32)
    w = WrappedKeys.create(epoch, secret, [p.node_id for p in pairs])
    data = w.encode()
    back = WrappedKeys.decode(data)
    assert back.encode() == data and back.epoch == epoch
    for p in pairs:
        assert back.unwrap(NodeKey(p)) == secret
    stranger = KeyPair.generate()
    with pytest.raises(NotForThisKeyError):
        back.unwrap(NodeKey(stranger))
    with pytest.raises(VaultFormatError):
        WrappedKeys.decode(data + b"\0")


def test_wrapped_key_tampered_is_integrity_error() -> None:
    p = KeyPair.generate()
    data = bytearray(WrappedKeys.create(0, b"\0" * 32, [p.node_id]).encode())
    data[-1] ^= 1
    with pytest.raises(VaultIntegrityError):
        WrappedKeys.decode(bytes(data)).unwrap(NodeKey(p))


@given(components)
def test_name_round_trip_is_deterministic_base32hex(component: str) -> None:
    name = KEYS.encrypt_name(component)
    assert name == KEYS.encrypt_name(component)
    assert set(name) <= set("0123456789abcdefghijklmnopqrstuv")
    assert KEYS.decrypt_name(name) == component
    other = EpochKeys.derive(VaultId(b"\x01" * 16), 8, b"\x02" * 32)
    assert other.encrypt_name(component) != name  # names depend on the epoch


@pytest.mark.parametrize("bad", ["", "x" * 20, "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", "w" * 40, ".keep", ".pk"])
def test_name_rejects_garbage(bad: str) -> None:
    with pytest.raises(VaultIntegrityError):
        KEYS.decrypt_name(bad)


def test_name_rejects_flipped_character() -> None:
    name = KEYS.encrypt_name("db")
    flipped = ("1" if name[3] != "1" else "2").join([name[:3], name[4:]])
    with pytest.raises(VaultIntegrityError):
        KEYS.decrypt_name(flipped)


@given(st.binary(max_size=2048), st.lists(components, min_size=1, max_size=4).map("/".join))
def test_blob_round_trip(value: bytes, path: str) -> None:
    blob = KEYS.encrypt_secret(path, value)
    assert len(blob) == len(value) + BLOB_OVERHEAD
    assert secret_size(len(blob)) == len(value)
    assert blob[0] == 1 and int.from_bytes(blob[1:5], "big") == 7
    assert KEYS.decrypt_secret(path, blob) == value


def test_blob_binds_path_epoch_and_vault() -> None:
    blob = KEYS.encrypt_secret("a/b", b"value")
    with pytest.raises(VaultIntegrityError):
        KEYS.decrypt_secret("a/c", blob)
    other_vault = EpochKeys.derive(VaultId(b"\x09" * 16), 7, b"\x02" * 32)
    with pytest.raises(VaultIntegrityError):
        other_vault.decrypt_secret("a/b", blob)
    other_epoch = EpochKeys.derive(VaultId(b"\x01" * 16), 8, b"\x02" * 32)
    with pytest.raises(VaultIntegrityError):
        other_epoch.decrypt_secret("a/b", blob)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises((VaultIntegrityError, VaultFormatError)):
            KEYS.decrypt_secret("a/b", bytes(bad))
    with pytest.raises(VaultIntegrityError):
        KEYS.decrypt_secret("a/b", blob[:10])


@pytest.mark.parametrize("path,parts", [("a", ("a",)), ("/a/b/", ("a", "b")), ("é/x y", ("é", "x y"))])
def test_split_path(path: str, parts: tuple[str, ...]) -> None:
    assert split_path(path) == parts


@pytest.mark.parametrize("bad", ["", "/", "a//b", "a/./b", "../a", "a/\x00", "a\nb", "x" * 256, "/".join("a" * 33)])
def test_split_path_rejects(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        split_path(bad)


@given(st.dictionaries(st.text(min_size=1, max_size=30), vault_ids, max_size=20))
def test_index_round_trip(entries: dict[str, VaultId]) -> None:
    key = os.urandom(32)
    data = index.encode(key, entries)
    assert index.decode(key, data) == entries
    with pytest.raises(VaultIndexError):
        index.decode(os.urandom(32), data)
    with pytest.raises(VaultIndexError):
        index.decode(key, data[:-1] + bytes([data[-1] ^ 1]))


@given(st.binary(max_size=4096), st.sampled_from([b"git", b"file", b""]))
@settings(max_examples=30, deadline=None)
def test_sshsig_round_trip(message: bytes, namespace: bytes) -> None:
    pair = KeyPair.generate()
    armored = sshsig.sign(pair.seed, message, namespace)
    assert sshsig.verify(armored, message, namespace) == pair.public_key
    blob = sshsig.dearmor(armored)
    assert sshsig.decode(blob).encode() == blob
    assert sshsig.armor(blob) == armored
    with pytest.raises(AuthenticationError):
        sshsig.verify(armored, message + b"x", namespace)
    with pytest.raises(AuthenticationError):
        sshsig.verify(armored, message, namespace + b"x")


def test_sshsig_rejects_malformed() -> None:
    pair = KeyPair.generate()
    armored = sshsig.sign(pair.seed, b"m")
    blob = sshsig.dearmor(armored)
    for bad in (blob + b"\0", blob[:-1], b"XSHSIG" + blob[6:], blob[:6] + b"\0\0\0\2" + blob[10:]):
        with pytest.raises(InvalidInputError):
            sshsig.decode(bad)
    with pytest.raises(InvalidInputError):
        sshsig.dearmor(armored.replace("-----BEGIN", "-----BEGINX"))
    with pytest.raises(InvalidInputError):
        sshsig.dearmor(armored.replace("\n", "\n\n", 2))  # non-canonical wrapping


def test_sshsig_matches_openssh_layout() -> None:
    """The blob starts as ssh-keygen's does: magic, version 1, the ssh-ed25519 key blob."""
    pair = KeyPair.generate()
    blob = sshsig.dearmor(sshsig.sign(pair.seed, b"m"))
    assert blob[:10] == b"SSHSIG\0\0\0\1"
    assert blob[10:14] == (51).to_bytes(4, "big")
    assert blob[14:33] == b"\0\0\0\x0bssh-ed25519\0\0\0\x20"
    assert blob[33:65] == pair.public_key
