"""Node methods: agent requests about other nodes, served by the peer network (docs/spec/discovery.md s.1).

Agent socket methods (all need the agent unlocked): ``nodes.add {nodeId, host, port}``,
``nodes.find {nodeId}``, ``nodes.ping {nodeId}``, ``nodes.list {}``, ``nodes.connections {}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from keynode.agent.core import Agent
from keynode.handlers import AgentContext
from keynode.methods import sync as sync_methods
from keynode.peers.network import CONNECT_TIMEOUT, Network, resolve, unreachable
from polykey.errors import InvalidInputError
from polykey.ids import NodeId
from polykey.wire.records import Address, check_port


class NodeMethods:
    """The ``nodes.*`` handlers over one :class:`Network`."""

    def __init__(self, network: Network) -> None:
        self._network = network

    def register(self, agent: Agent) -> None:
        register = agent.handlers.register
        register("nodes.add", self.add)
        register("nodes.find", self.find)
        register("nodes.ping", self.ping)
        register("nodes.list", self.list)
        register("nodes.connections", self.connections)

    async def add(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId", "host", "port"})
        host, port = params.get("host"), params.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise InvalidInputError("nodes.add takes nodeId, host (string) and port (integer)")
        check_port(port)
        ip = await resolve(host, port, self._network.listen_host)
        _, discovery = await self._network.services()
        discovery.add_node(node_id, ip, port)
        return {"nodeId": str(node_id), "host": ip, "port": port}

    async def find(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        network = self._network
        transport, discovery = await network.services()
        addresses, record = await network.candidates(discovery, node_id)
        # Every address is proven by a handshake expecting node_id. An open outbound connection
        # was proven at its address when it was dialled; any other address gets a new connection
        # (an inbound connection's address is the peer's source port, not where it listens).
        open_at = None
        channel = transport.channel(node_id)
        if channel is not None and channel.is_open and channel.outbound:
            open_at = channel.address
        tried = await asyncio.gather(*(
            network.try_address(transport, node_id, a, new=True) if a != open_at
            else _verified(a) for a in addresses
        ))
        if not any(t["verified"] for t in tried):
            raise unreachable(node_id, list(tried))
        return {
            "nodeId": str(node_id),
            "addresses": list(tried),
            "record": None if record is None else {"seq": record.seq, "expiry": record.expiry,
                                                   "addresses": [list(a) for a in record.addresses]},
        }

    async def ping(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        channel = await self._network.reach(node_id)
        rtt = await channel.ping(timeout=CONNECT_TIMEOUT)
        host, port = channel.address
        direction = "outbound" if channel.outbound else "inbound"
        return {"nodeId": str(node_id), "host": host, "port": port, "direction": direction, "rtt": rtt}

    async def list(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return (await self._network.services())[1].node_graph()

    async def connections(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return (await self._network.services())[0].connections()


def _node_id(params: dict[str, Any], allowed: set[str]) -> NodeId:
    if set(params) - allowed or not isinstance(params.get("nodeId"), str):
        raise InvalidInputError(f"expected parameters {', '.join(sorted(allowed))}")
    return NodeId.from_text(params["nodeId"])


async def _verified(address: Address) -> dict[str, Any]:
    return {"host": address[0], "port": address[1], "verified": True}


def _no_params(params: dict[str, Any]) -> None:
    if params:
        raise InvalidInputError("this method takes no parameters")


def install(agent: Agent) -> None:
    """keynode.agent.runner extension: plug the peer network, its ``nodes.*`` methods and sync into the agent."""

    network = Network(agent)
    NodeMethods(network).register(agent)
    agent.add_service(lambda _agent: network)
    sync_methods.install(agent, network)  # sharing and sync run on the peer network
