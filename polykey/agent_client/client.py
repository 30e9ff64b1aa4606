"""A blocking client for the agent socket (docs/spec/agent-protocol.md).

C modules of the standard library only (``_socket`` rather than ``socket.py``, which
imports ``enum`` and ``selectors``): this is what the ``pk`` fast path and
:class:`polykey.Client` use. One connection, requests one at a time, progress
messages passed to a callback. The error table (:mod:`polykey.errors`) is imported
only when an error is raised.
"""

from __future__ import annotations

import _socket
import errno

from polykey.agent_client import LazyError, is_error, paths, protocol

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    from os import PathLike

    from polykey.errors import AgentPermissionError, AgentProtocolError, AgentUnavailableError

    ProgressCallback: TypeAlias = Callable[[Any], None]
else:
    AgentPermissionError = LazyError("AgentPermissionError")
    AgentProtocolError = LazyError("AgentProtocolError")
    AgentUnavailableError = LazyError("AgentUnavailableError")
    ProgressCallback = "Callable[[Any], None]"

_RECV = 256 * 1024
#: Seconds a request may go without any message from the agent (long operations send progress
#: about once a second, spec section 4) before the client gives up: a stopped or stuck agent
#: must not hang a deploy job forever.
REPLY_TIMEOUT = 120.0


class AgentClient:
    """A connection to the agent of one node. Use :func:`connect` to make one."""

    def __init__(self, sock: _socket.socket, node_path: str, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self._sock = sock
        self.node_path = node_path
        self.reply_timeout = reply_timeout
        self._next_id = 1
        self._decoder = protocol.AgentFrameDecoder()
        self._frames: list[bytearray] = []

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, progress: ProgressCallback | None = None) -> Any:
        """Send one request and wait for its final response; a remote error is raised rebuilt."""
        request_id = self._next_id
        self._next_id += 1
        frame = protocol.encode_request(request_id, method, params)
        try:
            self._sock.settimeout(self.reply_timeout)
        except OSError:
            raise AgentUnavailableError("the connection to the agent is closed") from None
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise self._silent() from None
        except OSError:
            # The agent may have refused us with an error frame before closing: surface it.
            raise self._pending_error() from None
        while True:
            response = protocol.decode_response(self._read_frame())
            if response.id is not None and response.id != request_id:
                raise AgentProtocolError(f"response for unknown request id {response.id}")
            if response.kind == "result":
                return response.body
            if response.kind == "error":
                raise _remote_error(response.body)
            if progress is not None:
                progress(response.body)

    def _silent(self) -> AgentUnavailableError:
        self.close()  # a late answer must not be taken for the next request's
        return AgentUnavailableError(
            f"the agent sent nothing for {self.reply_timeout:g} s (stopped or stuck? see agent.log)"
        )

    def _pending_error(self) -> Exception:
        try:
            response = protocol.decode_response(self._read_frame())
        except Exception as e:  # noqa: BLE001 - whatever it is, the agent is gone
            return e if is_error(e, "AgentUnavailableError") else AgentUnavailableError()
        if response.kind == "error":
            return _remote_error(response.body)
        return AgentUnavailableError("the agent closed the connection")

    def _read_frame(self) -> bytearray:
        """The next frame's body, through the protocol's frame decoder (the server drives it too)."""
        while not self._frames:
            try:
                chunk = self._sock.recv(_RECV)
            except TimeoutError:
                raise self._silent() from None
            except OSError:
                chunk = b""
            if not chunk:
                if self._decoder.pending:
                    raise AgentProtocolError("the agent closed the connection in the middle of a message")
                raise AgentUnavailableError("the agent closed the connection (it stopped or crashed; see agent.log)")
            self._frames = self._decoder.feed(chunk)
        return self._frames.pop(0)


def _remote_error(body: Any) -> Exception:
    from polykey.errors import from_wire

    return from_wire(body)


def connect(node_path: str | PathLike[str], timeout: float = 5.0, reply_timeout: float = REPLY_TIMEOUT) -> AgentClient:
    """Connect to the agent of ``node_path``; AgentUnavailableError when none listens."""
    node = paths.fspath(node_path)
    address = paths.UnixAddress(paths.socket_path(node))
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.address)
        sock.settimeout(None)
    except OSError as e:
        sock.close()
        if e.errno in (errno.EACCES, errno.EPERM):
            raise AgentPermissionError(f"no permission to use the agent socket of {node}") from None
        raise AgentUnavailableError(f"no agent is running for {node}") from None
    finally:
        address.close()
    return AgentClient(sock, node, reply_timeout)


def call_once(node_path: str | PathLike[str], method: str, params: dict[str, Any] | None = None) -> Any:
    """Connect, make one request, close."""
    with connect(node_path) as client:
        return client.call(method, params)


__all__ = ["AgentClient", "connect", "call_once"]
