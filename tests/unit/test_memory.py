"""Key material in memory (polykey.crypto.memory, docs/security.md "Memory")."""

from __future__ import annotations

import os

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey import crypto
from polykey.crypto import _primitives as p
from polykey.crypto import memory
from polykey.errors import AuthenticationError, KeysError
from polykey.keys.keypair import KeyPair


def test_wipe_zeroes_in_place_and_leaves_shared_singletons_alone() -> None:
    made = os.urandom(24)
    alias = made
    memory.wipe(made)
    assert alias == bytes(24)
    buf = bytearray(b"secret value")
    memory.wipe(buf)
    assert buf == bytearray(12)
    one = bytes([7])  # CPython shares every 1-byte bytes object: never touched
    memory.wipe(one)
    assert bytes([7]) == b"\x07"
    memory.wipe(b"")
    memory.wipe(None)


def test_borrowed_copies_are_wiped_after_use() -> None:
    buf = memory.secret_buffer(b"the seed, 32 bytes long........")
    with memory.borrowed(buf) as copy:
        assert isinstance(copy, bytes) and copy == bytes(buf)
        kept = copy
    assert kept == bytes(len(buf)) and buf == bytearray(b"the seed, 32 bytes long........")


def test_wipe_values_reaches_every_bytes_in_a_reply() -> None:
    reply = {"a": os.urandom(8), "b": [os.urandom(8), {"c": os.urandom(8)}], "d": "text", "e": 3}
    values = [reply["a"], reply["b"][0], reply["b"][1]["c"]]  # type: ignore[index]
    memory.wipe_values(reply)
    assert all(v == bytes(8) for v in values) and reply["d"] == "text"


def test_secret_buffers_are_mlocked_where_allowed() -> None:
    buf = memory.secret_buffer(os.urandom(32))
    if os.geteuid() == 0:  # root is never over RLIMIT_MEMLOCK
        assert memory.lock_pages(buf)


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_x25519_from_the_seed_matches_libsodium(seed: bytes) -> None:
    _, secret = sodium.crypto_sign_seed_keypair(seed)
    assert p.ed25519_seed_to_x25519(bytearray(seed)) == sodium.crypto_sign_ed25519_sk_to_curve25519(secret)


@given(st.binary(max_size=300), st.binary(max_size=40))
@settings(max_examples=50)
def test_decryption_into_our_own_buffer_matches_libsodium(message: bytes, ad: bytes) -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(message, ad, nonce, key)
    assert p.xchacha_decrypt(key, nonce, sealed, ad) == message
    with pytest.raises(AuthenticationError):
        p.xchacha_decrypt(key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), ad)
    with pytest.raises(AuthenticationError):
        p.xchacha_decrypt(key, nonce, sealed[:15], ad)
    public, private = sodium.crypto_box_keypair()
    box = sodium.crypto_box_seal(message, public)
    assert p.box_seal_open(public, private, box) == message
    with pytest.raises(AuthenticationError):
        p.box_seal_open(public, private, box[:-1] + bytes([box[-1] ^ 1]))
    with pytest.raises(AuthenticationError):
        p.box_seal_open(public, private, box[:47])


def test_a_wiped_keypair_is_zeroed_and_refuses_to_be_used() -> None:
    pair = KeyPair.generate()
    seed = pair.seed
    assert "seed" not in repr(pair) and bytes(seed) != bytes(32)
    signature = pair.sign(b"m")
    crypto.verify(pair.public_key, b"m", signature)
    pair.wipe()
    assert seed == bytearray(32)
    with pytest.raises(KeysError):
        pair.sign(b"m")
    with pytest.raises(KeysError):
        _ = pair.x25519_private
