from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import RecoveryCodeError
from polykey.keys import recovery
from polykey.keys.keypair import KeyPair

from ..conftest import VECTORS

BIP39 = json.loads((VECTORS / "bip39_trezor.json").read_text())


@pytest.mark.parametrize("entropy,mnemonic,seed", BIP39["english"])
def test_bip39_reference_vectors(entropy: str, mnemonic: str, seed: str) -> None:
    words = recovery.entropy_to_words(bytes.fromhex(entropy))
    assert " ".join(words) == mnemonic
    n = len(words)
    assert recovery.words_to_entropy(mnemonic.split(), word_count=n) == bytes.fromhex(entropy)
    assert recovery.words_to_seed(mnemonic.split(), BIP39["passphrase"]).hex() == seed


def test_wordlist_is_the_bip39_english_list() -> None:
    words = recovery.wordlist()
    assert len(words) == 2048 and words[0] == "abandon" and words[-1] == "zoo"
    assert list(words) == sorted(words)


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_round_trip_24_words(entropy: bytes) -> None:
    words = recovery.entropy_to_words(entropy)
    assert len(words) == 24
    assert recovery.words_to_entropy(words) == entropy
    assert recovery.parse_code("  " + "  ".join(w.upper() for w in words) + "\n") == words


def test_same_words_same_node_id() -> None:
    words = recovery.new_code()
    a = KeyPair.from_seed(recovery.code_to_ed25519_seed(words))
    b = KeyPair.from_seed(recovery.code_to_ed25519_seed(list(words)))
    assert a.node_id == b.node_id
    # The Ed25519 seed is the first half of the (passphrase-less) BIP39 seed.
    assert recovery.code_to_ed25519_seed(words) == recovery.words_to_seed(words)[:32]


def test_rejects_bad_checksum() -> None:
    words = recovery.entropy_to_words(bytes(32))  # abandon x23 + art
    words[-1] = "abandon"
    with pytest.raises(RecoveryCodeError, match="checksum"):
        recovery.words_to_entropy(words)


@pytest.mark.parametrize("count", [0, 12, 23, 25])
def test_rejects_wrong_word_count(count: int) -> None:
    with pytest.raises(RecoveryCodeError, match="expected 24 words"):
        recovery.parse_code(" ".join(["abandon"] * count))


def test_rejects_unknown_word_and_oversize() -> None:
    words = recovery.new_code()
    words[3] = "polykey"
    with pytest.raises(RecoveryCodeError, match="word 4"):
        recovery.parse_code(" ".join(words))
    with pytest.raises(RecoveryCodeError, match="too long"):
        recovery.parse_code("a" * 5000)
