"""Sharing and sync of vaults between nodes (docs/spec/sync.md).

:class:`keynode.peers.sync.engine.Sync` serves the sync protocol's peer methods on the transport
(invite, scan, heads, fetch, announce), runs pulls, clones, pushes and invites for the agent's
methods (keynode.methods.sync), and syncs on its own: an announce after every local write, and a
periodic anti-entropy pass over every member of every vault. The receiving node always verifies:
what a peer sends goes through :meth:`polykey.vaults.service.VaultService.receive` or ``clone``.
"""

from keynode.peers.sync.engine import Sync

__all__ = ["Sync"]
