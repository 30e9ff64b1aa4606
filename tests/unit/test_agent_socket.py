"""The agent's socket server in-process, on real Unix sockets: peer credentials and refusal."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from polykey.agent_client import protocol
from polykey.agent_client.client import connect
from polykey.errors import AgentPermissionError, AgentUnavailableError, PolykeyError, SecretNotFoundError
from keynode.handlers import HandlerRegistry, RequestContext
from keynode.agent.server import SocketServer, peer_credentials

from ..conftest import until


def test_peer_credentials_are_the_kernels() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())


async def _serve(tmp_path: Path, allowed_uid: int, client_fn: Any) -> tuple[Any, list[str]]:
    registry = HandlerRegistry()
    seen: list[str] = []

    async def echo(ctx: RequestContext, params: dict[str, Any]) -> Any:
        seen.append(ctx.method)
        await ctx.progress({"step": 1})
        return {"echo": params, "uid": ctx.caller.uid}

    async def missing(ctx: RequestContext, params: dict[str, Any]) -> Any:
        raise SecretNotFoundError("no secret 'x' in this vault")

    registry.register("test.echo", echo, needs_unlock=False)
    registry.register("test.missing", missing, needs_unlock=False)

    async def dispatch(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return await registry.lookup(ctx.method).handler(ctx, params)

    path = tmp_path / "agent.sock"
    async with asyncio.TaskGroup() as tg:
        server = SocketServer(path, dispatch, tg, allowed_uid=allowed_uid)
        async with server:
            assert (path.stat().st_mode & 0o777) == 0o600
            result = await asyncio.to_thread(client_fn, tmp_path)
        # leaving the server cancels the accept loop; connections end with their clients
    assert not path.exists()
    return result, seen


def test_owner_is_served_with_progress_and_errors(tmp_path: Path) -> None:
    def client(node: Path) -> Any:
        progress: list[Any] = []
        with connect(node) as c:
            out = c.call("test.echo", {"v": b"\x00"}, progress.append)
            try:
                c.call("test.missing")
            except SecretNotFoundError as e:
                err = e.message
        return out, progress, err

    (out, progress, err), seen = asyncio.run(_serve(tmp_path, os.getuid(), client))
    assert out == {"echo": {"v": b"\x00"}, "uid": os.getuid()}
    assert progress == [{"step": 1}] and err == "no secret 'x' in this vault"
    assert seen == ["test.echo"]


def test_other_uid_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def client(node: Path) -> Any:
        with connect(node) as c:
            with pytest.raises(AgentPermissionError):
                c.call("test.echo", {})
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(node / "agent.sock"))
        data = raw.recv(4096)
        raw.close()
        (n,) = struct.unpack(">I", data[:4])
        return json.loads(data[4 : 4 + n])

    with caplog.at_level("WARNING", logger="keynode.socket"):
        reply, seen = asyncio.run(_serve(tmp_path, os.getuid() + 1, client))
    assert reply["id"] is None and reply["error"]["type"] == "AgentPermissionError"
    assert seen == []  # no handler ever ran
    assert "refused a connection from uid" in caplog.text


def test_registry_rules() -> None:
    registry = HandlerRegistry()

    async def h(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return None

    registry.register("nodes.find", h)
    with pytest.raises(ValueError):
        registry.register("nodes.find", h)
    with pytest.raises(ValueError):
        registry.register("Bad Name", h)
    assert registry.lookup("nodes.find").needs_unlock is True
    assert protocol.MAX_METHOD >= 64


# -- bounds: one bad client cannot starve the others ---------------------------------------


def _raw(node: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(node / "agent.sock"))
    return s


def _frame(s: socket.socket) -> Any:
    """One frame's JSON, or None at end of file."""
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf[4 : 4 + struct.unpack(">I", buf[:4])[0]])


HELD, RELEASE = threading.Event(), threading.Event()


