"""The node's key as the vault code uses it (docs/spec/vault-format.md sections 4.3, 5, 7).

A vault never sees the node's raw seed: it is handed a :class:`NodeKey`, which signs commits
(a :class:`Signer`), opens the epoch secrets sealed to the node (a
:class:`polykey.vaults.format.Identity`) and derives the node's local keys. This module is the one
place in ``polykey.vaults`` that touches the seed.
"""

from __future__ import annotations

from typing import Protocol

from polykey import crypto
from polykey.crypto import sshsig
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair


def author_email(node: NodeId) -> str:
    """The author and committer email of a commit signed by ``node`` (spec section 5)."""
    return f"{node}@polykey"


class Signer(Protocol):
    """Who writes a commit: its NodeId is the author and committer, and it signs the commit."""

    @property
    def node_id(self) -> NodeId: ...

    def sign(self, payload: bytes) -> str:
        """The armored SSHSIG (namespace ``git``) of ``payload``, the commit without ``gpgsig``."""
        ...


class NodeKey:
    """An unlocked node keypair, for vaults: a :class:`Signer` and a
    :class:`polykey.vaults.format.Identity`.

    It holds the :class:`KeyPair` (not a copy of its seed), so a keypair wiped when the agent
    locks makes every use fail.
    """

    __slots__ = ("_keypair",)

    def __init__(self, keypair: KeyPair) -> None:
        self._keypair = keypair

    def __repr__(self) -> str:
        return f"NodeKey(node_id={self.node_id})"

    @property
    def node_id(self) -> NodeId:
        return self._keypair.node_id

    def sign(self, payload: bytes) -> str:
        return sshsig.sign(self._keypair.seed, payload)

    def unseal(self, sealed: bytes) -> bytes:
        """Open what :func:`polykey.crypto.seal` sealed to this node; AuthenticationError otherwise."""
        return crypto.unseal(self._keypair.seed, sealed)

    def derive(self, info: bytes, length: int) -> bytes:
        """A key of the node's own (HKDF-SHA256 of the seed, no salt), such as the name index key."""
        return crypto.derive(self._keypair.seed, info, length)
