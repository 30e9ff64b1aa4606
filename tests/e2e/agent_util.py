"""Helpers for tests that drive real agents through the real `pk` (tests/conftest.py stops them)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from polykey.agent_client import paths, protocol
from polykey.agent_client.spawn import alive

from ..conftest import Node, Result, agent_pid, base_env, run_pk

__all__ = ["alive", "no_password_env", "pk", "ping", "raw_connect", "recv_frame", "running_pid", "send_frame",
           "status", "wait_for"]


def pk(node: Node, *args: str | Path, cmd: list[str] | None = None, input: bytes | None = None,
       env: dict[str, str] | None = None, password: bool = True, timeout: float = 60) -> Result:
    """`pk ARGS --node-path N [--password-file F] [-- CMD...]`."""
    full: list[str | Path] = [*args, "--node-path", node.path]
    if password:
        full += ["--password-file", node.password_file]
    if cmd is not None:
        full += ["--", *cmd]
    return run_pk(*full, input=input, env=env, timeout=timeout)


def no_password_env(**extra: str) -> dict[str, str]:
    env = base_env(**extra)
    env.pop("PK_PASSWORD", None)
    return env


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until ``predicate()``; a liveness bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def status(node: Node) -> dict[str, object]:
    r = pk(node, "agent", "status", "--format", "json", password=False)
    assert r.code == 0, r.err
    data = r.json
    assert isinstance(data, dict)
    return data


def running_pid(node: Node) -> int | None:
    return agent_pid(node.path)


def raw_connect(node: Node) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(paths.socket_path(node.path))
    return s


def send_frame(s: socket.socket, obj: dict[str, object] | bytes) -> None:
    """One frame: ``obj`` encoded by the agent protocol, or a raw body (however malformed)."""
    s.sendall(protocol.HEADER.pack(len(obj)) + obj if isinstance(obj, bytes) else protocol.encode_frame(obj))


def recv_frame(s: socket.socket) -> dict[str, object] | None:
    """One frame, or None at EOF, read by the agent protocol's own rules."""
    def exact(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    header = exact(4)
    if header is None:
        return None
    body = exact(protocol.frame_length(header))
    assert body is not None
    return protocol.loads_object(body)


def ping(node: Node) -> bool:
    with raw_connect(node) as s:
        send_frame(s, {"v": 1, "id": 1, "method": "agent.ping", "params": {}})
        reply = recv_frame(s)
    return reply == {"id": 1, "result": {"pong": True}}

