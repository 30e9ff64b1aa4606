"""Peer networking inside the agent: the Noise transport and DHT discovery (docs/spec/discovery.md s.1).

One :class:`Network` service per agent. While the agent is unlocked it runs a
:class:`keynode.peers.transport.Transport` on TCP ``host:port`` and a
:class:`keynode.peers.dht.Discovery` on UDP at the same port number, bootstraps from the
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
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from keynode.agent.core import Agent
from keynode.peers.dht import Discovery
from keynode.handlers import AgentContext
from keynode.peers.transport import Channel, Transport
from polykey.errors import (
    AgentLockedError,
    DiscoveryBindError,
    InvalidInputError,
    PeerNotFoundError,
    PeerUnreachableError,
    PolykeyError,
)
from polykey.ids import NodeId
from polykey.wire.records import Address, NodeRecord, Seed, check_port, parse_seed, parse_seeds

log = logging.getLogger("keynode.peers.network")

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
    parser.add_argument("--port", type=int, default=None,
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
        self._host: str = _listen_host(extra.get("host") or "127.0.0.1")
        self._port: int = _listen_port(extra.get("port"))
        self._seeds = seeds_from(extra)
        self._graph_path = agent.config.node_path / GRAPH_FILE
        self._transport: Transport | None = None
        self._discovery: Discovery | None = None
        self._key_change = asyncio.Event()
        self._ready = asyncio.Event()
        #: set while the services run, or are known not to (locked, failed); clear while they
        #: (re)start after a lock or unlock, so requests wait for them instead of failing
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None  # why the peer services are not running, if they failed
        self._register()

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Network:
        self._agent.on_key_change(self._on_key_change)
        self._task = self._agent.task_group.create_task(self._supervise(), name="network")
        # Serve once the listener is up and a first bootstrap was tried, so that a node
        # started right after this one can already find it.
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=FIRST_BOOTSTRAP_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task in done:
            self._task.result()  # a bind error: the agent fails to start, saying why
        self._ready.set()  # start-up is over: later failures are logged, the agent keeps serving
        return self

    def _not_running(self) -> dict[str, Any] | None:
        """``peer`` in the agent status while the services are down: why, unless simply locked."""
        return None if self._failure is None else {"error": self._failure}

    def _on_key_change(self) -> Awaitable[Any]:
        """The agent locked or unlocked: stop or restart; lock/unlock answer once that is done."""
        self._settled.clear()  # at once: a request right after `pk agent unlock` waits for the restart
        self._key_change.set()
        return self._settled.wait()

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
                self._failure = None  # locked is reason enough; the next unlock tries again
                self._ready.set()
                self._settled.set()
                await self._key_change.wait()
                continue
            try:
                async with self._running():
                    await self._key_change.wait()
            except Exception as e:  # noqa: BLE001 - the agent keeps serving its vaults either way
                if not self._ready.is_set():
                    raise  # at start: the agent fails to start and says why
                self._failure = e.message if isinstance(e, PolykeyError) else f"internal error ({type(e).__name__})"
                log.error("peer services stopped: %s", self._failure, exc_info=not isinstance(e, PolykeyError))
                self._ready.set()
                self._settled.set()
                await self._key_change.wait()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        keypair = self._agent.keypair
        async with contextlib.AsyncExitStack() as stack:
            transport, discovery = await self._bind(stack, keypair)
            self._transport, self._discovery, self._failure = transport, discovery, None
            self._agent.status_extra["peer"] = lambda: {"host": self._host, "port": self._port}
            self._settled.set()
            retry = self._agent.task_group.create_task(self._bootstrap_loop(discovery), name="dht-bootstrap")
            try:
                yield
            finally:
                self._transport = self._discovery = None
                self._agent.status_extra["peer"] = self._not_running
                retry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retry
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
            except BaseException:
                await inner.aclose()
                raise
            await stack.enter_async_context(inner)
            self._port = transport.port  # keep the port across lock/unlock
            log.info("peer listener on %s:%d (TCP and UDP)", self._host, self._port)
            return transport, discovery
        raise AssertionError("unreachable")

    async def _bootstrap_loop(self, discovery: Discovery) -> None:
        """Bootstrap; while it reaches nobody although there is someone to ask, retry with backoff.
        Later, if the routing table ever empties (every node it knew went away), start over."""
        delay, cap = BOOTSTRAP_RETRY
        while True:
            try:
                known = await discovery.bootstrap()
                if known and not discovery.addresses:
                    await self._advertise_route(discovery)
            except Exception as e:  # noqa: BLE001 - never take the agent down; retry later
                log.warning("bootstrap failed: %s", e.message if isinstance(e, PolykeyError) else repr(e))
                known = 0
            self._ready.set()
            if known or not discovery.has_contacts:
                delay = BOOTSTRAP_RETRY[0]
                while _routing_size(discovery) or not discovery.has_contacts:
                    await asyncio.sleep(cap)
                log.info("the routing table is empty; bootstrapping again")
                continue
            log.info("bootstrap reached no node; retrying in %g s", delay)
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)

    async def _advertise_route(self, discovery: Discovery) -> None:
        """Bound to 0.0.0.0 or ::, a node has no address to put in its record: advertise the
        local address the system uses to reach the nodes that answered (and publish it)."""
        for row in discovery.node_graph():
            local = _route_to(row["host"])
            if local is not None:
                log.info("bound to %s: advertising %s:%d, the address that reaches %s",
                         self._host, local, self._port, row["host"])
                await discovery.update_addresses([(local, self._port)])
                return

    # -- helpers -----------------------------------------------------------------------

    async def _services(self) -> tuple[Transport, Discovery]:
        if not self._settled.is_set():  # restarting after an unlock: wait (bounded) for it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_BOOTSTRAP_TIMEOUT):
                    await self._settled.wait()
        if self._transport is None or self._discovery is None:
            if self._failure is not None:
                raise PeerUnreachableError(f"peer networking is not running: {self._failure}")
            raise AgentLockedError("peer networking is not running (the agent is locked or starting)")
        return self._transport, self._discovery

    async def _candidates(self, discovery: Discovery, node_id: NodeId) -> tuple[list[Address], NodeRecord | None]:
        """Addresses to try for ``node_id``: its DHT record's, then manual and routing-table entries."""
        if node_id == self._agent.keypair.node_id:
            raise InvalidInputError("that is this node's own NodeId")
        record = await discovery.find(node_id)
        addresses = list(record.addresses) if record is not None else []
        for entry in discovery.node_graph():
            if entry["node_id"] == str(node_id) and (entry["host"], entry["port"]) not in addresses:
                addresses.append((entry["host"], entry["port"]))
        if not addresses:
            raise PeerNotFoundError(f"node {node_id} was not found in the DHT or the node graph")
        return addresses, record

    async def _try(self, transport: Transport, node_id: NodeId, address: Address, *, new: bool) -> dict[str, Any]:
        """Connect to ``node_id`` at ``address`` expecting it to prove ``node_id``; what happened."""
        host, port = address
        connect = transport.dial if new else transport.connect
        try:
            await asyncio.wait_for(connect(node_id, host, port), CONNECT_TIMEOUT)
        except (PolykeyError, asyncio.TimeoutError) as e:
            reason = e.message if isinstance(e, PolykeyError) else "timed out"
            prefix = f"cannot reach {node_id} at {host}:{port}: "  # said once, by the caller
            return {"host": host, "port": port, "verified": False, "error": reason.removeprefix(prefix)}
        return {"host": host, "port": port, "verified": True}

    async def _reach(self, node_id: NodeId) -> Channel:
        """An authenticated channel to ``node_id``: the open one, or the first address that proves it."""
        transport, discovery = await self._services()
        existing = transport.channel(node_id)
        if existing is not None and existing.is_open:
            return existing
        addresses, _ = await self._candidates(discovery, node_id)
        tried = []
        for address in addresses:
            tried.append(await self._try(transport, node_id, address, new=False))
            channel = transport.channel(node_id)
            if tried[-1]["verified"] and channel is not None:
                return channel
        raise _unreachable(node_id, tried)

    # -- handlers ------------------------------------------------------------------------

    def _register(self) -> None:
        register = self._agent.handlers.register
        register("nodes.add", self._h_add)
        register("nodes.find", self._h_find)
        register("nodes.ping", self._h_ping)
        register("nodes.list", self._h_list)
        register("nodes.connections", self._h_connections)

    async def _h_add(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId", "host", "port"})
        host, port = params.get("host"), params.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise InvalidInputError("nodes.add takes nodeId, host (string) and port (integer)")
        check_port(port)
        ip = await _resolve(host, port, self._host)
        _, discovery = await self._services()
        discovery.add_node(node_id, ip, port)
        return {"nodeId": str(node_id), "host": ip, "port": port}

    async def _h_find(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        transport, discovery = await self._services()
        addresses, record = await self._candidates(discovery, node_id)
        # Every address is proven by a handshake expecting node_id. An open outbound connection
        # was proven at its address when it was dialled; any other address gets a new connection
        # (an inbound connection's address is the peer's source port, not where it listens).
        open_at = None
        channel = transport.channel(node_id)
        if channel is not None and channel.is_open and channel.outbound:
            open_at = channel.address
        tried = await asyncio.gather(*(
            self._try(transport, node_id, a, new=True) if a != open_at
            else _verified(a) for a in addresses
        ))
        if not any(t["verified"] for t in tried):
            raise _unreachable(node_id, list(tried))
        return {
            "nodeId": str(node_id),
            "addresses": list(tried),
            "record": None if record is None else {"seq": record.seq, "expiry": record.expiry,
                                                   "addresses": [list(a) for a in record.addresses]},
        }

    async def _h_ping(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        node_id = _node_id(params, {"nodeId"})
        channel = await self._reach(node_id)
        rtt = await channel.ping(timeout=CONNECT_TIMEOUT)
        host, port = channel.address
        direction = "outbound" if channel.outbound else "inbound"
        return {"nodeId": str(node_id), "host": host, "port": port, "direction": direction, "rtt": rtt}

    async def _h_list(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return (await self._services())[1].node_graph()

    async def _h_connections(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        _no_params(params)
        return (await self._services())[0].connections()


def _node_id(params: dict[str, Any], allowed: set[str]) -> NodeId:
    if set(params) - allowed or not isinstance(params.get("nodeId"), str):
        raise InvalidInputError(f"expected parameters {', '.join(sorted(allowed))}")
    return NodeId.from_text(params["nodeId"])


async def _verified(address: Address) -> dict[str, Any]:
    return {"host": address[0], "port": address[1], "verified": True}


def _unreachable(node_id: NodeId, tried: list[dict[str, Any]]) -> PeerUnreachableError:
    reasons = "; ".join(f"{t['host']}:{t['port']}: {t['error']}" for t in tried)
    return PeerUnreachableError(f"node {node_id} did not answer as itself at any known address ({reasons})",
                                tried=tried)


def _no_params(params: dict[str, Any]) -> None:
    if params:
        raise InvalidInputError("this method takes no parameters")


async def _resolve(host: str, port: int, listen_host: str) -> str:
    """An IP literal for ``host`` (the DHT stores addresses, not names); of our listener's family
    if the name has one (``localhost`` may list ``::1`` first on a node listening on IPv4)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InvalidInputError(f"cannot resolve host {host!r}") from None
    ours = socket.AF_INET6 if ipaddress.ip_address(listen_host).version == 6 else socket.AF_INET
    return str(next((i for i in infos if i[0] == ours), infos[0])[4][0])


def _routing_size(discovery: Discovery) -> int:
    return sum(1 for row in discovery.node_graph() if row["bucket"] is not None)


def _listen_host(text: str) -> str:
    """``--host``: an IP address (the DHT and the records carry addresses, not names)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInputError(
            f"--host must be an IP address to listen on (127.0.0.1, ::1, 0.0.0.0 or ::), not {text[:64]!r}"
        ) from None


def _listen_port(given: int | None) -> int:
    """``--port``, else ``PK_PEER_PORT``, else 0 (a free port)."""
    if given is None:
        text = os.environ.get("PK_PEER_PORT", "").strip()
        if not text:
            return 0
        if not text.isdigit() or int(text) > 65535:
            raise InvalidInputError(f"PK_PEER_PORT must be a port number 0..65535, not {text[:20]!r}")
        given = int(text)
    return 0 if given == 0 else check_port(given)


def _route_to(host: str) -> str | None:
    """The local IP the system would send from to reach ``host`` (no packet is sent)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            local = ipaddress.ip_address(s.getsockname()[0].split("%")[0])
    except (OSError, ValueError):
        return None
    return None if local.is_unspecified or local.is_link_local else str(local)


def install(agent: Agent) -> None:
    """keynode.agent.runner extension: plug the network service into the agent."""
    agent.add_service(Network)
