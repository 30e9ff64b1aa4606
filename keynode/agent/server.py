"""The agent's Unix socket: accept, check the peer's uid, frame, dispatch (docs/spec/agent-protocol.md).

Every connection is a task in the agent's task group. A peer of another uid is refused
and logged; a malformed, oversized or truncated frame closes that one connection with an
error; the agent keeps serving everyone else.

Bounds (spec section 3 "Limits"): at most ``MAX_CONNECTIONS`` at once, one request in flight
per connection, a frame must arrive whole within ``FRAME_TIMEOUT`` of its first byte, the
frames being received on all connections together hold at most ``request_budget`` bytes (a
frame that does not fit gets the busy reply unread), and a response not taken within
``WRITE_TIMEOUT`` closes the connection. At the connection limit the longest-idle connection
is closed (with a notice its client reconnects on) to make room, so a client that leaks idle
connections cannot lock the others out. Whatever serving one connection raises ends that
connection only, with one line in the log (:mod:`keynode.failures`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from polykey.agent_client import paths, protocol
from polykey.crypto import memory
from polykey.errors import AgentPermissionError, AgentProtocolError, AgentUnavailableError, PolykeyError
from keynode.failures import describe
from keynode.handlers import AgentContext, LocalCaller, internal_error
from keynode.memory import REQUEST_BUDGET, RequestBudget

log = logging.getLogger("keynode.socket")

Dispatch = Callable[[AgentContext, dict[str, Any]], Awaitable[Any]]
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }

#: Once the first byte of a frame arrived, the whole frame must arrive within this many seconds.
FRAME_TIMEOUT = 10.0
#: A client must take a response within this many seconds or its connection is closed.
WRITE_TIMEOUT = 30.0
#: Progress messages are skipped (not queued) while this many bytes wait unread by the client.
PROGRESS_BACKLOG = 64 * 1024
MAX_CONNECTIONS = 64
BACKLOG = 128
#: Bytes read from the socket at a time while a frame body arrives.
READ_CHUNK = 256 * 1024


def busy_error(reason: str) -> AgentUnavailableError:
    """The busy reply (spec section 3 "Limits"): the request was not read; retry shortly."""
    return AgentUnavailableError(f"the agent is busy ({reason}); retry", busy=True)


class _Busy(Exception):
    """The frame just announced does not fit in the request budget."""


class _Stalled(Exception):
    """The client did not take a response within WRITE_TIMEOUT."""


class _Connection:
    """What the accept loop knows about one open connection (to pick an idle one to close)."""

    __slots__ = ("pid", "sock", "idle", "last_active", "evicted", "writer")

    def __init__(self, pid: int, sock: socket.socket, now: float) -> None:
        self.pid = pid
        self.sock = sock
        self.idle = True  # waiting for the first byte of a request (a new connection is idle too)
        self.last_active = now
        self.evicted = False
        self.writer: asyncio.StreamWriter | None = None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class SocketServer:
    """Serves ``dispatch`` on ``path`` while entered; connections run in ``task_group``."""

    def __init__(
        self,
        path: Path,
        dispatch: Dispatch,
        task_group: asyncio.TaskGroup,
        *,
        allowed_uid: int | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_frame: int = protocol.MAX_FRAME,
        request_budget: int = REQUEST_BUDGET,
    ) -> None:
        self.path = path
        self._dispatch = dispatch
        self._tg = task_group
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._max_connections = max_connections
        self._max_frame = max_frame
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connections: set[_Connection] = set()
        self.budget = RequestBudget(request_budget)

    async def __aenter__(self) -> SocketServer:
        self.path.unlink(missing_ok=True)  # we hold the agent lock: any socket here is stale
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with paths.UnixAddress(str(self.path)) as address:
                listener.bind(address.address)
        except OSError as e:
            listener.close()
            raise AgentUnavailableError(f"cannot listen on {self.path}: {e.strerror}") from None
        except BaseException:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        listener.listen(BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._accept_task = self._tg.create_task(self._accept_loop(listener), name="agent-accept")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as e:  # e.g. EMFILE: keep serving the connections we have
                log.warning("accept failed: %s", e.strerror)
                await asyncio.sleep(0.1)
                continue
            try:
                pid, uid, _gid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid != self.allowed_uid:
                log.warning("refused a connection from uid %d (pid %d): not the agent's owner", uid, pid)
                _refuse(conn, AgentPermissionError())
                continue
            if len(self._connections) >= self._max_connections and not self._close_idle():
                log.warning("refused a connection from pid %d: %d connections busy", pid, len(self._connections))
                _refuse(conn, busy_error("too many busy connections"))
                continue
            state = _Connection(pid, conn, time.monotonic())
            self._connections.add(state)
            self._tg.create_task(self._serve(conn, state, uid), name=f"agent-conn-{pid}")

    def _close_idle(self) -> bool:
        """Close the longest-idle connection to make room; False if every connection is busy.

        An idle connection is waiting for the first byte of its next request; once marked
        evicted it never reads one, so its client can safely resend on a new connection.
        """
        idle = [c for c in self._connections if c.idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        victim.evicted = True
        self._connections.discard(victim)
        log.info("closed an idle connection of pid %d to make room (%d open)", victim.pid, len(self._connections))
        notice = AgentUnavailableError("the agent closed this idle connection to make room; reconnect", idleClosed=True)
        frame = protocol.encode_error(None, notice.to_wire())
        if victim.writer is not None:
            victim.writer.write(frame)
            victim.writer.close()
        else:  # its task has not started yet; it closes the socket when it does
            try:
                victim.sock.send(frame)  # a few bytes into an empty, non-blocking socket buffer
            except OSError:
                pass
        return True

    async def _serve(self, conn: socket.socket, state: _Connection, uid: int) -> None:
        pid = state.pid
        if state.evicted:
            conn.close()
            return
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except BaseException as e:
            self._connections.discard(state)
            conn.close()
            if not isinstance(e, Exception):
                raise  # cancelled: the agent is stopping
            log.warning("dropped a connection from pid %d before it was served: %s", pid, describe(e))
            return
        state.writer = writer
        if state.evicted:  # closed to make room while the stream was being set up
            writer.close()
            return
        try:
            await self._serve_frames(reader, writer, state, uid)
        except AgentProtocolError as e:
            log.warning("closing connection from pid %d: %s", pid, e.message)
            await _send_quietly(writer, protocol.encode_error(None, e.to_wire()))
        except _Busy:
            log.warning("refused a frame from pid %d: %d of %d request bytes buffered",
                        pid, self.budget.used, self.budget.limit)
            await _send_quietly(writer, protocol.encode_error(None, busy_error("too many request bytes buffered").to_wire()))
        except _Stalled:
            log.warning("closing connection from pid %d: it did not read its response within %g s", pid, WRITE_TIMEOUT)
            writer.transport.abort()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("connection from pid %d dropped", pid)
        except Exception as e:  # noqa: BLE001 - the guard of this one connection: log one line, close it
            log.error("closing connection from pid %d after an internal error: %s", pid, describe(e))
            del e  # its traceback holds this connection's frames and buffers
            writer.transport.abort()
        finally:
            self._connections.discard(state)
            writer.close()

    async def _serve_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection, uid: int
    ) -> None:
        while True:
            state.idle, state.last_active = True, time.monotonic()
            try:
                first = await reader.readexactly(1)
            except asyncio.IncompleteReadError:
                return  # clean end of connection
            state.idle = False
            if state.evicted:
                return  # closed to make room: this request is never read (the client resends it)
            request = await self._read_request(reader, first)
            await self._answer(request, writer, state.pid, uid)

    async def _read_request(self, reader: asyncio.StreamReader, first: bytes) -> protocol.AgentRequest:
        """The rest of a frame whose first byte arrived, decoded; charged to the budget meanwhile.

        Driven through the protocol's frame decoder, never reading past this one frame: its
        announced length is charged before its body is read. The body's buffer is emptied on the
        way out, whatever happens: an exception's traceback (which holds this frame) must not
        keep megabytes alive.
        """
        decoder = protocol.AgentFrameDecoder(self._max_frame)
        frames: list[bytearray] = []
        charged = 0
        try:
            try:
                async with asyncio.timeout(FRAME_TIMEOUT):
                    frames = decoder.feed(first)
                    while not frames:
                        if decoder.announced is not None and not charged:
                            if not self.budget.reserve(decoder.announced):
                                raise _Busy
                            charged = decoder.announced
                        chunk = await reader.read(min(decoder.wanted, READ_CHUNK))
                        if not chunk:
                            raise AgentProtocolError("truncated frame" if charged else "truncated frame header")
                        frames = decoder.feed(chunk)
                        del chunk
            except TimeoutError:
                raise AgentProtocolError("truncated frame" if charged else "truncated frame header") from None
            return protocol.decode_request(frames[0])
        finally:
            for body in frames:
                body.clear()
            decoder.clear()
            self.budget.release(charged)

    async def _answer(self, request: protocol.AgentRequest, writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
        async def progress(obj: Any) -> None:
            # Best effort and never blocking: a client that stopped reading must not stall the
            # operation (it may hold a vault's write lock); the final response is what counts.
            if writer.is_closing() or writer.transport.get_write_buffer_size() > PROGRESS_BACKLOG:
                return
            writer.write(protocol.encode_progress(request.id, obj))

        ctx = AgentContext(request.id, request.method, LocalCaller(uid, pid), progress)
        try:
            result = await self._dispatch(ctx, request.params)
            memory.wipe_values(request.params)  # values written by this request: used by now
            frame = protocol.encode_result(request.id, result)
            memory.wipe_values(result)  # values read for this reply: gone once encoded
        except PolykeyError as e:
            memory.wipe_values(request.params)  # the handler is done with them (cancelled ones may not be)
            frame = _error_frame(request.id, e)
        except Exception as e:  # noqa: BLE001 - a handler bug must not take the agent down
            frame = _error_frame(request.id, internal_error(log, ctx, e, "internal error in the agent; see agent.log"))
            del e
        writer.write(frame)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except TimeoutError:
            raise _Stalled from None


def _error_frame(request_id: int, e: PolykeyError) -> bytes:
    try:
        return protocol.encode_error(request_id, e.to_wire())
    except (TypeError, ValueError, AgentProtocolError):
        return protocol.encode_error(request_id, {"type": type(e).__name__, "message": e.message, "data": {}})


def _refuse(conn: socket.socket, error: PolykeyError) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(0.5)
        conn.sendall(protocol.encode_error(None, error.to_wire()))
    except OSError:
        pass
    finally:
        conn.close()


async def _send_quietly(writer: asyncio.StreamWriter, frame: bytes) -> None:
    try:
        writer.write(frame)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
    except TimeoutError:
        writer.transport.abort()  # not read: do not keep it for a flush that never comes
    except (ConnectionError, OSError):
        pass
