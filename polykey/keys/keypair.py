"""The node's root keypair (Ed25519) and what it can do."""

from __future__ import annotations

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import KeysError
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


class KeyPair:
    """An unlocked Ed25519 keypair. ``repr`` never shows the seed.

    The seed lives in one mutable, mlocked buffer (polykey.crypto.memory); :meth:`wipe` zeroes it
    (the agent does so on lock and stop), after which the keypair refuses to be used.
    """

    __slots__ = ("_seed", "public_key")

    def __init__(self, seed: crypto.Secret, public_key: bytes) -> None:
        self._seed = memory.secret_buffer(seed)
        self.public_key = public_key

    @classmethod
    def from_seed(cls, seed: crypto.Secret) -> KeyPair:
        """A keypair holding a copy of ``seed`` (the caller wipes its own copy)."""
        pair = cls(seed, b"")
        pair.public_key = crypto.public_key_from_seed(pair._seed)
        return pair

    @classmethod
    def generate(cls, rng: crypto.Rng = crypto.random_bytes) -> KeyPair:
        seed = rng(crypto.SEED_BYTES)
        try:
            return cls.from_seed(seed)
        finally:
            memory.wipe(seed)

    def __repr__(self) -> str:
        return f"KeyPair(node_id={self.node_id})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyPair):
            return NotImplemented
        return self.public_key == other.public_key and crypto.constant_time_eq(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self.public_key)

    @property
    def seed(self) -> bytearray:
        """The 32-byte seed buffer itself (not a copy): pass it on, never keep a ``bytes`` of it."""
        if not self._seed:
            raise KeysError("this keypair was wiped (the agent locked)")
        return self._seed

    def wipe(self) -> None:
        """Zero the seed in memory; the keypair cannot be used afterwards."""
        memory.wipe(self._seed)
        self._seed = bytearray()

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
