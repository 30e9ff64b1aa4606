"""The agent's socket server in-process, on real Unix sockets: peer credentials and refusal."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from polykey.agent import protocol
from polykey.agent.client import connect
from polykey.errors import AgentPermissionError, SecretNotFoundError
from keynode.handlers import HandlerRegistry, RequestContext
from keynode.socket_server import SocketServer, peer_credentials


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
        return {"echo": params, "uid": ctx.peer_uid}

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
