"""BIP39 recovery codes (docs/spec/keys.md section 4).

A recovery code is 24 English BIP39 words encoding 256 bits of entropy plus an
8-bit SHA-256 checksum. The BIP39 seed is ``PBKDF2-HMAC-SHA512(words,
"mnemonic" + passphrase, 2048)``; its first 32 bytes are the Ed25519 seed, so
the same words always give the same NodeId. Pure functions: no I/O beyond
reading the packaged word list once.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import cache
from importlib import resources

from polykey import crypto
from polykey.errors import RecoveryCodeError

WORD_COUNT = 24
ENTROPY_BYTES = 32
_MAX_CODE_CHARS = 1024


@cache
def wordlist() -> tuple[str, ...]:
    """The 2048-word English BIP39 list (sha256 2f5eed53...24dbda)."""
    text = resources.files("polykey.keys").joinpath("bip39_english.txt").read_text("utf-8")
    words = tuple(text.split())
    if len(words) != 2048:
        raise RuntimeError("corrupt BIP39 word list")
    return words


@cache
def _index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wordlist())}


def entropy_to_words(entropy: bytes) -> list[str]:
    """Encode 16..32 bytes of entropy (multiple of 4) as BIP39 words."""
    if len(entropy) not in (16, 20, 24, 28, 32):
        raise RecoveryCodeError("entropy must be 16, 20, 24, 28 or 32 bytes")
    checksum_bits = len(entropy) * 8 // 32
    bits = int.from_bytes(entropy, "big") << checksum_bits
    bits |= hashlib.sha256(entropy).digest()[0] >> (8 - checksum_bits)
    n = (len(entropy) * 8 + checksum_bits) // 11
    words = wordlist()
    return [words[(bits >> (11 * (n - 1 - i))) & 0x7FF] for i in range(n)]


def words_to_entropy(words: list[str], *, word_count: int = WORD_COUNT) -> bytes:
    """Decode and checksum-verify BIP39 words; raises RecoveryCodeError."""
    if len(words) != word_count:
        raise RecoveryCodeError(f"invalid recovery code: expected {word_count} words, got {len(words)}")
    index = _index()
    bits = 0
    for position, word in enumerate(words, 1):
        if word not in index:
            raise RecoveryCodeError(f"invalid recovery code: word {position} is not a BIP39 word")
        bits = (bits << 11) | index[word]
    checksum_bits = word_count * 11 // 33
    entropy_bits = word_count * 11 - checksum_bits
    entropy = (bits >> checksum_bits).to_bytes(entropy_bits // 8, "big")
    expected = hashlib.sha256(entropy).digest()[0] >> (8 - checksum_bits)
    if expected != bits & ((1 << checksum_bits) - 1):
        raise RecoveryCodeError("invalid recovery code: checksum mismatch (a word is wrong or out of order)")
    return entropy


def parse_code(text: str, *, word_count: int = WORD_COUNT) -> list[str]:
    """Split user text into normalised words and validate them."""
    if len(text) > _MAX_CODE_CHARS:
        raise RecoveryCodeError("invalid recovery code: too long")
    words = unicodedata.normalize("NFKD", text).lower().split()
    words_to_entropy(words, word_count=word_count)
    return words


def words_to_seed(words: list[str], passphrase: str = "") -> bytes:
    """The 64-byte BIP39 seed."""
    mnemonic = unicodedata.normalize("NFKD", " ".join(words)).encode("utf-8")
    salt = unicodedata.normalize("NFKD", "mnemonic" + passphrase).encode("utf-8")
    return crypto.bip39_seed(mnemonic, salt)


def new_code(rng: crypto.Rng = crypto.random_bytes) -> list[str]:
    """A fresh 24-word recovery code."""
    return entropy_to_words(rng(ENTROPY_BYTES))


def code_to_ed25519_seed(words: list[str]) -> bytes:
    """The Ed25519 seed a (validated) recovery code gives: the BIP39 seed's first 32 bytes."""
    words_to_entropy(words)
    return words_to_seed(words)[:32]
