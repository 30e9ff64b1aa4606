"""Crypto recipes: the small set of high-level functions application code calls.

Only :mod:`polykey.crypto._primitives` touches ``cryptography``/``nacl``. The
recipes here take explicit randomness where a known-answer test needs it
(STYLE.md rule 10): every ``rng`` parameter defaults to :func:`os.urandom`.

Recipes
- Signing: :func:`sign`, :func:`verify` (Ed25519, RFC 8032).
- Sealing to a keypair: :func:`seal`, :func:`unseal` (libsodium sealed box to the
  X25519 key derived from an Ed25519 key).
- AEAD with associated data: :func:`aead_encrypt`, :func:`aead_decrypt`
  (XChaCha20-Poly1305, random 192-bit nonce prepended).
- Deterministic encryption: :func:`siv_encrypt`, :func:`siv_decrypt` (AES-256-SIV).
- Password wrapping: :func:`password_wrap`, :func:`password_unwrap`
  (Argon2id + XChaCha20-Poly1305).
- Key derivation: :func:`derive` (HKDF-SHA256); :func:`bip39_seed` for recovery codes.
- Hashing: :func:`sha256`, :func:`sha512`, :func:`blake2b`.

The Noise handshake's fixed suite (X25519, ChaChaPoly, SHA256/BLAKE2b HMACs) is
:mod:`polykey.crypto.noise_suite`, for :mod:`polykey.wire.noise` alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from polykey.crypto import _primitives as _p
from polykey.crypto.memory import borrowed, wipe
from polykey.errors import AuthenticationError, CryptoError, InvalidInputError

Rng = Callable[[int], bytes]
#: Key material: a bytearray that is wiped when done (polykey.crypto.memory), or bytes.
Secret = bytes | bytearray

AEAD_NONCE_BYTES = _p.XCHACHA_NONCE_BYTES
AEAD_TAG_BYTES = _p.AEAD_TAG_BYTES
AEAD_OVERHEAD = AEAD_NONCE_BYTES + AEAD_TAG_BYTES
SEAL_OVERHEAD = 48  # ephemeral X25519 public key (32) + Poly1305 tag (16)
SIGNATURE_BYTES = _p.ED25519_SIGNATURE_BYTES
PUBLIC_KEY_BYTES = _p.ED25519_PUBLIC_BYTES
SEED_BYTES = _p.ED25519_SEED_BYTES


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# -- signing -------------------------------------------------------------------


def public_key_from_seed(seed: Secret) -> bytes:
    """The Ed25519 public key for a 32-byte seed."""
    return _p.ed25519_public_from_seed(seed)


def sign(seed: Secret, message: bytes) -> bytes:
    """An Ed25519 signature (64 bytes) of ``message``."""
    return _p.ed25519_sign(seed, message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`AuthenticationError` unless ``signature`` is valid."""
    _p.ed25519_verify(public_key, message, signature)


# -- sealing to a keypair --------------------------------------------------------


