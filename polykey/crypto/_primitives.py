"""The only module that touches ``cryptography`` and ``nacl`` primitives.

Everything else calls the recipes in :mod:`polykey.crypto`. Functions here are
thin, typed wrappers that translate library exceptions into ours.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from collections.abc import Callable
from typing import Any

import nacl.bindings as _sodium
import nacl.exceptions as _nacl_exc
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from cryptography.exceptions import InvalidSignature as _InvalidSignature
from cryptography.exceptions import InvalidTag as _InvalidTag
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed25519
from cryptography.hazmat.primitives.asymmetric import x25519 as _x25519
from cryptography.hazmat.primitives.ciphers.aead import AESSIV as _AESSIV
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF as _HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC as _PBKDF2HMAC

from polykey.crypto.memory import wipe
from polykey.errors import AuthenticationError, CryptoError

# -- Ed25519 -------------------------------------------------------------------

ED25519_SEED_BYTES = 32
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


def ed25519_public_from_seed(seed: bytes | bytearray) -> bytes:
    if len(seed) != ED25519_SEED_BYTES:
        raise CryptoError("Ed25519 seed must be 32 bytes")
    key = _ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes_raw()


def ed25519_sign(seed: bytes | bytearray, message: bytes) -> bytes:
    if len(seed) != ED25519_SEED_BYTES:
        raise CryptoError("Ed25519 seed must be 32 bytes")
    return _ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> None:
    if len(public) != ED25519_PUBLIC_BYTES or len(signature) != ED25519_SIGNATURE_BYTES:
        raise AuthenticationError()
    try:
        _ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (_InvalidSignature, ValueError):
        raise AuthenticationError() from None


def ed25519_public_to_x25519(public: bytes) -> bytes:
    try:
        return bytes(_sodium.crypto_sign_ed25519_pk_to_curve25519(public))
    except (_nacl_exc.CryptoError, _nacl_exc.RuntimeError, ValueError, TypeError):
        raise CryptoError("not a valid Ed25519 public key") from None


def ed25519_seed_to_x25519(seed: bytes | bytearray) -> bytes:
    """libsodium's ``crypto_sign_ed25519_sk_to_curve25519``: the clamped first half of
    SHA-512(seed). Computed here so the seed is never copied into a ``bytes`` object (libsodium's
    binding takes nothing else); the caller wipes the result (polykey.crypto.memory)."""
    if len(seed) != ED25519_SEED_BYTES:
        raise CryptoError("Ed25519 seed must be 32 bytes")
    digest = hashlib.sha512(seed).digest()
    scalar = bytearray(memoryview(digest)[:32])
    try:
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        return bytes(scalar)
    finally:
        wipe(digest)
        wipe(scalar)


# -- X25519 --------------------------------------------------------------------


def x25519_public(private: bytes) -> bytes:
    return _x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def x25519(private: bytes, public: bytes) -> bytes:
    try:
        return _x25519.X25519PrivateKey.from_private_bytes(private).exchange(
            _x25519.X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:
        # cryptography rejects the all-zero shared secret (low-order points).
        raise AuthenticationError() from None


# -- sealed boxes (X25519 + XSalsa20-Poly1305, libsodium crypto_box_seal) --------


def box_seal(recipient_x25519_public: bytes, plaintext: bytes) -> bytes:
    return bytes(_sodium.crypto_box_seal(plaintext, recipient_x25519_public))


def _decrypt_into_wiped(size: int, decrypt: Callable[[Any], int]) -> bytes:
    """Run libsodium's ``decrypt(out)`` into a buffer of ours, so the only plaintext left is the
    ``bytes`` returned (PyNaCl's own bindings leave a copy in a freed buffer nobody can wipe).
    AuthenticationError if it fails."""
    buf = bytearray(max(1, size))
    try:
        if decrypt(_ffi.from_buffer(buf, require_writable=True)) != 0:
            raise AuthenticationError()
        with memoryview(buf) as view:
            return bytes(view[:size])
    finally:
        wipe(buf)


def box_seal_open(x25519_public: bytes, x25519_private: bytes, ciphertext: bytes) -> bytes:
    if (len(x25519_public) != _sodium.crypto_box_PUBLICKEYBYTES or len(x25519_private) != _sodium.crypto_box_SECRETKEYBYTES
            or len(ciphertext) < _sodium.crypto_box_SEALBYTES):
        raise AuthenticationError()
    return _decrypt_into_wiped(
        len(ciphertext) - _sodium.crypto_box_SEALBYTES,
        lambda out: int(_lib.crypto_box_seal_open(out, ciphertext, len(ciphertext), x25519_public, x25519_private)),
    )


# -- AEADs ---------------------------------------------------------------------

XCHACHA_KEY_BYTES = 32
XCHACHA_NONCE_BYTES = 24
AEAD_TAG_BYTES = 16


def xchacha_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key))


def xchacha_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(key) != XCHACHA_KEY_BYTES or len(nonce) != XCHACHA_NONCE_BYTES or len(ciphertext) < AEAD_TAG_BYTES:
        raise AuthenticationError()
    return _decrypt_into_wiped(
        len(ciphertext) - AEAD_TAG_BYTES,
        lambda out: int(_lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            out, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), ad, len(ad), nonce, key)),
    )


class ChaChaPoly:
    """ChaCha20-Poly1305 (IETF, 96-bit nonce) with a reusable key schedule, for Noise."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = _ChaCha20Poly1305(key)

    def encrypt(self, nonce12: bytes, plaintext: bytes | memoryview, ad: bytes) -> bytes:
        return self._aead.encrypt(nonce12, plaintext, ad)

    def decrypt(self, nonce12: bytes, ciphertext: bytes | memoryview, ad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce12, ciphertext, ad)
        except _InvalidTag:
            raise AuthenticationError() from None

    def encrypt_into(self, nonce12: bytes, plaintext: bytes | memoryview, ad: bytes, out: memoryview) -> None:
        """Write ``ciphertext || tag`` into ``out`` (exactly ``len(plaintext) + 16`` bytes),
        without allocating: the transport's send path (docs/spec/transport.md section 5)."""
        if _HAS_INTO:
            self._aead.encrypt_into(nonce12, plaintext, ad, out)
        else:  # an older cryptography: one more copy
            out[:] = self._aead.encrypt(nonce12, plaintext, ad)

    def decrypt_into(self, nonce12: bytes, ciphertext: bytes | memoryview, ad: bytes, out: memoryview) -> None:
        """Authenticate and decrypt into ``out`` (exactly ``len(ciphertext) - 16`` bytes). On
        :class:`AuthenticationError`, ``out`` may hold garbage: the caller discards it."""
        try:
            if _HAS_INTO:
                self._aead.decrypt_into(nonce12, ciphertext, ad, out)
            else:  # an older cryptography: one more copy
                out[:] = self._aead.decrypt(nonce12, ciphertext, ad)
        except _InvalidTag:
            raise AuthenticationError() from None


#: whether this cryptography has the AEAD ``encrypt_into``/``decrypt_into`` (recent ones do)
_HAS_INTO = hasattr(_ChaCha20Poly1305, "encrypt_into")


def siv_encrypt(key: bytes, plaintext: bytes, ad: list[bytes]) -> bytes:
    """AES-SIV (RFC 5297), deterministic; ``key`` is 64 bytes (AES-256-SIV)."""
    return _AESSIV(key).encrypt(plaintext, ad)


def siv_decrypt(key: bytes, ciphertext: bytes, ad: list[bytes]) -> bytes:
    try:
        return _AESSIV(key).decrypt(ciphertext, ad)
    except (_InvalidTag, ValueError):
        raise AuthenticationError() from None


# -- KDFs and hashes -----------------------------------------------------------


def hkdf_sha256(ikm: bytes | bytearray, *, salt: bytes, info: bytes, length: int) -> bytes:
    return _HKDF(algorithm=_hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def pbkdf2_sha512(password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return _PBKDF2HMAC(
        algorithm=_hashes.SHA512(), length=length, salt=salt, iterations=iterations
    ).derive(password)


ARGON2ID_SALT_BYTES = 16
ARGON2ID_OPSLIMIT_MIN = int(_sodium.crypto_pwhash_argon2id_OPSLIMIT_MIN)
ARGON2ID_MEMLIMIT_MIN = int(_sodium.crypto_pwhash_argon2id_MEMLIMIT_MIN)
ARGON2ID_OPSLIMIT_MAX = int(_sodium.crypto_pwhash_argon2id_OPSLIMIT_MAX)
ARGON2ID_MEMLIMIT_MAX = int(_sodium.crypto_pwhash_argon2id_MEMLIMIT_MAX)
ARGON2ID_OPSLIMIT_INTERACTIVE = int(_sodium.crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE)
ARGON2ID_MEMLIMIT_INTERACTIVE = int(_sodium.crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE)
ARGON2ID_OPSLIMIT_MODERATE = int(_sodium.crypto_pwhash_argon2id_OPSLIMIT_MODERATE)
ARGON2ID_MEMLIMIT_MODERATE = int(_sodium.crypto_pwhash_argon2id_MEMLIMIT_MODERATE)
ARGON2ID_OPSLIMIT_SENSITIVE = int(_sodium.crypto_pwhash_argon2id_OPSLIMIT_SENSITIVE)
ARGON2ID_MEMLIMIT_SENSITIVE = int(_sodium.crypto_pwhash_argon2id_MEMLIMIT_SENSITIVE)


def argon2id(password: bytes, salt: bytes, opslimit: int, memlimit: int, length: int) -> bytes:
    """Argon2id; MemoryError when the ``memlimit`` bytes it needs cannot be had."""
    try:
        return bytes(
            _sodium.crypto_pwhash_alg(
                length, password, salt, opslimit, memlimit, _sodium.crypto_pwhash_ALG_ARGON2ID13
            )
        )
    except RuntimeError:  # libsodium's only failure with valid limits: its allocation failed
        raise MemoryError from None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def blake2b(data: bytes, digest_size: int = 64) -> bytes:
    return hashlib.blake2b(data, digest_size=digest_size).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hashlib.sha256).digest()


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hashlib.blake2b).digest()


def constant_time_eq(a: bytes | bytearray, b: bytes | bytearray) -> bool:
    return _hmac.compare_digest(a, b)
