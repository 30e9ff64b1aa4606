"""Sharing and sync methods of the agent (docs/spec/agent-protocol.md s.6, docs/spec/sync.md).

``vaults.share {vault, nodeId, role?}``, ``vaults.unshare {vault, nodeId}``, ``vaults.invites {}``,
``vaults.scan {nodeId}``, ``vaults.clone {vault, nodeId, name?}``, ``vaults.pull {vault, nodeId?}``,
``vaults.push {vault, nodeId?}``, ``vaults.sync {vault?}``, ``vaults.status {vault?}``,
``nodes.trust {nodeId, autoAccept?}``, ``nodes.untrust {nodeId}``, ``nodes.trusted {}``.
Clone and pull send progress (``{"stage", "objects", "total", "bytes"}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from keynode.agent.core import Agent
from keynode.handlers import AgentContext
from keynode.peers.network import Network
from keynode.peers.sync import Sync
from polykey.errors import InvalidInputError
from polykey.ids import NodeId

ROLES = ("owner", "writer", "reader")
Method = Callable[[AgentContext, dict[str, Any]], Awaitable[Any]]


def _params(method: str, params: dict[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    unknown = set(params) - required - optional
    missing = required - set(params)
    if unknown or missing:
        wanted = ", ".join(sorted(required) + [f"{o}?" for o in sorted(optional)])
        raise InvalidInputError(f"{method} takes {wanted or 'no parameters'}")


def _text(method: str, params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInputError(f"{method}: {key} must be a non-empty string")
    return value


def _node(method: str, params: dict[str, Any], key: str = "nodeId") -> NodeId | None:
    text = _text(method, params, key)
    return None if text is None else NodeId.from_text(text)


def _need(value: Any, method: str, key: str) -> Any:
    if value is None:
        raise InvalidInputError(f"{method}: {key} is required")
    return value


class SyncMethods:
    """The agent's sharing and sync handlers over one :class:`Sync`."""

    def __init__(self, agent: Agent, sync: Sync) -> None:
        self._agent = agent
        self._sync = sync

    def register(self) -> None:
        register = self._agent.handlers.register
        for name, handler in {
            "vaults.share": self.share, "vaults.unshare": self.unshare, "vaults.invites": self.invites,
            "vaults.scan": self.scan, "vaults.clone": self.clone, "vaults.pull": self.pull,
            "vaults.push": self.push, "vaults.sync": self.sync, "vaults.status": self.status,
            "nodes.trust": self.trust, "nodes.untrust": self.untrust, "nodes.trusted": self.trusted,
        }.items():
            register(name, handler)

    async def share(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.share", params, {"vault", "nodeId"}, {"role"})
        role = params.get("role", "reader")
        if role not in ROLES:
            raise InvalidInputError("role must be owner, writer or reader")
        vault = _need(_text("vaults.share", params, "vault"), "vaults.share", "vault")
        node = _need(_node("vaults.share", params), "vaults.share", "nodeId")
        async with self._agent.using_keys():
            return await self._sync.share(vault, node, role)

    async def unshare(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.unshare", params, {"vault", "nodeId"})
        vault = _need(_text("vaults.unshare", params, "vault"), "vaults.unshare", "vault")
        node = _need(_node("vaults.unshare", params), "vaults.unshare", "nodeId")
        async with self._agent.using_keys():
            return await self._sync.unshare(vault, node)

    async def invites(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.invites", params, set())
        async with self._agent.using_keys() as svc:
            received = await self._agent.run_blocking(svc.list_invites)
        return {"received": received, "pending": self._sync.queued_invites()}

    async def scan(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.scan", params, {"nodeId"})
        node = _need(_node("vaults.scan", params), "vaults.scan", "nodeId")
        async with self._agent.using_keys():
            return await self._sync.scan(node)

    async def clone(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.clone", params, {"vault", "nodeId"}, {"name"})
        vault = _need(_text("vaults.clone", params, "vault"), "vaults.clone", "vault")
        node = _need(_node("vaults.clone", params), "vaults.clone", "nodeId")
        async with self._agent.using_keys():
            return await self._sync.clone(vault, node, _text("vaults.clone", params, "name"), ctx.progress)

    async def pull(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.pull", params, {"vault"}, {"nodeId"})
        vault = _need(_text("vaults.pull", params, "vault"), "vaults.pull", "vault")
        async with self._agent.using_keys():
            return await self._sync.pull(vault, _node("vaults.pull", params), ctx.progress)

    async def push(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.push", params, {"vault"}, {"nodeId"})
        vault = _need(_text("vaults.push", params, "vault"), "vaults.push", "vault")
        async with self._agent.using_keys():
            return await self._sync.push(vault, _node("vaults.push", params))

    async def sync(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.sync", params, set(), {"vault"})
        async with self._agent.using_keys():
            return await self._sync.sync(_text("vaults.sync", params, "vault"))

    async def status(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("vaults.status", params, set(), {"vault"})
        async with self._agent.using_keys():
            return await self._sync.status(_text("vaults.status", params, "vault"))

    async def trust(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("nodes.trust", params, {"nodeId"}, {"autoAccept"})
        node = _need(_node("nodes.trust", params), "nodes.trust", "nodeId")
        auto = params.get("autoAccept", False)
        if type(auto) is not bool:
            raise InvalidInputError("nodes.trust: autoAccept must be a boolean")
        async with self._agent.using_keys() as svc:
            return await self._agent.run_blocking(svc.trust_node, str(node), auto)

    async def untrust(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("nodes.untrust", params, {"nodeId"})
        node = _need(_node("nodes.untrust", params), "nodes.untrust", "nodeId")
        async with self._agent.using_keys() as svc:
            return await self._agent.run_blocking(svc.untrust_node, str(node))

    async def trusted(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _params("nodes.trusted", params, set())
        async with self._agent.using_keys() as svc:
            return await self._agent.run_blocking(svc.trusted_nodes)


def install(agent: Agent, network: Network) -> None:
    """Plug sync into ``agent`` on top of its peer ``network`` (called by keynode.methods.nodes)."""
    interval = agent.config.extra.get("sync_interval")
    sync = Sync(agent, network, interval=float(interval) if interval else None)
    SyncMethods(agent, sync).register()
    agent.add_service(lambda _agent: sync)