def seal(recipient_public_key: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of the Ed25519 key can open it."""
    return _p.box_seal(_p.ed25519_public_to_x25519(recipient_public_key), plaintext)


def unseal(seed: Secret, ciphertext: bytes) -> bytes:
    """Open a :func:`seal` box with our Ed25519 seed; AuthenticationError if not ours or tampered."""
    x_priv = _p.ed25519_seed_to_x25519(seed)
    try:
        x_pub = _p.ed25519_public_to_x25519(_p.ed25519_public_from_seed(seed))
        return _p.box_seal_open(x_pub, x_priv, ciphertext)
    finally:
        wipe(x_priv)


# -- AEAD ----------------------------------------------------------------------


def aead_encrypt(key: bytes, plaintext: Secret, ad: bytes, *, rng: Rng = random_bytes) -> bytes:
    """``nonce(24) || XChaCha20-Poly1305(key, plaintext, ad)``."""
    if len(key) != _p.XCHACHA_KEY_BYTES:
        raise CryptoError("AEAD key must be 32 bytes")
    nonce = rng(AEAD_NONCE_BYTES)
    with borrowed(plaintext) as clear:
        return nonce + _p.xchacha_encrypt(key, nonce, clear, ad)


def aead_decrypt(key: bytes, data: bytes, ad: bytes) -> bytes:
    """Reverse :func:`aead_encrypt`; AuthenticationError on any tampering or wrong key."""
    if len(key) != _p.XCHACHA_KEY_BYTES:
        raise CryptoError("AEAD key must be 32 bytes")
    if len(data) < AEAD_OVERHEAD:
        raise AuthenticationError()
    return _p.xchacha_decrypt(key, data[:AEAD_NONCE_BYTES], data[AEAD_NONCE_BYTES:], ad)


# -- deterministic encryption -----------------------------------------------------

SIV_KEY_BYTES = 64
SIV_OVERHEAD = 16


def siv_encrypt(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-SIV: the same (key, plaintext, ad) always gives the same ciphertext."""
    if len(key) != SIV_KEY_BYTES:
        raise CryptoError("SIV key must be 64 bytes")
    return _p.siv_encrypt(key, plaintext, [ad])


def siv_decrypt(key: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(key) != SIV_KEY_BYTES:
        raise CryptoError("SIV key must be 64 bytes")
    if len(ciphertext) < SIV_OVERHEAD:
        raise AuthenticationError()
    return _p.siv_decrypt(key, ciphertext, [ad])


# -- key derivation -------------------------------------------------------------


def derive(secret: Secret, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """HKDF-SHA256(secret, salt, info) -> ``length`` bytes. ``info`` names the purpose."""
    return _p.hkdf_sha256(secret, salt=salt, info=info, length=length)


def constant_time_eq(a: Secret, b: Secret) -> bool:
    return _p.constant_time_eq(a, b)


def bip39_seed(mnemonic: bytes, salt: bytes) -> bytes:
    """The 64-byte BIP39 seed: PBKDF2-HMAC-SHA512(mnemonic, salt, 2048 iterations)."""
    return _p.pbkdf2_sha512(mnemonic, salt, 2048, 64)


# -- hashing -------------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return _p.sha256(data)


def sha512(data: bytes) -> bytes:
    return _p.sha512(data)


def blake2b(data: bytes, digest_size: int = 64) -> bytes:
    """BLAKE2b with a ``digest_size``-byte output (1 to 64)."""
    return _p.blake2b(data, digest_size)


# -- password wrapping -----------------------------------------------------------


@dataclass(frozen=True)
class KdfLimits:
    """Argon2id cost: ``opslimit`` passes over ``memlimit`` bytes."""

    opslimit: int
    memlimit: int

    def check(self) -> None:
        if not (_p.ARGON2ID_OPSLIMIT_MIN <= self.opslimit <= _p.ARGON2ID_OPSLIMIT_MAX):
            raise InvalidInputError("Argon2id opslimit out of range")
        if not (_p.ARGON2ID_MEMLIMIT_MIN <= self.memlimit <= min(_p.ARGON2ID_MEMLIMIT_MAX, 1 << 40)):
            raise InvalidInputError("Argon2id memlimit out of range")


#: Named cost profiles. ``moderate`` is the default for keys at rest (libsodium's
#: MODERATE: 3 passes, 256 MiB). ``min`` exists for tests only.
KDF_PROFILES: dict[str, KdfLimits] = {
    "moderate": KdfLimits(_p.ARGON2ID_OPSLIMIT_MODERATE, _p.ARGON2ID_MEMLIMIT_MODERATE),
    "interactive": KdfLimits(_p.ARGON2ID_OPSLIMIT_INTERACTIVE, _p.ARGON2ID_MEMLIMIT_INTERACTIVE),
    "min": KdfLimits(_p.ARGON2ID_OPSLIMIT_MIN, _p.ARGON2ID_MEMLIMIT_MIN),
}
DEFAULT_KDF_PROFILE = "moderate"
#: libsodium's SENSITIVE profile (4 passes, 1 GiB): key files may carry up to a few times it.
SENSITIVE_KDF = KdfLimits(_p.ARGON2ID_OPSLIMIT_SENSITIVE, _p.ARGON2ID_MEMLIMIT_SENSITIVE)
PASSWORD_SALT_BYTES = _p.ARGON2ID_SALT_BYTES


def password_key(password: Secret, salt: bytes, limits: KdfLimits) -> bytes:
    """The 32-byte key Argon2id derives from ``password`` (the caller wipes it when done)."""
    limits.check()
    if len(salt) != PASSWORD_SALT_BYTES:
        raise CryptoError("Argon2id salt must be 16 bytes")
    try:
        with borrowed(password) as clear:
            return _p.argon2id(clear, salt, limits.opslimit, limits.memlimit, 32)
    except MemoryError:
        raise CryptoError(f"not enough memory for Argon2id with a {limits.memlimit >> 20} MiB memory limit") from None


def password_wrap(
    password: Secret,
    plaintext: Secret,
    ad: bytes,
    limits: KdfLimits,
    *,
    salt: bytes | None = None,
    rng: Rng = random_bytes,
) -> tuple[bytes, bytes]:
    """Encrypt under a password. Returns ``(salt, nonce || ciphertext)``."""
    salt = salt if salt is not None else rng(PASSWORD_SALT_BYTES)
    key = password_key(password, salt, limits)
    try:
        return salt, aead_encrypt(key, plaintext, ad, rng=rng)
    finally:
        wipe(key)


def password_unwrap(password: Secret, salt: bytes, data: bytes, ad: bytes, limits: KdfLimits) -> bytes:
    """Reverse :func:`password_wrap`; AuthenticationError for a wrong password or tampering. The
    result is a new ``bytes`` object the caller may :func:`~polykey.crypto.memory.wipe`."""
    key = password_key(password, salt, limits)
    try:
        return aead_decrypt(key, data, ad)
    finally:
        wipe(key)

