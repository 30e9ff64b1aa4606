from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey import crypto
from polykey.errors import AuthenticationError

from ..conftest import VECTORS

RFC8032 = json.loads((VECTORS / "ed25519_rfc8032.json").read_text())["vectors"]


@pytest.mark.parametrize("seed,public,message,signature", RFC8032)
def test_ed25519_rfc8032(seed: str, public: str, message: str, signature: str) -> None:
    s, p, m, sig = (bytes.fromhex(x) for x in (seed, public, message, signature))
    assert crypto.public_key_from_seed(s) == p
    assert crypto.sign(s, m) == sig
    crypto.verify(p, m, sig)
    with pytest.raises(AuthenticationError):
        crypto.verify(p, m + b"x", sig)
    with pytest.raises(AuthenticationError):
        crypto.verify(p, m, sig[:-1] + bytes([sig[-1] ^ 1]))


def test_verify_rejects_wrong_sizes() -> None:
    with pytest.raises(AuthenticationError):
        crypto.verify(b"\x00" * 31, b"", b"\x00" * 64)
    with pytest.raises(AuthenticationError):
        crypto.verify(b"\x00" * 32, b"", b"\x00" * 63)


@given(st.binary(max_size=256))
@settings(max_examples=30)
def test_seal_round_trip_and_only_for_recipient(plaintext: bytes) -> None:
    alice, bob = crypto.random_bytes(32), crypto.random_bytes(32)
    box = crypto.seal(crypto.public_key_from_seed(alice), plaintext)
    assert len(box) == len(plaintext) + crypto.SEAL_OVERHEAD
    assert crypto.unseal(alice, box) == plaintext
    with pytest.raises(AuthenticationError):
        crypto.unseal(bob, box)


@given(st.binary(max_size=512), st.binary(max_size=64))
@settings(max_examples=50)
def test_aead_round_trip_and_tamper(plaintext: bytes, ad: bytes) -> None:
    key = crypto.random_bytes(32)
    ct = crypto.aead_encrypt(key, plaintext, ad)
    assert crypto.aead_decrypt(key, ct, ad) == plaintext
    for i in (0, len(ct) // 2, len(ct) - 1):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            crypto.aead_decrypt(key, bytes(bad), ad)
    with pytest.raises(AuthenticationError):
        crypto.aead_decrypt(key, ct, ad + b"!")
    with pytest.raises(AuthenticationError):
        crypto.aead_decrypt(key, ct[: crypto.AEAD_OVERHEAD - 1], ad)


def test_aead_uses_injected_randomness() -> None:
    key = bytes(32)
    a = crypto.aead_encrypt(key, b"x", b"", rng=lambda n: b"\x07" * n)
    b = crypto.aead_encrypt(key, b"x", b"", rng=lambda n: b"\x07" * n)
    assert a == b and a[:24] == b"\x07" * 24


@given(st.binary(max_size=128), st.binary(max_size=32))
@settings(max_examples=50)
def test_siv_is_deterministic_and_authenticated(plaintext: bytes, ad: bytes) -> None:
    key = bytes(range(64))
    ct = crypto.siv_encrypt(key, plaintext, ad)
    assert ct == crypto.siv_encrypt(key, plaintext, ad)
    assert crypto.siv_decrypt(key, ct, ad) == plaintext
    with pytest.raises(AuthenticationError):
        crypto.siv_decrypt(key, ct, ad + b"x")


def test_password_wrap() -> None:
    limits = crypto.KDF_PROFILES["min"]
    salt, ct = crypto.password_wrap(b"pw", b"secret seed", b"ad", limits)
    assert crypto.password_unwrap(b"pw", salt, ct, b"ad", limits) == b"secret seed"
    with pytest.raises(AuthenticationError):
        crypto.password_unwrap(b"pW", salt, ct, b"ad", limits)


def test_derive_separates_purposes() -> None:
    s = bytes(32)
    assert crypto.derive(s, b"a") != crypto.derive(s, b"b")
    assert len(crypto.derive(s, b"a", 64)) == 64
