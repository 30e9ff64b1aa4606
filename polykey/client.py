"""``polykey.Client``: secrets for Python programs, through the node's agent.

    from polykey import Client
    db_password = Client().get("app:db/password")        # bytes, exactly as stored

The same socket and protocol as ``pk`` (docs/spec/agent-protocol.md); standard library
only, so importing it costs about as much as ``import json, socket``. The agent is started
on demand when a password source is at hand (``password_file=...`` or ``PK_PASSWORD``).
A Client holds one connection and is not thread-safe: use one per thread.
"""

from __future__ import annotations

import os
from typing import Any

from polykey.agent_client import parse_secret_ref
from polykey.agent_client.paths import default_node_path
from polykey.agent_client.session import AgentSession
from polykey.agent_client.vaults import VaultClient


class Client:
    """A connection to the agent of one node (default: ``$PK_NODE_PATH`` or the user's data dir)."""

    def __init__(
        self,
        node_path: str | os.PathLike[str] | None = None,
        *,
        password_file: str | os.PathLike[str] | None = None,
        autostart: bool = True,
    ) -> None:
        from polykey.agent_client.passwords import PasswordSource

        node = os.fspath(node_path) if node_path is not None else default_node_path()
        source = PasswordSource(os.fspath(password_file) if password_file is not None else None)
        self._session = AgentSession(node, source, autostart=autostart)
        self.vaults = VaultClient(self._session)
        """Every vault and secret method as a typed call (``client.vaults.list_vaults()``)."""

    def call(self, method: str, **params: Any) -> Any:
        """Any agent method (docs/spec/agent-protocol.md section 6) with keyword parameters."""
        return self._session.call(method, params)

    def get(self, ref: str, commit: str | None = None) -> bytes:
        """A secret's value, exactly as stored; ``ref`` is ``vault:path`` or ``pk://vault/path``."""
        vault, path = parse_secret_ref(ref)
        value = self.vaults.get_secret(vault, path, commit)
        assert isinstance(value, bytes)
        return value

    def get_text(self, ref: str) -> str:
        return self.get(ref).decode("utf-8")

    def set(self, ref: str, value: bytes | str) -> dict[str, Any]:
        vault, path = parse_secret_ref(ref)
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return self.vaults.set_secret(vault, path, data)

    def list(self, vault: str, path: str = "", recursive: bool = False) -> list[dict[str, Any]]:
        return self.vaults.list_secrets(vault, path, recursive)

    def env(self, *refs: str) -> dict[str, bytes]:
        """Secrets named by ``vault:path`` (or a ``vault:dir``), keyed by their last path component."""
        pairs = [parse_secret_ref(r) if ":" in r or r.startswith("pk://") else (r, "") for r in refs]
        resolved = self._session.call("secrets.resolve", {"refs": [{"vault": v, "path": p} for v, p in pairs]})
        out: dict[str, bytes] = {}
        for ref in resolved:
            for item in ref["secrets"]:
                out[item["path"].rstrip("/").rsplit("/", 1)[-1]] = item["value"]
        return out

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._session.call("agent.status")
        return result

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
