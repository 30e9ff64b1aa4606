"""The agent's Unix socket: accept, check the peer's uid, frame, dispatch (docs/spec/agent-protocol.md).

Every connection is a task in the agent's task group. A peer of another uid is refused
and logged; a malformed, oversized or truncated frame closes that one connection with an
error; the agent keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from polykey.agent import paths, protocol
from polykey.errors import AgentPermissionError, AgentProtocolError, AgentUnavailableError, PolykeyError
from keynode.handlers import RequestContext

log = logging.getLogger("keynode.socket")

Dispatch = Callable[[RequestContext, dict[str, Any]], Awaitable[Any]]
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }

#: A client that announced a frame must deliver its body within this many seconds.
BODY_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
BACKLOG = 128


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
    ) -> None:
        self.path = path
        self._dispatch = dispatch
        self._tg = task_group
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._max_connections = max_connections
        self._max_frame = max_frame
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connections = 0

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
            if self._connections >= self._max_connections:
                log.warning("refused a connection from pid %d: %d connections open", pid, self._connections)
                _refuse(conn, AgentUnavailableError("the agent has too many open connections; retry"))
                continue
            self._connections += 1
            self._tg.create_task(self._serve(conn, pid, uid), name=f"agent-conn-{pid}")

    async def _serve(self, conn: socket.socket, pid: int, uid: int) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        try:
            await self._serve_frames(reader, writer, pid, uid)
        except AgentProtocolError as e:
            log.warning("closing connection from pid %d: %s", pid, e.message)
            await _send_quietly(writer, protocol.encode_error(None, e.to_wire()))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("connection from pid %d dropped", pid)
        finally:
            self._connections -= 1
            writer.close()

    async def _serve_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
        while True:
            try:
                header = await reader.readexactly(protocol.HEADER.size)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise AgentProtocolError("truncated frame header") from None
                return  # clean end of connection
            n = protocol.frame_length(header)
            if n > self._max_frame:
                raise AgentProtocolError(f"frame of {n} bytes exceeds the {self._max_frame}-byte limit")
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    body = await reader.readexactly(n)
            except (asyncio.IncompleteReadError, TimeoutError):
                raise AgentProtocolError("truncated frame") from None
            request = protocol.decode_request(body)
            await self._answer(request, writer, pid, uid)

    async def _answer(self, request: protocol.Request, writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
        async def progress(obj: Any) -> None:
            writer.write(protocol.encode_progress(request.id, obj))
            await writer.drain()

        ctx = RequestContext(request.id, request.method, uid, pid, progress)
        try:
            result = await self._dispatch(ctx, request.params)
            frame = protocol.encode_result(request.id, result)
        except PolykeyError as e:
            frame = _error_frame(request.id, e)
        except Exception:  # noqa: BLE001 - a handler bug must not take the agent down
            log.exception("internal error serving %s", request.method)
            frame = _error_frame(request.id, PolykeyError("internal error in the agent; see agent.log"))
        writer.write(frame)
        await writer.drain()


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
        await writer.drain()
    except (ConnectionError, OSError):
        pass
