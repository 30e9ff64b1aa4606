"""Peer networking inside the agent: the Noise transport and DHT discovery (docs/spec/discovery.md s.1).

One :class:`Network` service per agent. While the agent is unlocked it runs a
:class:`keynode.peers.transport.Transport` on TCP ``host:port`` and a
:class:`keynode.peers.dht.Discovery` on UDP at the same port number, bootstraps from the
seeds and publishes the node's signed record. When the agent locks, both are shut
down (they hold the identity key); on unlock they start again on the same port.

Its agent methods (``nodes.*``) are in :mod:`keynode.methods.nodes`, which also plugs it in.
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
from keynode.lifecycle import Service, task_group
from keynode.peers.state import Changes, Peers, PeerState
from keynode.peers.transport import Channel, Transport
from keynode.peers.transport.service import PeerHandler
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
    parser.add_argument("--sync-interval", type=_interval, default=os.environ.get("PK_SYNC_INTERVAL") or None,
                        metavar="SECONDS", help="seconds between anti-entropy passes of automatic sync "
                        "[env PK_SYNC_INTERVAL; default 60]")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError("the sync interval is 0.1 to 86400 seconds")
    return value


def seeds_from(extra: dict[str, Any]) -> list[Seed]:
    given = extra.get("seed")
    if given:
        return [parse_seed(text) for text in given]
    return parse_seeds(os.environ.get("PK_SEED_NODES", ""))


class Network(Service):
    """The agent's peer transport and discovery; a service entered by the agent."""

    def __init__(self, agent: Agent) -> None:
        extra = dict(agent.config.extra)
        self._agent = agent
        self._host: str = _listen_host(extra.get("host") or "127.0.0.1")
        self._port: int = _listen_port(extra.get("port"))
        self._seeds = seeds_from(extra)
        self._graph_path = agent.config.node_path / GRAPH_FILE
        self._peers = Peers(PeerState.STARTING)
        #: lock/unlock events seen; the supervisor restarts the services when this moves
        self._key_changes = 0
        self._bootstrap_tried = False  # since the agent started: its start waits for this
        self._started = False  # start-up is over: later failures are logged, the agent keeps serving
        self._changes = Changes()  # notified at every change of the above
        #: Peer methods served by every transport this network runs (sync registers its own).
        self._peer_methods: dict[str, PeerHandler] = {}

    def serve(self, method: str, handler: PeerHandler) -> None:
        """Serve peer ``method`` on the transport from its next start (call before the agent runs)."""
        self._peer_methods[method] = handler

    @property
    def running(self) -> bool:
        """Whether the transport and discovery run now (unlocked, started, not failed)."""
        return self._peers.services is not None

    @property
    def listen_host(self) -> str:
        """The IP address the transport and the DHT listen on."""
        return self._host

    # -- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifetime(self) -> AsyncIterator[None]:
        self._agent.on_key_change(self._on_key_change)
        async with task_group() as tg:
            tg.create_task(self._supervise(), name="network")  # its failure at start fails the agent's
            # Serve once the listener is up and a first bootstrap was tried, so that a node
            # started right after this one can already find it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_BOOTSTRAP_TIMEOUT):
                    await self._changes.until(lambda: self._bootstrap_tried or self._peers.state is PeerState.LOCKED)
            self._started = True
            yield

    def _set(self, peers: Peers) -> None:
        self._peers = peers
        self._changes.notify()

    def _settle(self, seen: int, peers: Peers) -> None:
        """Enter ``peers`` unless a lock or unlock came after ``seen`` (then stay STARTING)."""
        if self._key_changes == seen:
            self._set(peers)

    def _peer_status(self) -> dict[str, Any] | None:
        return self._peers.status(self._host, self._port)

    def _on_key_change(self) -> Awaitable[Any]:
        """The agent locked or unlocked: stop or restart; lock/unlock answer once that is done."""
        self._key_changes += 1
        self._set(Peers(PeerState.STARTING))  # at once: a request right after `pk agent unlock` waits
        return self._changes.until(lambda: self._peers.state is not PeerState.STARTING)

    async def _supervise(self) -> None:
        """Run the peer services while unlocked; stop them when the agent locks."""
        while True:
            seen = self._key_changes

            def key_changed() -> bool:
                return self._key_changes != seen

            if self._agent.locked:
                self._settle(seen, Peers(PeerState.LOCKED))  # the next unlock tries again
                await self._changes.until(key_changed)
                continue
            try:
                async with self._running(seen):
                    await self._changes.until(key_changed)
            except Exception as e:  # noqa: BLE001 - the agent keeps serving its vaults either way
                if not self._started:
                    raise  # at start: the agent fails to start and says why
                failure = e.message if isinstance(e, PolykeyError) else f"internal error ({type(e).__name__})"
                log.error("peer services stopped: %s", failure, exc_info=not isinstance(e, PolykeyError))
                self._settle(seen, Peers(PeerState.FAILED, error=failure))
                await self._changes.until(key_changed)

    @contextlib.asynccontextmanager
    async def _running(self, seen: int) -> AsyncIterator[None]:
        keypair = self._agent.keypair
        async with contextlib.AsyncExitStack() as stack:
            transport, discovery = await self._bind(stack, keypair)
            tg = await stack.enter_async_context(task_group())  # left first: the bootstrap ends first
            tg.create_task(self._bootstrap_loop(discovery), name="dht-bootstrap")
            self._agent.status_extra.setdefault("peer", self._peer_status)  # shown from the first start on
            self._settle(seen, Peers(PeerState.RUNNING, services=(transport, discovery)))
            try:
                yield
            finally:
                if self._peers.state is PeerState.RUNNING:  # not a lock or unlock: the agent is stopping
                    self._set(Peers(PeerState.STOPPED))
                log.info("peer services stopped")

    async def _bind(self, stack: contextlib.AsyncExitStack, keypair: Any) -> tuple[Transport, Discovery]:
        """TCP first (a free port if 0), then UDP on the same port number; retry on a collision."""
        for attempt in range(BIND_ATTEMPTS if self._port == 0 else 1):
            inner = contextlib.AsyncExitStack()
            try:
                transport = Transport(keypair, self._host, self._port)
                for method, handler in self._peer_methods.items():
                    transport.register(method, handler)
                transport = await inner.enter_async_context(transport)
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
            if not self._bootstrap_tried:
                self._bootstrap_tried = True
                self._changes.notify()
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

    async def services(self) -> tuple[Transport, Discovery]:
        if self._peers.state is PeerState.STARTING:  # restarting after an unlock: wait (bounded) for it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_BOOTSTRAP_TIMEOUT):
                    await self._changes.until(lambda: self._peers.state is not PeerState.STARTING)
        peers = self._peers
        if peers.services is None:
            if peers.error is not None:
                raise PeerUnreachableError(f"peer networking is not running: {peers.error}")
            raise AgentLockedError("peer networking is not running (the agent is locked or starting)")
        return peers.services

    async def candidates(self, discovery: Discovery, node_id: NodeId) -> tuple[list[Address], NodeRecord | None]:
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

    async def try_address(self, transport: Transport, node_id: NodeId, address: Address, *, new: bool) -> dict[str, Any]:
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

    async def reach(self, node_id: NodeId) -> Channel:
        """An authenticated channel to ``node_id``: the open one, or the first address that proves it."""
        transport, discovery = await self.services()
        existing = transport.channel(node_id)
        if existing is not None and existing.is_open:
            return existing
        addresses, _ = await self.candidates(discovery, node_id)
        tried = []
        for address in addresses:
            tried.append(await self.try_address(transport, node_id, address, new=False))
            channel = transport.channel(node_id)
            if tried[-1]["verified"] and channel is not None:
                return channel
        raise unreachable(node_id, tried)


def unreachable(node_id: NodeId, tried: list[dict[str, Any]]) -> PeerUnreachableError:
    reasons = "; ".join(f"{t['host']}:{t['port']}: {t['error']}" for t in tried)
    return PeerUnreachableError(f"node {node_id} did not answer as itself at any known address ({reasons})",
                                tried=tried)


async def resolve(host: str, port: int, listen_host: str) -> str:
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
