"""The private key file format, ``keys/node.key`` (docs/spec/keys.md section 2).

Sans-I/O: :func:`encode` and :func:`decode` turn bytes into bytes; the node store
does the file work. Layout (all integers big-endian), 138 bytes exactly::

    0   4  magic      b"PKKY"
    4   1  version    1
    5   1  kdf        1 = Argon2id v1.3 (libsodium crypto_pwhash)
    6   4  opslimit   u32
    10  8  memlimit   u64, bytes
    18  16 salt
    34  32 public key  Ed25519, in clear so `pk keys public` needs no password
    66  24 nonce       XChaCha20-Poly1305
    90  48 sealed seed AEAD(Argon2id(password, salt), seed, ad = bytes 0..66)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import AuthenticationError, KeyFileError, WrongPasswordError
from polykey.keys.keypair import KeyPair

MAGIC = b"PKKY"
VERSION = 1
KDF_ARGON2ID13 = 1
_HEADER = struct.Struct(">4sBBIQ16s32s")
HEADER_BYTES = _HEADER.size  # 66
SEALED_BYTES = crypto.AEAD_NONCE_BYTES + crypto.SEED_BYTES + crypto.AEAD_TAG_BYTES
FILE_BYTES = HEADER_BYTES + SEALED_BYTES  # 138
#: The Argon2id limits a key file may carry (docs/spec/keys.md section 2): libsodium's minimum up
#: to four times its SENSITIVE profile. Anything else is refused when the file is parsed, before
#: any KDF work: a file claiming 2^32-1 passes or 512 GiB must not hang or kill whoever reads it.
MIN_OPSLIMIT = crypto.KDF_PROFILES["min"].opslimit
MIN_MEMLIMIT = crypto.KDF_PROFILES["min"].memlimit
MAX_OPSLIMIT = 4 * crypto.SENSITIVE_KDF.opslimit  # 16 passes
MAX_MEMLIMIT = 4 * crypto.SENSITIVE_KDF.memlimit  # 4 GiB


def check_limits(limits: crypto.KdfLimits, name: str = "key file") -> crypto.KdfLimits:
    """``limits`` if a key file may carry them; else KeyFileError naming ``name`` and the range."""
    if not (MIN_OPSLIMIT <= limits.opslimit <= MAX_OPSLIMIT and MIN_MEMLIMIT <= limits.memlimit <= MAX_MEMLIMIT):
        raise KeyFileError(
            f"{name} has out-of-range KDF limits (opslimit {limits.opslimit}, memlimit {limits.memlimit} bytes;"
            f" allowed {MIN_OPSLIMIT}..{MAX_OPSLIMIT} and {MIN_MEMLIMIT} bytes..{MAX_MEMLIMIT >> 30} GiB)"
        )
    return limits


@dataclass(frozen=True)
class KeyFile:
    """A decoded key file: what can be read without the password."""

    limits: crypto.KdfLimits
    salt: bytes
    public_key: bytes
    header: bytes
    sealed: bytes

    def unlock(self, password: crypto.Secret) -> KeyPair:
        """The keypair, or WrongPasswordError (the file is then left as it is)."""
        try:
            seed = crypto.password_unwrap(password, self.salt, self.sealed, self.header, self.limits)
        except AuthenticationError:
            raise WrongPasswordError() from None
        try:
            pair = KeyPair.from_seed(seed)
        finally:
            memory.wipe(seed)  # the keypair holds its own (mlocked) copy
        if not crypto.constant_time_eq(pair.public_key, self.public_key):
            pair.wipe()
            raise KeyFileError("key file is corrupt: public key does not match the private key")
        return pair


def encode(
    pair: KeyPair,
    password: crypto.Secret,
    limits: crypto.KdfLimits,
    *,
    rng: crypto.Rng = crypto.random_bytes,
) -> bytes:
    check_limits(limits, "a new key file")
    salt = rng(crypto.PASSWORD_SALT_BYTES)
    header = _HEADER.pack(
        MAGIC, VERSION, KDF_ARGON2ID13, limits.opslimit, limits.memlimit, salt, pair.public_key
    )
    _, sealed = crypto.password_wrap(password, pair.seed, header, limits, salt=salt, rng=rng)
    out = header + sealed
    assert len(out) == FILE_BYTES
    return out


def decode(data: bytes, name: str = "key file") -> KeyFile:
    """Strictly parse a key file; KeyFileError naming ``name`` for any defect."""
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise KeyFileError(f"{name} is truncated or not a Polykey key file")
    magic, version, kdf, opslimit, memlimit, salt, public_key = _HEADER.unpack_from(data)
    if version != VERSION:
        raise KeyFileError(f"{name} has unsupported version {version}")
    if kdf != KDF_ARGON2ID13:
        raise KeyFileError(f"{name} uses an unknown KDF ({kdf})")
    if len(data) != FILE_BYTES:
        raise KeyFileError(f"{name} is truncated or has trailing bytes")
    return KeyFile(
        limits=check_limits(crypto.KdfLimits(opslimit, memlimit), name),
        salt=salt,
        public_key=public_key,
        header=data[:HEADER_BYTES],
        sealed=data[HEADER_BYTES:],
    )
