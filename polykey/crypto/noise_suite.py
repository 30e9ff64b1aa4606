"""The crypto functions of the Noise suites the peer transport speaks (Noise revision 34 section 4).

``25519`` (X25519 DH), ``ChaChaPoly`` (ChaCha20-Poly1305 with Noise's 96-bit nonces) and the
``SHA256`` / ``BLAKE2b`` hashes with their HMACs: what :mod:`polykey.wire.noise` is built on, and
nothing else should be. A fixed, named suite rather than loose primitives (STYLE.md rule 1):
application code calls the recipes in :mod:`polykey.crypto`.
"""

from __future__ import annotations

from polykey.crypto import _primitives as _p

DHLEN = 32

#: The Noise cipher: a ChaCha20-Poly1305 key with encrypt/decrypt (and ``_into`` variants that
#: write into a caller's buffer), AuthenticationError on a bad tag.
Cipher = _p.ChaChaPoly


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (Noise ``GENERATE_KEYPAIR``'s public half)."""
    return _p.x25519_public(private)


def dh(private: bytes, public: bytes) -> bytes:
    """Noise ``DH``: X25519; AuthenticationError for a low-order public key (all-zero result)."""
    return _p.x25519(private, public)


def static_private_key(seed: bytes | bytearray) -> bytes:
    """A node's Noise static key: the X25519 private key of its Ed25519 ``seed`` (libsodium's
    ``crypto_sign_ed25519_sk_to_curve25519``), so the transport proves the node's own key. The
    caller wipes it when done (polykey.crypto.memory)."""
    return _p.ed25519_seed_to_x25519(seed)


def sha256(data: bytes) -> bytes:
    return _p.sha256(data)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _p.hmac_sha256(key, data)


def blake2b(data: bytes) -> bytes:
    """BLAKE2b-512 (Noise's ``BLAKE2b``, HASHLEN 64)."""
    return _p.blake2b(data)


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    return _p.hmac_blake2b(key, data)


__all__ = ["DHLEN", "Cipher", "blake2b", "dh", "hmac_blake2b", "hmac_sha256", "public_key", "sha256",
           "static_private_key"]
