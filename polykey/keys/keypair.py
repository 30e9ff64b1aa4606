"""The node's root keypair (Ed25519) and what it can do."""

from __future__ import annotations

from dataclasses import dataclass, field

from polykey import crypto
from polykey.ids import NodeId


def ssh_public_key_blob(public_key: bytes) -> bytes:
    """The SSH wire encoding of an Ed25519 public key (RFC 8709)."""
    algo = b"ssh-ed25519"
    return (
        len(algo).to_bytes(4, "big") + algo + len(public_key).to_bytes(4, "big") + public_key
    )


def ssh_public_key_line(public_key: bytes, comment: str = "") -> str:
    """An ``ssh-ed25519 AAAA... comment`` line, usable in git's allowed-signers file."""
    import base64

    line = "ssh-ed25519 " + base64.b64encode(ssh_public_key_blob(public_key)).decode("ascii")
    return f"{line} {comment}" if comment else line


@dataclass(frozen=True)
class KeyPair:
    """An unlocked Ed25519 keypair. ``repr`` never shows the seed."""

    seed: bytes = field(repr=False)
    public_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        return cls(seed=seed, public_key=crypto.public_key_from_seed(seed))

    @classmethod
    def generate(cls, rng: crypto.Rng = crypto.random_bytes) -> KeyPair:
        return cls.from_seed(rng(crypto.SEED_BYTES))

    @property
    def node_id(self) -> NodeId:
        return NodeId(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return crypto.sign(self.seed, message)

    def unseal(self, ciphertext: bytes) -> bytes:
        return crypto.unseal(self.seed, ciphertext)

    @property
    def x25519_private(self) -> bytes:
        return crypto.ed25519_seed_to_x25519(self.seed)
