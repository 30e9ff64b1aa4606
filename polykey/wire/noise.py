"""The Noise Protocol Framework, revision 34, for the 25519/ChaChaPoly suites (sans-I/O).

Implements sections 5.1 (CipherState), 5.2 (SymmetricState) and 5.3 (HandshakeState)
of https://noiseprotocol.org/noise.html on its crypto functions in :mod:`polykey.crypto.noise_suite`
(X25519, ChaCha20-Poly1305, SHA-256/BLAKE2b and their HMACs). Patterns: ``XX`` (what
the transport uses, docs/spec/transport.md section 3), plus ``NN`` and ``IK`` so the
whole published cacophony vector file is exercised. No asyncio, no sockets, no clock:
the caller moves the bytes; randomness (the ephemeral key) is injectable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from polykey import crypto
from polykey.crypto import noise_suite
from polykey.errors import AuthenticationError, HandshakeError

DHLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
_MAX_NONCE = 2**64 - 1
_ZERO_KEY = b"\x00" * 32


@dataclass(frozen=True)
class HashSuite:
    """A Noise hash function: its name, output length and HMAC."""

    name: str
    hashlen: int
    hash: Callable[[bytes], bytes]
    hmac: Callable[[bytes, bytes], bytes]


SHA256 = HashSuite("SHA256", 32, noise_suite.sha256, noise_suite.hmac_sha256)
BLAKE2B = HashSuite("BLAKE2b", 64, noise_suite.blake2b, noise_suite.hmac_blake2b)
HASHES = {h.name: h for h in (SHA256, BLAKE2B)}

# pattern name -> (initiator pre-message tokens, responder pre-message tokens, message tokens)
PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    """A ChaCha20-Poly1305 key and a 64-bit message counter (Noise section 5.1)."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead: noise_suite.Cipher | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("Noise cipher key must be 32 bytes")
        self._aead = noise_suite.Cipher(key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def _next_nonce(self) -> bytes:
        if self.n >= _MAX_NONCE:
            raise HandshakeError("Noise nonce exhausted: the connection must be re-established")
        nonce = _nonce(self.n)
        self.n += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt, or raise :class:`AuthenticationError`; the counter advances only on success."""
        if self._aead is None:
            return bytes(ciphertext)
        if self.n >= _MAX_NONCE:
            raise HandshakeError("Noise nonce exhausted: the connection must be re-established")
        plaintext = self._aead.decrypt(_nonce(self.n), ciphertext, ad)
        self.n += 1
        return plaintext

    # The same two operations writing into a caller's buffer (no allocation, no copy), for
    # the transport's bulk path; ``out`` is exactly the size of the result. Keyed only.

    def encrypt_into_with_ad(self, ad: bytes, plaintext: bytes | memoryview, out: memoryview) -> None:
        assert self._aead is not None
        self._aead.encrypt_into(self._next_nonce(), plaintext, ad, out)

    def decrypt_into_with_ad(self, ad: bytes, ciphertext: bytes | memoryview, out: memoryview) -> None:
        """Like :meth:`decrypt_with_ad`; on failure ``out`` holds garbage the caller must drop."""
        assert self._aead is not None
        if self.n >= _MAX_NONCE:
            raise HandshakeError("Noise nonce exhausted: the connection must be re-established")
        self._aead.decrypt_into(_nonce(self.n), ciphertext, ad, out)
        self.n += 1


class SymmetricState:
    """The chaining key, the handshake hash and a CipherState (Noise section 5.2)."""

    def __init__(self, protocol_name: bytes, suite: HashSuite) -> None:
        self.suite = suite
        if len(protocol_name) <= suite.hashlen:
            self.h = protocol_name + b"\x00" * (suite.hashlen - len(protocol_name))
        else:
            self.h = suite.hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def _hkdf(self, ikm: bytes, outputs: int) -> list[bytes]:
        temp = self.suite.hmac(self.ck, ikm)
        out1 = self.suite.hmac(temp, b"\x01")
        out2 = self.suite.hmac(temp, out1 + b"\x02")
        if outputs == 2:
            return [out1, out2]
        return [out1, out2, self.suite.hmac(temp, out2 + b"\x03")]

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self._hkdf(ikm, 2)
        self.cipher.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self.suite.hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self._hkdf(b"", 2)
        return CipherState(k1[:32]), CipherState(k2[:32])


def _parse_name(protocol_name: str) -> tuple[str, HashSuite]:
    parts = protocol_name.split("_")
    if len(parts) != 5 or parts[0] != "Noise" or parts[2] != "25519" or parts[3] != "ChaChaPoly":
        raise ValueError(f"unsupported Noise protocol {protocol_name!r}")
    if parts[1] not in PATTERNS or parts[4] not in HASHES:
        raise ValueError(f"unsupported Noise protocol {protocol_name!r}")
    return parts[1], HASHES[parts[4]]


class HandshakeState:
    """One side of a Noise handshake (Noise section 5.3).

    ``write_message(payload)`` returns the next message to send; ``read_message(message)``
    returns the payload carried by a received message. After the last message,
    :attr:`complete` is true and :meth:`split` gives the ``(send, receive)`` CipherStates
    for this side. :attr:`h` is the running handshake hash (what a payload signature binds).
    Any failure raises :class:`HandshakeError` (malformed or out of turn) or
    :class:`AuthenticationError` (tampered); the state is then unusable.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        rs: bytes | None = None,
        e: bytes | None = None,
        rng: crypto.Rng = crypto.random_bytes,
    ) -> None:
        pattern, suite = _parse_name(protocol_name)
        pre_i, pre_r, self._messages = PATTERNS[pattern]
        self.initiator = initiator
        self._rng = rng
        self.symmetric = SymmetricState(protocol_name.encode("ascii"), suite)
        self.symmetric.mix_hash(prologue)
        self.s = s
        self.s_pub = noise_suite.public_key(s) if s is not None else None
        self.e = e
        self.e_pub = noise_suite.public_key(e) if e is not None else None
        self.rs = rs
        self.re: bytes | None = None
        self._index = 0
        self._failed = False
        #: The handshake hash just before the last payload was encrypted or decrypted:
        #: what an identity signature inside that payload binds (transport.md section 4).
        self.payload_h = b""
        for owner_is_initiator, tokens in ((True, pre_i), (False, pre_r)):
            for token in tokens:
                mine = owner_is_initiator == initiator
                key = self.s_pub if mine else self.rs
                if key is None:
                    raise ValueError("a pre-message static key is missing")
                self.symmetric.mix_hash(key)

    @property
    def h(self) -> bytes:
        return self.symmetric.h

    @property
    def complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def my_turn(self) -> bool:
        return not self.complete and (self._index % 2 == 0) == self.initiator

    def _dh(self, mine: str, theirs: str) -> None:
        priv = self.e if mine == "e" else self.s
        pub = self.re if theirs == "e" else self.rs
        if priv is None or pub is None:
            raise HandshakeError("Noise key missing for DH")
        self.symmetric.mix_key(noise_suite.dh(priv, pub))

    def _token_dh(self, token: str) -> None:
        # token "xy": x is the initiator's key, y the responder's.
        a, b = token[0], token[1]
        if self.initiator:
            self._dh(a, b)
        else:
            self._dh(b, a)

    def _check(self, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise HandshakeError("Noise handshake already failed")
        if self.complete:
            raise HandshakeError("Noise handshake already complete")
        if self.my_turn != writing:
            raise HandshakeError("Noise handshake message out of turn")
        return self._messages[self._index]

    def write_message(self, payload: bytes | Callable[[bytes], bytes] = b"") -> bytes:
        """The next message. ``payload`` may be a function of the handshake hash at the
        point where the payload is encrypted (to sign it)."""
        tokens = self._check(writing=True)
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    if self.e is None:
                        self.e = self._rng(DHLEN)
                        self.e_pub = noise_suite.public_key(self.e)
                    assert self.e_pub is not None
                    out += self.e_pub
                    self.symmetric.mix_hash(self.e_pub)
                elif token == "s":
                    if self.s_pub is None:
                        raise HandshakeError("Noise static key missing")
                    out += self.symmetric.encrypt_and_hash(self.s_pub)
                else:
                    self._token_dh(token)
            self.payload_h = self.h
            body = payload(self.h) if callable(payload) else payload
            out += self.symmetric.encrypt_and_hash(body)
        except BaseException:
            self._failed = True
            raise
        if len(out) > MAX_MESSAGE:
            self._failed = True
            raise HandshakeError("Noise handshake message too long")
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        tokens = self._check(writing=False)
        try:
            if len(message) > MAX_MESSAGE:
                raise HandshakeError("Noise handshake message too long")
            view = memoryview(message)
            for token in tokens:
                if token == "e":
                    if len(view) < DHLEN:
                        raise HandshakeError("truncated Noise handshake message")
                    self.re = bytes(view[:DHLEN])
                    view = view[DHLEN:]
                    self.symmetric.mix_hash(self.re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if self.symmetric.cipher.has_key() else 0)
                    if len(view) < size:
                        raise HandshakeError("truncated Noise handshake message")
                    self.rs = self.symmetric.decrypt_and_hash(bytes(view[:size]))
                    view = view[size:]
                else:
                    self._token_dh(token)
            if self.symmetric.cipher.has_key() and len(view) < TAGLEN:
                raise HandshakeError("truncated Noise handshake message")
            self.payload_h = self.h
            payload = self.symmetric.decrypt_and_hash(bytes(view))
        except (HandshakeError, AuthenticationError):
            self._failed = True
            raise
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` CipherStates for this side, once the handshake is complete."""
        if not self.complete or self._failed:
            raise HandshakeError("Noise handshake not complete")
        c1, c2 = self.symmetric.split()
        return (c1, c2) if self.initiator else (c2, c1)
