"""The agent's vault methods and the VaultService operations behind them (docs/spec/agent-protocol.md s.6).

Shared by the agent (which calls ``VaultService``) and the client-side proxy
(:mod:`polykey.agent_client.remote`), so both agree on names and parameters.
"""

from __future__ import annotations

#: RPC method -> (VaultService method, its parameter names in order)
VAULT_METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vaults.create": ("create_vault", ("name",)),
    "vaults.list": ("list_vaults", ()),
    "vaults.rename": ("rename_vault", ("old", "new")),
    "vaults.delete": ("delete_vault", ("name",)),
    "vaults.log": ("log", ("vault", "limit")),
    "vaults.version": ("version", ("vault", "commit")),
    "vaults.members": ("members", ("vault",)),
    "vaults.verify": ("verify", ("vault",)),
    "vaults.reset": ("reset_vault", ("vault", "to")),
    "secrets.set": ("set_secret", ("vault", "path", "value")),
    "secrets.get": ("get_secret", ("vault", "path", "commit")),
    "secrets.list": ("list_secrets", ("vault", "path", "recursive", "commit")),
    "secrets.remove": ("remove", ("vault", "path", "recursive")),
    "secrets.move": ("move", ("vault", "src", "dst")),
    "secrets.copy": ("copy", ("vault", "src", "dst")),
    "secrets.mkdir": ("mkdir", ("vault", "path", "parents")),
    "secrets.stat": ("stat", ("vault", "path")),
    "secrets.history": ("history", ("vault", "path", "limit")),
    "secrets.revert": ("revert", ("vault", "path", "commit")),
    "secrets.generate": ("generate", ("vault", "path", "length", "charset", "reveal", "replace")),
    "secrets.import": ("import_secrets", ("vault", "items", "stage")),
    "secrets.import_stage": ("stage_import", ("items", "token")),
}

#: Methods that change no vault but may take long (they validate many items): the worker pool.
POOL_METHODS = frozenset({"secrets.import_stage"})

#: Methods that change a vault or the vault index; the agent serialises them per vault.
WRITE_METHODS = frozenset(
    {
        "vaults.create",
        "vaults.rename",
        "vaults.delete",
        "vaults.reset",
        "secrets.set",
        "secrets.remove",
        "secrets.move",
        "secrets.copy",
        "secrets.mkdir",
        "secrets.revert",
        "secrets.generate",
        "secrets.import",
    }
)

#: Methods that touch the vault index (names) rather than one vault: serialised node-wide.
INDEX_METHODS = frozenset({"vaults.create", "vaults.rename", "vaults.delete", "vaults.list"})

BY_OPERATION: dict[str, str] = {op: method for method, (op, _) in VAULT_METHODS.items()}
