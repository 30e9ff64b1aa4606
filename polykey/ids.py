"""Identifier types and their text encoding (docs/spec/keys.md section 3).

A :class:`NodeId` is the node's 32-byte Ed25519 public key. Its text form is
multibase base32hex: ``v`` followed by lowercase RFC 4648 base32hex with no
padding, as the original Polykey shows it. The decoder is strict: it rejects a
wrong prefix, any character outside the alphabet (upper case included), a wrong
length, and non-zero padding bits, so every accepted string round-trips byte for
byte.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import ClassVar, Self

from polykey.errors import InvalidInputError

MULTIBASE_BASE32HEX = "v"
_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuv")


def _encoded_length(nbytes: int) -> int:
    return (nbytes * 8 + 4) // 5


def encode_base32hex(raw: bytes) -> str:
    """Multibase base32hex text (``v`` prefix, lowercase, unpadded) of ``raw``."""
    return MULTIBASE_BASE32HEX + base64.b32hexencode(raw).decode("ascii").rstrip("=").lower()


def decode_base32hex(text: str, nbytes: int, what: str) -> bytes:
    """Strictly decode multibase base32hex text of exactly ``nbytes`` bytes."""
    if not isinstance(text, str) or not text.startswith(MULTIBASE_BASE32HEX):
        raise InvalidInputError(f"invalid {what}: must start with '{MULTIBASE_BASE32HEX}'")
    body = text[1:]
    if len(body) != _encoded_length(nbytes):
        raise InvalidInputError(f"invalid {what}: wrong length")
    if not set(body) <= _ALPHABET:
        raise InvalidInputError(f"invalid {what}: bad character")
    padded = body.upper() + "=" * (-len(body) % 8)
    raw = base64.b32hexdecode(padded)
    if len(raw) != nbytes or encode_base32hex(raw) != text:
        raise InvalidInputError(f"invalid {what}: non-canonical encoding")
    return raw


@dataclass(frozen=True, order=True, repr=False)
class _RawId:
    """A fixed-size binary identifier shown as multibase base32hex (the base of the id types)."""

    raw: bytes

    SIZE: ClassVar[int]
    WHAT: ClassVar[str]

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != self.SIZE:
            raise InvalidInputError(f"invalid {self.WHAT}: must be {self.SIZE} bytes")

    @classmethod
    def from_text(cls, text: str) -> Self:
        return cls(decode_base32hex(text, cls.SIZE, cls.WHAT))

    def __str__(self) -> str:
        return encode_base32hex(self.raw)

    def __repr__(self) -> str:
        return f"{self.WHAT}({self})"


@dataclass(frozen=True, order=True, repr=False)
class NodeId(_RawId):
    """A node's identity: its 32-byte Ed25519 public key."""

    SIZE = 32
    WHAT = "NodeId"

    @property
    def public_key(self) -> bytes:
        return self.raw


@dataclass(frozen=True, order=True, repr=False)
class VaultId(_RawId):
    """A vault's permanent identity: 16 random bytes, stable across renames and replicas."""

    SIZE = 16
    WHAT = "VaultId"
