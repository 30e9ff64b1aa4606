"""Secret values: size checks and random passwords for ``generate`` (unbiased, injectable rng)."""

from __future__ import annotations

from polykey import crypto
from polykey.errors import InvalidInputError
from polykey.vaults.format import MAX_SECRET_BYTES

MAX_GENERATE_LENGTH = 4096

#: Characters ``generate`` draws from, by name; any other string is used as the literal set.
CHARSETS: dict[str, str] = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "alpha": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "digits": "0123456789",
    "hex": "0123456789abcdef",
    "symbols": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~",
}
DEFAULT_CHARSET = "alnum"
DEFAULT_LENGTH = 32


def generate_password(length: int, charset: str, rng: crypto.Rng) -> str:
    """``length`` characters drawn uniformly from ``charset`` (a CHARSETS name or literal characters)."""
    chars = CHARSETS.get(charset, charset)
    if not isinstance(chars, str) or len(set(chars)) < 2 or len(chars) > 1024:
        raise InvalidInputError("the charset must be a known name or at least 2 distinct characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in chars):
        raise InvalidInputError("the charset must not contain control characters")
    if not isinstance(length, int) or not 1 <= length <= MAX_GENERATE_LENGTH:
        raise InvalidInputError(f"the length must be 1 to {MAX_GENERATE_LENGTH}")
    alphabet = sorted(set(chars))
    return "".join(alphabet[_uniform(rng, len(alphabet))] for _ in range(length))


def check_value(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise InvalidInputError("a secret value must be bytes")
    if len(value) > MAX_SECRET_BYTES:
        raise InvalidInputError(f"secret values are limited to {MAX_SECRET_BYTES} bytes")


def _uniform(rng: crypto.Rng, n: int) -> int:
    """An unbiased index in ``range(n)`` (rejection sampling over 32-bit draws)."""
    limit = (1 << 32) - (1 << 32) % n
    while True:
        x = int.from_bytes(rng(4), "big")
        if x < limit:
            return x % n
