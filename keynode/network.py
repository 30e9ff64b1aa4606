"""Peer networking inside the agent: the Noise transport and DHT discovery (docs/spec/discovery.md s.1).

One :class:`Network` service per agent. While the agent is unlocked it runs a
:class:`keynode.transport.Transport` on TCP ``host:port`` and a
:class:`keynode.dht.Discovery` on UDP at the same port number, bootstraps from the
seeds and publishes the node's signed record. When the agent locks, both are shut
down (they hold the identity key); on unlock they start again on the same port.

Agent socket methods (all need the agent unlocked):

``nodes.add {nodeId, host, port}``, ``nodes.find {nodeId}``, ``nodes.ping {nodeId}``,
``nodes.list {}``, ``nodes.connections {}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from keynode.agent import Agent
from keynode.dht import Discovery
from keynode.handlers import RequestContext
from keynode.transport import Channel, Transport
from polykey.errors import (
    AgentLockedError,
    DiscoveryBindError,
    InvalidInputError,
    PeerNotFoundError,
    PeerUnreachableError,
    PolykeyError,
)
from polykey.ids import NodeId
from polykey.wire.records import Seed, check_port, parse_seed, parse_seeds

log = logging.getLogger("keynode.network")

GRAPH_FILE = "nodegraph.json"
#: How long the agent's start waits for the first bootstrap before serving anyway.
FIRST_BOOTSTRAP_TIMEOUT = 5.0
#: Retry a bootstrap that reached nobody after these many seconds (doubling, capped).
BOOTSTRAP_RETRY = (1.0, 60.0)
#: Binding TCP and UDP on one free port number can collide; try this many port numbers.
BIND_ATTEMPTS = 8
CONNECT_TIMEOUT = 5.0


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """keynode options: ``--host``, ``--port``, ``--seed`` (repeatable)."""
    parser.add_argument("--host", default=os.environ.get("PK_PEER_HOST", "127.0.0.1"),
                        help="peer listener address, TCP and UDP [env PK_PEER_HOST; default 127.0.0.1]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PK_PEER_PORT", "0") or 0),
                        help="peer listener port, TCP and UDP [env PK_PEER_PORT; default a free port]")
    parser.add_argument("--seed", action="append", default=None, metavar="NODEID@HOST:PORT",
                        help="a seed node (repeatable) [env PK_SEED_NODES, separated by ',' or ';']")


def seeds_from(extra: dict[str, Any]) -> list[Seed]:
    given = extra.get("seed")
    if given:
        return [parse_seed(text) for text in given]
    return parse_seeds(os.environ.get("PK_SEED_NODES", ""))


class Network:
    """The agent's peer transport and discovery; an async context manager entered by the agent."""

    def __init__(self, agent: Agent) -> None:
        extra = dict(agent.config.extra)
        self._agent = agent
        self._host: str = extra.get("host") or "127.0.0.1"
        port = int(extra.get("port") or 0)
        self._port: int = 0 if port == 0 else check_port(port)
        self._seeds = seeds_from(extra)
        self._graph_path = agent.config.node_path / GRAPH_FILE
        self._transport: Transport | None = None
        self._discovery: Discovery | None = None
        self._key_change = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._register()

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Network:
        self._agent.on_key_change(self._key_change.set)
        self._task = self._agent.task_group.create_task(self._supervise(), name="network")
        # Serve once the listener is up and a first bootstrap was tried, so that a node
        # started right after this one can already find it.
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=FIRST_BOOTSTRAP_TIMEOUT + CONNECT_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task in done:
            self._task.result()  # a bind error: the agent fails to start, saying why
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        """Run the peer services while unlocked; stop them when the agent locks."""
        while True:
            self._key_change.clear()
            if self._agent.locked:
                self._ready.set()
                await self._key_change.wait()
                continue
            try:
                async with self._running():
                    await self._key_change.wait()
            except PolykeyError as e:
                if not self._ready.is_set():
                    raise  # at start: the agent fails to start and says why
                log.error("peer services stopped: %s", e.message)
                self._ready.set()
                await self._key_change.wait()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        keypair = self._agent.keypair
        async with contextlib.AsyncExitStack() as stack:
            transport, discovery = await self._bind(stack, keypair)
            self._transport, self._discovery = transport, discovery
            self._agent.status_extra["peer"] = lambda: {"host": self._host, "port": self._port}
            retry = self._agent.task_group.create_task(self._bootstrap_loop(discovery), name="dht-bootstrap")
            try:
                yield
            finally:
                retry.cancel()
                self._transport = self._discovery = None
                self._agent.status_extra["peer"] = lambda: None
                log.info("peer services stopped")

    async def _bind(self, stack: contextlib.AsyncExitStack, keypair: Any) -> tuple[Transport, Discovery]:
        """TCP first (a free port if 0), then UDP on the same port number; retry on a collision."""
        for attempt in range(BIND_ATTEMPTS if self._port == 0 else 1):
            inner = contextlib.AsyncExitStack()
            try:
                transport = await inner.enter_async_context(Transport(keypair, self._host, self._port))
                discovery = await inner.enter_async_context(
                    Discovery(keypair, host=self._host, port=transport.port, seeds=self._seeds,
                              graph_path=self._graph_path)
                )
            except DiscoveryBindError:
                await inner.aclose()
                if self._port != 0 or attempt == BIND_ATTEMPTS - 1:
                    raise
                continue
            except OSError as e:
                await inner.aclose()
                raise PeerUnreachableError(f"cannot listen on {self._host}:{self._port}: {e.strerror}") from None
            except BaseException:
                await inner.aclose()
                raise
            await stack.enter_async_context(inner)
            self._port = transport.port  # keep the port across lock/unlock
            log.info("peer listener on %s:%d (TCP and UDP)", self._host, self._port)
            return transport, discovery
        raise AssertionError("unreachable")

    async def _bootstrap_loop(self, discovery: Discovery) -> None:
        delay, cap = BOOTSTRAP_RETRY
        first = True
        while True:
            try:
                known = await discovery.bootstrap()
            except PolykeyError as e:
                log.warning("bootstrap failed: %s", e.message)
                known = 0
            if first:
                first = False
                self._ready.set()
            if known or not self._seeds:
                return
            log.info("bootstrap reached no seed; retrying in %g s", delay)
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)

    # -- helpers -----------------------------------------------------------------------

    def _services(self) -> tuple[Transport, Discovery]:
        if self._transport is None or self._discovery is None:
            raise AgentLockedError("peer networking is not running (the agent is locked or starting)")
        return self._transport, self._discovery

    async def _candidates(self, discovery: Discovery, node_id: NodeId) -> tuple[list[tuple[str, int]], Any]:
        """Addresses to try for ``node_id``: its DHT record's, then manual and routing-table entries."""
        record = await discovery.find(node_id)
        addresses = list(record.addresses) if record is not None else []
        for entry in discovery.node_graph():
            if entry["node_id"] == str(node_id) and (entry["host"], entry["port"]) not in addresses:
                addresses.append((entry["host"], entry["port"]))
        return addresses, record

    async def _reach(self, node_id: NodeId) -> tuple[Channel, list[dict[str, Any]]]:
        """An authenticated channel to ``node_id``, and what each address tried gave."""
        transport, discovery = self._services()
        if node_id == self._agent.keypair.node_id:
            raise InvalidInputError("that is this node's own NodeId")
        existing = transport.channel(node_id)
        if existing is not None and existing.is_open:
            host, port = existing.address
            return existing, [{"host": host, "port": port, "verified": True}]
        addresses, _ = await self._candidates(discovery, node_id)
        if not addresses:
            raise PeerNotFoundError(f"node {node_id} was not found in the DHT or the node graph")
        tried: list[dict[str, Any]] = []
        for host, port in addresses:
            try:
                channel = await asyncio.wait_for(transport.connect(node_id, host, port), CONNECT_TIMEOUT)
            except (PolykeyError, asyncio.TimeoutError) as e:
                reason = e.message if isinstance(e, PolykeyError) else "timed out"
                tried.append({"host": host, "port": port, "verified": False, "error": reason})
                continue
            tried.append({"host": host, "port": port, "verified": True})
            return channel, tried
        raise PeerUnreachableError(
            f"node {node_id} did not answer as itself at any of its {len(addresses)} address(es)",
            tried=tried,
        )

    # -- handlers ------------------------------------------------------------------------

    def _register(self) -> None:
        register = self._agent.handlers.register
        register("nodes.add", self._h_add)
        register("nodes.find", self._h_find)
        register("nodes.ping", self._h_ping)
        register("nodes.list", self._h_list)
        register("nodes.connections", self._h_connections)

    async def _h_add(self, ctx: RequestContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId", "host", "port"})
        host, port = params.get("host"), params.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise InvalidInputError("nodes.add takes nodeId, host (string) and port (integer)")
        check_port(port)
        ip = await _resolve(host, port)
        _, discovery = self._services()
        discovery.add_node(node_id, ip, port)
        return {"nodeId": str(node_id), "host": ip, "port": port}

    async def _h_find(self, ctx: RequestContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        _, discovery = self._services()
        addresses, record = await self._candidates(discovery, node_id)
        if not addresses:
            raise PeerNotFoundError(f"node {node_id} was not found in the DHT or the node graph")
        _, tried = await self._reach(node_id)
        return {
            "nodeId": str(node_id),
            "addresses": tried,
            "record": None if record is None else {"seq": record.seq, "expiry": record.expiry,
                                                   "addresses": [list(a) for a in record.addresses]},
        }

    async def _h_ping(self, ctx: RequestContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        channel, _ = await self._reach(node_id)
        rtt = await channel.ping(timeout=CONNECT_TIMEOUT)
        host, port = channel.address
        return {"nodeId": str(node_id), "host": host, "port": port, "rtt": rtt}

    async def _h_list(self, ctx: RequestContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return self._services()[1].node_graph()

    async def _h_connections(self, ctx: RequestContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return self._services()[0].connections()


def _node_id(params: dict[str, Any], allowed: set[str]) -> NodeId:
    if set(params) - allowed or not isinstance(params.get("nodeId"), str):
        raise InvalidInputError(f"expected parameters {', '.join(sorted(allowed))}")
    return NodeId.from_text(params["nodeId"])


def _no_params(params: dict[str, Any]) -> None:
    if params:
        raise InvalidInputError("this method takes no parameters")


async def _resolve(host: str, port: int) -> str:
    """An IP literal for ``host`` (the DHT stores addresses, not names)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InvalidInputError(f"cannot resolve host {host!r}") from None
    return str(infos[0][4][0])


def install(agent: Agent) -> None:
    """keynode.runner extension: plug the network service into the agent."""
    agent.add_service(Network)
