"""The node's root keypair (Ed25519) and what it can do."""

from __future__ import annotations

from polykey import crypto
from polykey.crypto import memory, noise_suite
from polykey.errors import KeysError
from polykey.ids import NodeId


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

    @property
    def x25519_private(self) -> bytes:
        return noise_suite.static_private_key(self.seed)