async def _serve_bounded(tmp_path: Path, client_fn: Any, **server: Any) -> Any:
    registry = HandlerRegistry()

    async def big(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return b"x" * (8 * 1024 * 1024)

    async def ping(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return {"pong": True}

    async def hold(ctx: RequestContext, params: dict[str, Any]) -> Any:
        HELD.set()
        await until(RELEASE.is_set, "the test to release test.hold", timeout=30)
        return {"held": True}

    registry.register("test.big", big, needs_unlock=False)
    registry.register("test.ping", ping, needs_unlock=False)
    registry.register("test.hold", hold, needs_unlock=False)

    async def dispatch(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return await registry.lookup(ctx.method).handler(ctx, params)

    async with asyncio.TaskGroup() as tg:
        async with SocketServer(tmp_path / "agent.sock", dispatch, tg, **server):
            result = await asyncio.to_thread(client_fn, tmp_path)
    return result


def test_idle_connections_make_room_and_their_clients_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from polykey.agent_client.session import AgentSession

    def client(node: Path) -> None:
        with AgentSession(node, autostart=False) as old:
            assert old.call("test.ping") == {"pong": True}  # now idle, and the oldest
            leaked = [_raw(node), _raw(node)]  # a client leaking connections fills the agent up
            with connect(node) as c:  # ... yet a new client gets in: the oldest idle one made room
                assert c.call("test.ping") == {"pong": True}
            assert old.call("test.ping") == {"pong": True}  # its client reconnected by itself
            for s in leaked:
                s.close()

    with caplog.at_level("INFO", logger="keynode.socket"):
        asyncio.run(_serve_bounded(tmp_path, client, max_connections=3))
    assert caplog.text.count("closed an idle connection") >= 1


def test_evicted_connection_gets_a_notice_and_is_never_read(tmp_path: Path) -> None:
    def client(node: Path) -> Any:
        first = _raw(node)
        second = _raw(node)
        with connect(node) as c:
            assert c.call("test.ping") == {"pong": True}
        notice = _frame(first)
        assert _frame(first) is None  # closed
        second.close()
        return notice

    notice = asyncio.run(_serve_bounded(tmp_path, client, max_connections=2))
    assert notice["id"] is None and notice["error"]["type"] == "AgentUnavailableError"
    assert notice["error"]["data"] == {"idleClosed": True}


def test_busy_connections_are_not_evicted(tmp_path: Path) -> None:
    HELD.clear()
    RELEASE.clear()

    def client(node: Path) -> Any:
        busy = _raw(node)
        busy.sendall(protocol.encode_request(1, "test.hold"))
        assert HELD.wait(10)  # the agent is working on it: not idle
        with connect(node) as c:
            with pytest.raises(AgentUnavailableError, match="busy"):
                c.call("test.ping")
        RELEASE.set()
        assert _frame(busy) == {"id": 1, "result": {"held": True}}
        busy.close()

    asyncio.run(_serve_bounded(tmp_path, client, max_connections=1))


def test_a_session_retries_while_every_connection_is_busy(tmp_path: Path) -> None:
    """Refused with the busy reply at the connection limit, the client waits and resends
    (issue 8 item 5) instead of failing at once."""
    import logging

    from polykey.agent_client.session import AgentSession

    HELD.clear()
    RELEASE.clear()
    refused = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "connections busy" in record.getMessage():
                refused.set()

    def release_once_refused() -> None:
        refused.wait(10)
        RELEASE.set()

    def client(node: Path) -> Any:
        busy = _raw(node)
        busy.sendall(protocol.encode_request(1, "test.hold"))
        assert HELD.wait(10)
        threading.Thread(target=release_once_refused).start()
        with AgentSession(node, autostart=False) as session:
            answer = session.call("test.ping")
        assert _frame(busy) == {"id": 1, "result": {"held": True}}
        busy.close()
        return answer

    spy = Spy()
    logging.getLogger("keynode.socket").addHandler(spy)
    try:
        assert asyncio.run(_serve_bounded(tmp_path, client, max_connections=1)) == {"pong": True}
    finally:
        logging.getLogger("keynode.socket").removeHandler(spy)
    assert refused.is_set()


def test_stalled_header_and_unread_responses_close_only_that_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from keynode.agent import server as socket_server

    monkeypatch.setattr(socket_server, "FRAME_TIMEOUT", 0.3)
    monkeypatch.setattr(socket_server, "WRITE_TIMEOUT", 0.3)

    def client(node: Path) -> Any:
        half = _raw(node)
        half.sendall(b"\x00\x00")  # half a header, then nothing
        reply = _frame(half)
        assert reply["error"]["type"] == "AgentProtocolError" and "truncated frame header" in reply["error"]["message"]
        assert _frame(half) is None
        half.close()

        greedy = _raw(node)  # asks for 8 MiB and never reads it
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.sendall(protocol.encode_request(1, "test.big"))
        deadline = time.monotonic() + 10
        while "did not read its response" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect(node) as c:
            assert c.call("test.ping") == {"pong": True}
        greedy.close()

    with caplog.at_level("INFO", logger="keynode.socket"):
        asyncio.run(_serve_bounded(tmp_path, client))
    assert "did not read its response" in caplog.text


def test_a_handler_bug_is_logged_without_its_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = HandlerRegistry()

    async def buggy(ctx: RequestContext, params: dict[str, Any]) -> Any:
        raise KeyError("db/zz-secret-" + "name")  # e.g. a lookup quoting a secret's path (split: the stack shows source lines)

    registry.register("test.buggy", buggy, needs_unlock=False)

    async def dispatch(ctx: RequestContext, params: dict[str, Any]) -> Any:
        return await registry.lookup(ctx.method).handler(ctx, params)

    def client(node: Path) -> str:
        with connect(node) as c:
            with pytest.raises(PolykeyError) as info:
                c.call("test.buggy")
        return info.value.message

    async def main() -> str:
        async with asyncio.TaskGroup() as tg:
            async with SocketServer(tmp_path / "agent.sock", dispatch, tg):
                return await asyncio.to_thread(client, tmp_path)

    with caplog.at_level("INFO", logger="keynode.socket"):
        message = asyncio.run(main())
    assert message == "internal error in the agent; see agent.log"
    assert "internal error serving test.buggy: KeyError" in caplog.text and "in buggy" in caplog.text
    assert "zz-secret-name" not in caplog.text


def test_a_silent_agent_does_not_hang_its_client(tmp_path: Path) -> None:
    HELD.clear()
    RELEASE.clear()

    def client(node: Path) -> str:
        with connect(node, reply_timeout=0.3) as c:
            try:
                with pytest.raises(AgentUnavailableError) as info:
                    c.call("test.hold")  # the agent never answers (stopped, stuck)
                with pytest.raises(AgentUnavailableError):
                    c.call("test.ping")  # that connection is finished, not confused
            finally:
                RELEASE.set()
        return info.value.message

    message = asyncio.run(_serve_bounded(tmp_path, client))
    assert message == "the agent sent nothing for 0.3 s (stopped or stuck? see agent.log)"
