"""The peer transport service: listener, dialler, connection registry, handler registry.

docs/spec/transport.md section 6. A :class:`Transport` is a :class:`keynode.lifecycle.Service`
(STYLE.md rule 11): its lifetime owns one task group, in which the listener's connections,
every connection's reader, keepalive and handler tasks live; leaving the ``async with``
closes the connections and cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

from keynode.failures import describe
from keynode.handlers import Handler, HandlerRegistry, PeerCaller, PeerContext
from keynode.lifecycle import Service, task_group
from keynode.memory import RequestBudget
from keynode.peers.transport.connection import READ_LIMIT, Connection
from keynode.peers.transport.limits import TransportLimits
from polykey import crypto
from polykey.crypto import memory
from polykey.errors import (
    ConnectionClosedError,
    InvalidInputError,
    PeerUnreachableError,
    ProtocolViolationError,
    TransportError,
    UnknownPeerMethodError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import messages as m
from polykey.wire.session import NoiseSession

log = logging.getLogger("keynode.peers.transport")

PeerHandler = Handler[PeerCaller]


def _unknown_method(method: str) -> UnknownPeerMethodError:
    return UnknownPeerMethodError(f"unknown method {method!r}")


class Channel:
    """A mutually authenticated, encrypted channel to one peer (its NodeId is proven)."""

    def __init__(self, transport: Transport, connection: Connection) -> None:
        assert connection.peer is not None
        self._transport = transport
        self._conn = connection
        self.peer: NodeId = connection.peer

    def __repr__(self) -> str:
        return f"<Channel {self.peer}>"

    @property
    def address(self) -> tuple[str, int]:
        """The peer's TCP address on the current connection."""
        return self._connection().address

    @property
    def outbound(self) -> bool:
        """Whether this node dialled the current connection (its address is where the peer listens)."""
        return self._connection().outbound

    @property
    def is_open(self) -> bool:
        try:
            self._connection()
        except ConnectionClosedError:
            return False
        return True

    def _connection(self) -> Connection:
        conn = self._conn
        if conn.closed or conn.retiring:
            current = self._transport._by_peer.get(self.peer)
            if current is not None and not current.closed:
                self._conn = conn = current
            elif conn.closed:
                raise ConnectionClosedError(f"connection to {self.peer} closed: {conn.close_reason}")
        return conn

    async def request(
        self, method: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Call ``method`` on the peer with ``body``; its answer body.

        Raises RequestTimeoutError after ``timeout`` seconds (default: the transport's
        ``request_timeout``), the peer's error rebuilt (its PolykeyError subclass, section 5) if
        its handler failed, ConnectionClosedError
        if the connection closed first, MessageTooLargeError if ``body`` is too large.
        """
        if not isinstance(method, str) or not m.METHOD_RE.match(method):
            raise InvalidInputError(f"invalid method name {method!r}")
        try:
            payload = m.check_body(dict(body or {}))
        except (ProtocolViolationError, TypeError, ValueError) as e:
            raise InvalidInputError(f"request body cannot be sent: {e}") from None
        limit = self._transport.limits.request_timeout if timeout is None else timeout
        return await self._connection().request(method, payload, limit)

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time in seconds of the built-in ``ping`` method."""
        start = time.perf_counter()
        await self.request("ping", {}, timeout=timeout)
        return time.perf_counter() - start

    def close(self) -> None:
        """Close the connection to this peer now (a later connect() dials again)."""
        self._connection().close("closed locally")


class Transport(Service):
    """This node's end of every peer connection.

    ``async with Transport(keypair, host, port) as t``: listens on ``host:port`` (port 0
    picks a free port; :attr:`port` is the bound one), dials with :meth:`connect`, serves
    handlers added with :meth:`register`. No global state; logs under ``keynode.peers.transport``.
    """

    def __init__(
        self,
        keypair: KeyPair,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: TransportLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: crypto.Rng = crypto.random_bytes,
    ) -> None:
        self.keypair = keypair
        self.node_id = keypair.node_id
        self.host = host
        self._requested_port = port
        self.limits = limits or TransportLimits()
        #: bytes of messages being received on all connections (section 7)
        self.budget = RequestBudget(self.limits.request_budget)
        self._clock = clock
        self._rng = rng
        self._static = keypair.x25519_private
        self._handlers: HandlerRegistry[PeerCaller] = HandlerRegistry(m.METHOD_RE, _unknown_method)
        self._by_peer: dict[NodeId, Connection] = {}
        self._live: set[Connection] = set()
        #: connections in their handshake, oldest first (a dict used as an ordered set)
        self._handshaking: dict[Connection, None] = {}
        self._dialing: dict[NodeId, asyncio.Future[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self.port = 0
        self.register("ping", self._ping)

    # -- lifecycle -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifetime(self) -> AsyncIterator[None]:
        try:
            server = await asyncio.start_server(
                self._on_accept, self.host, self._requested_port, reuse_address=True, limit=READ_LIMIT
            )
        except OSError as e:
            reason = os.strerror(e.errno).lower() if e.errno and e.errno > 0 else (e.strerror or type(e).__name__)
            raise TransportError(f"cannot listen on TCP {self.host}:{self._requested_port}: {reason}") from None
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        log.info("transport %s listening on %s:%d", self.node_id, self.host, self.port)
        try:
            async with task_group() as tg:
                self._tg = tg
                try:
                    yield
                finally:  # then the group cancels every connection's task
                    self._closing = True
                    server.close()
                    for conn in [*self._live, *self._handshaking]:
                        conn.close("transport shutting down")
            await server.wait_closed()
        finally:
            memory.wipe(self._static)  # the Noise static key (derived from the seed): no handshake is left
        log.info("transport %s stopped", self.node_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handlers --------------------------------------------------------------

    def register(self, method: str, handler: PeerHandler) -> None:
        """Serve ``method``: ``await handler(ctx, body) -> body``, ``ctx.caller.node_id`` the peer's
        proven NodeId (keynode.handlers). Raising a PolykeyError sends the peer its
        ``{type, message, data}``; any other exception is logged and sent as an internal error."""
        self._handlers.register(method, handler, needs_unlock=False)

    async def _ping(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _dispatch(self, ctx: PeerContext, body: dict[str, Any]) -> Any:
        return await self._handlers.lookup(ctx.method).handler(ctx, body)

    # -- connections -----------------------------------------------------------

    def _new_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: NodeId | None
    ) -> Connection:
        peername = writer.get_extra_info("peername")
        address = (str(peername[0]), int(peername[1])) if peername else ("?", 0)
        session = NoiseSession(
            self.keypair,
            initiator=expected is not None,
            expected_peer=expected,
            static_private=self._static,
            max_message_size=self.limits.max_message_size,
            rng=self._rng,
        )
        return Connection(
            session, reader, writer, limits=self.limits, address=address,
            dispatcher=self._dispatch, clock=self._clock, budget=self.budget,
        )

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self._tg is None:
            writer.transport.abort()
            return
        inbound = [c for c in self._handshaking if not c.outbound and not c.closed]
        if len(inbound) >= self.limits.max_pending_handshakes:
            # Evict the oldest pending handshake rather than refuse the newcomer, so peers
            # that open connections and stall cannot lock honest peers out.
            inbound[0].close("evicted: too many pending handshakes", level=logging.WARNING)
        conn = self._new_connection(reader, writer, None)
        self._handshaking[conn] = None
        self._spawn(self._serve_inbound(conn))

    async def _serve_inbound(self, conn: Connection) -> None:
        try:
            try:
                await conn.handshake()
            except TransportError:
                return  # the connection logged why it closed
            finally:
                self._handshaking.pop(conn, None)
            if self._admit(conn):
                await self._run(conn)
        except Exception as e:  # noqa: BLE001 - last line of defence: log, drop this peer, keep serving
            log.error("inbound connection %r failed: %s", conn, describe(e))
            del e
            conn.close("internal error", graceful=False)

    async def _run(self, conn: Connection) -> None:
        try:
            await conn.run()
        finally:
            self._live.discard(conn)
            if conn.peer is not None and self._by_peer.get(conn.peer) is conn:
                del self._by_peer[conn.peer]

    def _admit(self, conn: Connection) -> bool:
        """Register an authenticated connection. One connection per peer pair: on a
        duplicate, both ends keep the same one and retire the other."""
        assert conn.peer is not None
        if self._closing:
            conn.close("transport shutting down")
            return False
        if len(self._live) >= self.limits.max_connections:
            conn.close("too many connections", level=logging.WARNING)
            return False
        log.info("connection %r established (%s)", conn, "outbound" if conn.outbound else "inbound")
        self._live.add(conn)
        existing = self._by_peer.get(conn.peer)
        if existing is None or existing.closed:
            self._by_peer[conn.peer] = conn
            return True
        if existing.outbound == conn.outbound:
            keep, retire = conn, existing  # same dialler: the newer one wins
        else:
            # Simultaneous dial: keep the connection dialled by the smaller NodeId.
            we_are_smaller = self.node_id.raw < conn.peer.raw
            keep, retire = (conn, existing) if conn.outbound == we_are_smaller else (existing, conn)
        self._by_peer[conn.peer] = keep
        retire.retiring = True
        return True

    async def connect(self, node_id: NodeId, host: str, port: int) -> Channel:
        """A channel to ``node_id`` at ``host:port``, reusing an open connection to it.

        Raises PeerUnreachableError (cannot connect), HandshakeError, or
        PeerIdentityMismatchError (the peer there proved another NodeId).
        """
        if self._closing or self._tg is None:
            raise TransportError("the transport is not running")
        if node_id == self.node_id:
            raise TransportError("cannot connect to ourselves")
        conn = self._by_peer.get(node_id)
        if conn is not None and not conn.closed:
            return Channel(self, conn)
        pending = self._dialing.get(node_id)
        if pending is not None:
            return Channel(self, await asyncio.shield(pending))
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._dialing[node_id] = fut
        try:
            conn = await self._dial(node_id, host, port)
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else ConnectionClosedError("dial cancelled"))
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._dialing[node_id]
        fut.set_result(conn)
        return Channel(self, conn)

    async def dial(self, node_id: NodeId, host: str, port: int) -> Channel:
        """A new connection to ``node_id`` at ``host:port``, even if one is open already.

        Proves that ``node_id`` answers at that address now (``pk nodes find``). The new
        connection replaces an open one to the same peer by the rule of section 6 (the
        other retires once idle). Raises as :meth:`connect`.
        """
        if self._closing or self._tg is None:
            raise TransportError("the transport is not running")
        if node_id == self.node_id:
            raise TransportError("cannot connect to ourselves")
        return Channel(self, await self._dial(node_id, host, port))

    async def _dial(self, node_id: NodeId, host: str, port: int) -> Connection:
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
        except (OSError, TimeoutError) as e:
            # asyncio's OSError says "Connect call failed (...)"; the errno's text is clearer
            reason = "timed out" if isinstance(e, TimeoutError) else (
                os.strerror(e.errno).lower() if e.errno else (e.strerror or type(e).__name__))
            raise PeerUnreachableError(f"cannot reach {node_id} at {host}:{port}: {reason}") from None
        conn = self._new_connection(reader, writer, node_id)
        self._handshaking[conn] = None
        try:
            await conn.handshake()
        except BaseException:  # failed (already closed), or the caller gave up: free the socket
            conn.close("dial abandoned", graceful=False)
            raise
        finally:
            self._handshaking.pop(conn, None)
        if not self._admit(conn):
            raise ConnectionClosedError(f"connection closed: {conn.close_reason}")
        self._spawn(self._run(conn))
        return conn

    def channel(self, node_id: NodeId) -> Channel | None:
        """The open channel to ``node_id``, if any (no dialling)."""
        conn = self._by_peer.get(node_id)
        return Channel(self, conn) if conn is not None and not conn.closed else None

    def stats(self) -> dict[str, int]:
        """Counts for status pages and leak checks: open connections, handshakes, tasks."""
        return {
            "connections": sum(1 for c in self._live if not c.closed),
            "handshaking": len(self._handshaking),
            "tasks": len(self._tasks),
        }

    def connections(self) -> list[dict[str, Any]]:
        """Open connections: peer NodeId, address, direction, age (s), bytes sent/received."""
        now = self._clock()
        return [
            {
                "peer": str(c.peer),
                "address": f"[{c.address[0]}]:{c.address[1]}" if ":" in c.address[0] else f"{c.address[0]}:{c.address[1]}",
                "direction": "outbound" if c.outbound else "inbound",
                "age": round(now - c.created, 3),
                "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received,
            }
            for c in sorted(self._live, key=lambda c: c.created)
            if not c.closed
        ]
