"""SSH signatures (SSHSIG, OpenSSH PROTOCOL.sshsig) over Ed25519, as git's ``gpg.format=ssh`` uses.

Pure byte formatting on top of :func:`polykey.crypto.sign` / :func:`polykey.crypto.verify`;
it imports no crypto library itself (docs/spec/vault-format.md section 6).

Signature blob (SSH wire types: ``string`` = uint32 length || bytes)::

    byte[6]  "SSHSIG"
    uint32   1                                  version
    string   publickey  (string "ssh-ed25519" || string key[32])
    string   namespace                          "git" for commits
    string   reserved                           empty
    string   hash_algorithm                     "sha512" (we sign with it; "sha256" is also verified)
    string   signature  (string "ssh-ed25519" || string sig[64])

The Ed25519 signature is over ``"SSHSIG" || string namespace || string reserved ||
string hash_algorithm || string H(message)``. The armored form is
``-----BEGIN SSH SIGNATURE-----``, base64 in lines of 70 characters, ``-----END SSH SIGNATURE-----``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from polykey import crypto
from polykey.errors import AuthenticationError, InvalidInputError

MAGIC = b"SSHSIG"
VERSION = 1
KEY_TYPE = b"ssh-ed25519"
HASH_SHA512 = b"sha512"
HASH_SHA256 = b"sha256"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
LINE = 70
MAX_ARMORED = 4096


def _string(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def _hash(algorithm: bytes, message: bytes) -> bytes:
    if algorithm == HASH_SHA512:
        return crypto.sha512(message)
    if algorithm == HASH_SHA256:
        return crypto.sha256(message)
    raise InvalidInputError("SSH signature: unsupported hash algorithm")


def public_key_blob(public_key: bytes) -> bytes:
    """The SSH wire encoding of an Ed25519 public key (RFC 8709): ``string "ssh-ed25519" || string key``."""
    return _string(KEY_TYPE) + _string(public_key)


def public_key_line(public_key: bytes, comment: str = "") -> str:
    """An ``ssh-ed25519 AAAA... comment`` line, usable in git's allowed-signers file."""
    line = KEY_TYPE.decode("ascii") + " " + base64.b64encode(public_key_blob(public_key)).decode("ascii")
    return f"{line} {comment}" if comment else line


def signed_data(namespace: bytes, hash_algorithm: bytes, message: bytes) -> bytes:
    """The bytes the Ed25519 key actually signs."""
    return MAGIC + _string(namespace) + _string(b"") + _string(hash_algorithm) + _string(
        _hash(hash_algorithm, message)
    )


@dataclass(frozen=True)
class SshSig:
    """A decoded SSHSIG blob (Ed25519 only)."""

    public_key: bytes
    namespace: bytes
    hash_algorithm: bytes
    signature: bytes

    def encode(self) -> bytes:
        return (
            MAGIC
            + VERSION.to_bytes(4, "big")
            + _string(public_key_blob(self.public_key))
            + _string(self.namespace)
            + _string(b"")
            + _string(self.hash_algorithm)
            + _string(_string(KEY_TYPE) + _string(self.signature))
        )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidInputError("SSH signature is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> bytes:
        return self.take(int.from_bytes(self.take(4), "big"))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise InvalidInputError("SSH signature has trailing bytes")


def decode(blob: bytes) -> SshSig:
    """Strictly parse an SSHSIG blob; InvalidInputError names what is malformed."""
    r = _Reader(blob)
    if r.take(6) != MAGIC:
        raise InvalidInputError("not an SSH signature")
    if int.from_bytes(r.take(4), "big") != VERSION:
        raise InvalidInputError("SSH signature: unsupported version")
    key = _Reader(r.string())
    if key.string() != KEY_TYPE:
        raise InvalidInputError("SSH signature: key is not ssh-ed25519")
    public_key = key.string()
    key.end()
    namespace = r.string()
    if r.string() != b"":
        raise InvalidInputError("SSH signature: reserved field is not empty")
    hash_algorithm = r.string()
    if hash_algorithm not in (HASH_SHA512, HASH_SHA256):
        raise InvalidInputError("SSH signature: unsupported hash algorithm")
    sig = _Reader(r.string())
    if sig.string() != KEY_TYPE:
        raise InvalidInputError("SSH signature: signature is not ssh-ed25519")
    signature = sig.string()
    sig.end()
    r.end()
    if len(public_key) != crypto.PUBLIC_KEY_BYTES or len(signature) != crypto.SIGNATURE_BYTES:
        raise InvalidInputError("SSH signature: wrong key or signature length")
    return SshSig(public_key, namespace, hash_algorithm, signature)


def armor(blob: bytes) -> str:
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + LINE] for i in range(0, len(text), LINE)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def dearmor(text: str) -> bytes:
    """Strictly parse the armored form (canonical line length, one trailing newline optional)."""
    if len(text) > MAX_ARMORED:
        raise InvalidInputError("SSH signature is too large")
    lines = text.rstrip("\n").split("\n")
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise InvalidInputError("not an armored SSH signature")
    body = "".join(lines[1:-1])
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("SSH signature: bad base64") from None
    if armor(blob).rstrip("\n") != text.rstrip("\n"):
        raise InvalidInputError("SSH signature: non-canonical armor")
    return blob


def sign(seed: crypto.Secret, message: bytes, namespace: bytes = b"git") -> str:
    """The armored SSHSIG of ``message`` by the Ed25519 key with ``seed``."""
    signature = crypto.sign(seed, signed_data(namespace, HASH_SHA512, message))
    sig = SshSig(crypto.public_key_from_seed(seed), namespace, HASH_SHA512, signature)
    return armor(sig.encode())


def verify(armored: str, message: bytes, namespace: bytes = b"git") -> bytes:
    """Check an armored SSHSIG over ``message``; returns the signer's Ed25519 public key.

    InvalidInputError if malformed, AuthenticationError if the signature or namespace is wrong.
    """
    sig = decode(dearmor(armored))
    if sig.namespace != namespace:
        raise AuthenticationError("SSH signature: wrong namespace")
    crypto.verify(sig.public_key, signed_data(sig.namespace, sig.hash_algorithm, message), sig.signature)
    return sig.public_key


__all__ = ["SshSig", "armor", "dearmor", "decode", "public_key_blob", "public_key_line", "sign", "verify"]
