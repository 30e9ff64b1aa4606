"""One peer connection: drives a sans-I/O :class:`~polykey.wire.session.NoiseSession` over
asyncio streams (docs/spec/transport.md sections 6-7).

A :class:`Connection` performs the handshake, then multiplexes requests in both
directions, answers keepalives, enforces every limit in :class:`TransportLimits`, and
closes with a logged reason on any violation, stall or timeout. It never raises out of
:meth:`Connection.run`; the owning :class:`~keynode.peers.transport.Transport` runs it in its
TaskGroup.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from keynode.failures import describe
from keynode.handlers import PeerCaller, PeerContext, internal_error
from keynode.memory import RequestBudget
from keynode.peers.transport.limits import TransportLimits
from polykey.errors import (
    ConnectionClosedError,
    HandshakeError,
    MessageTooLargeError,
    PeerBusyError,
    PolykeyError,
    ProtocolViolationError,
    RequestTimeoutError,
    TransportError,
)
from polykey.ids import NodeId
from polykey.wire import messages as m
from polykey.wire.session import Event, HandshakeComplete, MessageReceived, NoiseSession

log = logging.getLogger("keynode.peers.transport")

READ_SIZE = 256 * 1024
#: StreamReader limit: it stops reading the socket once it holds twice this. asyncio's 64 KiB
#: default stops (and restarts, two epoll calls) on every 256 KiB read at full speed.
READ_LIMIT = READ_SIZE
_EXPIRED_IDS = 1024
_SLACK = 1024 * 1024
Dispatcher = Callable[[PeerContext, dict[str, Any]], Awaitable[Any]]


class Connection:
    """A TCP connection to one peer, authenticated once :meth:`handshake` returns."""

    def __init__(
        self,
        session: NoiseSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: TransportLimits,
        address: tuple[str, int],
        dispatcher: Dispatcher,
        clock: Callable[[], float],
        budget: RequestBudget | None = None,
    ) -> None:
        self._session = session
        self._budget = budget if budget is not None else RequestBudget(limits.request_budget)
        self._charged = 0
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self.address = address
        self.outbound = session.initiator
        self._dispatch = dispatcher
        self._clock = clock
        self.peer: NodeId | None = None
        self.created = clock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed = False
        self.close_reason: str | None = None
        self.retiring = False
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._expired: OrderedDict[int, None] = OrderedDict()
        self._next_id = 1
        self._slots = asyncio.Semaphore(limits.max_inflight_requests)
        self._write_lock = asyncio.Lock()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._early: list[Event] = []
        self._last_sent = self.created
        self._last_work = self.created
        self._ping_nonce: int | None = None
        self._pings_sent = 0

    # -- lifecycle -------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Connection {self.peer or 'unauthenticated'} {self.address[0]}:{self.address[1]}>"

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._handlers)

    async def handshake(self) -> NodeId:
        """Run the Noise handshake; the peer's proven NodeId. Closes and raises on failure."""
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                self._flush()
                while self.peer is None:
                    data = await self._reader.read(READ_SIZE)
                    if not data:
                        raise HandshakeError("the peer closed the connection during the handshake")
                    self.bytes_received += len(data)
                    events = self._session.receive_data(data)
                    self._flush()
                    for ev in events:
                        if isinstance(ev, HandshakeComplete):
                            self.peer = ev.peer
                        else:
                            self._early.append(ev)
        except TimeoutError:
            self.close("handshake timed out", graceful=False)
            raise HandshakeError("handshake timed out") from None
        except TransportError as e:
            self.close(f"handshake failed: {e.message}", graceful=False)
            raise
        except OSError as e:
            self.close(f"handshake failed: {type(e).__name__}", graceful=False)
            raise HandshakeError("connection lost during the handshake") from None
        except Exception as e:  # noqa: BLE001 - a bug must not take the node down; it is logged
            log.error("handshake on %r failed unexpectedly: %s", self, describe(e))
            del e
            self.close("handshake failed: internal error", graceful=False)
            raise HandshakeError("handshake failed") from None
        if self.closed:
            raise ConnectionClosedError(self.close_reason)
        return self.peer

    async def run(self) -> None:
        """Serve the established connection until it closes. Never raises."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if not self.closed:
                    self._tasks = [tg.create_task(self._read_loop()), tg.create_task(self._keepalive())]
        except Exception as e:  # noqa: BLE001 - a bug must not take the node down; it is logged
            log.error("connection %r failed: %s", self, describe(e))
            del e
            self.close("internal error", graceful=False)
        finally:
            self.close("connection finished", graceful=False)

    def close(self, reason: str, *, graceful: bool = True, level: int = logging.INFO) -> None:
        """Close now, for ``reason`` (logged; sent to the peer if ``graceful``). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.log(level, "closing connection %r: %s", self, reason)
        transport = self._writer.transport
        if graceful and self._session.established:
            try:
                self._session.send(m.Close(reason[: m.MAX_TEXT]))
                self._flush()
            except (TransportError, OSError):
                pass
        if graceful and transport.get_write_buffer_size() == 0:
            transport.close()
        else:
            transport.abort()
        self._session.close()  # drops the partial message
        self._budget.release(self._charged)
        self._charged = 0
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosedError(f"connection closed: {reason}"))
        self._pending.clear()
        current = asyncio.current_task()
        for task in [*self._tasks, *self._handlers]:
            if task is not current:
                task.cancel()

    # -- sending ---------------------------------------------------------------

    def _flush(self) -> None:
        pieces = self._session.pieces_to_send()
        for data in pieces:
            self._writer.write(data)
            self.bytes_sent += len(data)
        if pieces:
            self._last_sent = self._clock()

    def _send_nowait(self, message: m.Message) -> None:
        """Write a small control message now (Pong, Busy, Ping), without waiting."""
        if self.closed:
            return
        self._session.send(message)
        self._flush()
        # Requests and answers wait for the buffer to drain before writing (see _send), so
        # the buffer only grows past one message if the peer stops reading.
        if self._writer.transport.get_write_buffer_size() > self._limits.max_message_size + _SLACK:
            self.close("the peer is not reading", graceful=False, level=logging.WARNING)

    async def _send(self, message: m.Message) -> None:
        """Write a request or an answer: first wait (bounded) until the peer has read what
        was written before, so at most about one message is ever buffered."""
        try:
            async with self._write_lock:
                if self.closed:
                    raise ConnectionClosedError(f"connection closed: {self.close_reason}")
                async with asyncio.timeout(self._limits.write_timeout):
                    await self._writer.drain()
                if self.closed:
                    raise ConnectionClosedError(f"connection closed: {self.close_reason}")
                self._session.send(message)
                self._flush()
        except TimeoutError:
            self.close("the peer stopped reading (write timed out)", graceful=False, level=logging.WARNING)
            raise ConnectionClosedError("the peer stopped reading") from None
        except OSError:
            self.close("connection lost while writing", graceful=False)
            raise ConnectionClosedError("connection lost") from None

    def _alloc_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = rid % m.MAX_ID + 1
            if rid not in self._pending:
                return rid

    async def request(self, method: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a request and await its answer; the peer's error rebuilt if its handler failed."""
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    if self.closed:
                        raise ConnectionClosedError(f"connection closed: {self.close_reason}")
                    rid = self._alloc_id()
                    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                    self._pending[rid] = fut
                    self._last_work = self._clock()
                    try:
                        await self._send(m.PeerRequest(rid, method, body))
                        return await fut
                    finally:
                        if self._pending.pop(rid, None) is not None:
                            self._expired[rid] = None
                            while len(self._expired) > _EXPIRED_IDS:
                                self._expired.popitem(last=False)
                        self._last_work = self._clock()
        except TimeoutError:
            raise RequestTimeoutError(f"no answer to {method!r} within {timeout:g}s") from None

    # -- receiving -------------------------------------------------------------

    async def _read_loop(self) -> None:
        for ev in self._early:
            if not self._on_event(ev):
                return
        self._early = []
        if not self._charge():  # what arrived with the end of the handshake
            return
        lim = self._limits
        loop = asyncio.get_running_loop()
        message_deadline: float | None = None  # the current message must be whole by then
        while not self.closed:
            mid = self._session.mid_message
            wait = lim.stall_timeout if mid else lim.idle_timeout
            if not mid:
                message_deadline = None
            elif message_deadline is None:
                message_deadline = loop.time() + lim.message_timeout
            if message_deadline is not None:
                wait = min(wait, message_deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await self._reader.read(READ_SIZE)
            except TimeoutError:
                if message_deadline is not None and loop.time() >= message_deadline:
                    what = f"did not send its message whole within {lim.message_timeout:g} s"
                else:
                    what = "stalled mid-message" if mid else "idle (no keepalive)"
                self.close(f"the peer {what}", graceful=not mid, level=logging.WARNING)
                return
            except OSError as e:
                self.close(f"connection lost: {type(e).__name__}", graceful=False)
                return
            if not data:
                self.close("the peer closed the connection" + (" mid-message" if mid else ""), graceful=False)
                return
            self.bytes_received += len(data)
            try:
                events = self._session.receive_data(data)
            except PolykeyError as e:
                self.close(e.message, graceful=False, level=logging.WARNING)
                return
            if not self._charge():
                return
            for ev in events:
                if not self._on_event(ev):
                    return

    def _charge(self) -> bool:
        """Charge the bytes this connection makes us hold for a partly received message to the
        listener's budget; False if they do not fit (the connection is then closed with the busy
        reply, section 7). What is charged is what arrived (and its buffer), never the length a
        peer announced: a few peers announcing 4 MiB and sending nothing must not take the
        whole budget and have every other peer's messages refused."""
        want = self._session.buffered
        if want <= self._charged:
            self._budget.release(self._charged - want, trim=False)  # (a whole message: its memory is reused)
            self._charged = want
            return True
        if not self._budget.reserve(want - self._charged):
            self.close("busy: too many request bytes buffered on this node; retry", level=logging.WARNING)
            return False
        self._charged = want
        return True

    def _on_event(self, ev: Event) -> bool:
        """Handle one event; False if the connection closed."""
        if not isinstance(ev, MessageReceived):
            self.close("unexpected handshake event", graceful=False, level=logging.WARNING)
            return False
        try:
            self._on_message(ev.message)
        except ProtocolViolationError as e:
            self.close(e.message, graceful=False, level=logging.WARNING)
        return not self.closed

    def _on_message(self, msg: m.Message) -> None:
        if isinstance(msg, m.PeerRequest):
            self._start_handler(msg)
        elif isinstance(msg, (m.PeerResponse, m.PeerError)):
            fut = self._pending.pop(msg.id, None)
            if fut is None:
                if msg.id in self._expired:
                    return  # the answer to a request that already timed out
                raise ProtocolViolationError("answer to an unknown request id")
            if fut.done():
                return
            if isinstance(msg, m.PeerResponse):
                fut.set_result(msg.body)
            else:
                fut.set_exception(m.rebuild_error(msg))
        elif isinstance(msg, m.Ping):
            self._send_nowait(m.Pong(msg.nonce))
        elif isinstance(msg, m.Pong):
            if msg.nonce != self._ping_nonce:
                raise ProtocolViolationError("unsolicited keepalive answer")
            self._ping_nonce = None
        else:
            reason = msg.reason if len(msg.reason) <= 100 else msg.reason[:97] + "..."  # quoted in our log
            self.close(f"the peer closed the connection: {reason!r}", graceful=False)

    # -- handlers --------------------------------------------------------------

    def _start_handler(self, req: m.PeerRequest) -> None:
        if len(self._handlers) >= self._limits.max_concurrent_handlers or self._tg is None:
            self._send_nowait(m.error_reply(req.id, PeerBusyError()))
            return
        task = self._tg.create_task(self._handle(req))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, req: m.PeerRequest) -> None:
        assert self.peer is not None
        self._last_work = self._clock()
        ctx = PeerContext(req.id, req.method, PeerCaller(self.peer))
        reply: m.Message
        try:
            async with asyncio.timeout(self._limits.handler_timeout):
                body = await self._dispatch(ctx, req.body)
            try:
                reply = m.PeerResponse(req.id, m.check_body(body))
            except ProtocolViolationError:
                raise TypeError(f"handler for {req.method!r} returned an unencodable body") from None
        except PolykeyError as e:
            reply = m.error_reply(req.id, e)
        except TimeoutError:
            reply = m.error_reply(req.id, RequestTimeoutError("the handler timed out"))
        except Exception as e:  # noqa: BLE001 - a handler bug is logged, the peer learns nothing more
            reply = m.error_reply(req.id, internal_error(log, ctx, e, "internal error"))
            del e
        try:
            try:
                await self._send(reply)
            except MessageTooLargeError as e:
                await self._send(m.error_reply(req.id, e))
        except TransportError:
            pass  # the connection is closing; its reason is already logged
        finally:
            self._last_work = self._clock()

    # -- keepalive and retirement ----------------------------------------------

    async def _keepalive(self) -> None:
        lim = self._limits
        tick = min(lim.keepalive_interval, lim.retire_grace) / 2
        while not self.closed:
            await asyncio.sleep(tick)
            now = self._clock()
            if self.retiring and not self.busy and now - self._last_work >= lim.retire_grace:
                self.close("duplicate connection retired")
                return
            if self._ping_nonce is None and now - self._last_sent >= lim.keepalive_interval:
                self._pings_sent += 1
                self._ping_nonce = self._pings_sent
                self._send_nowait(m.Ping(self._ping_nonce))
