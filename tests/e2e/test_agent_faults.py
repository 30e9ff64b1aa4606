"""Bad input and faults against a real agent: garbage on the socket, concurrent writers, kill -9."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading

import pytest

from polykey import Client
from polykey.errors import AgentUnavailableError, PolykeyError

from ..conftest import Node
from .agent_util import alive, pk, ping, raw_connect, recv_frame, running_pid, send_frame, wait_for


@pytest.fixture
def agent(node: Node) -> Node:
    assert pk(node, "vaults", "create", "app").code == 0
    return node


def _closed_with_protocol_error(node: Node, payload: bytes) -> None:
    with raw_connect(node) as s:
        bystander = raw_connect(node)  # another client, connected before the bad one
        s.sendall(payload)
        reply = recv_frame(s)
        assert reply is not None and reply["id"] is None
        assert reply["error"]["type"] == "AgentProtocolError"  # type: ignore[index]
        assert recv_frame(s) is None  # closed
    with bystander:
        send_frame(bystander, {"v": 1, "id": 9, "method": "agent.ping", "params": {}})
        assert recv_frame(bystander) == {"id": 9, "result": {"pong": True}}


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", 9) + b"not json!",
        struct.pack(">I", 2) + b"[]",
        struct.pack(">I", 0xFFFFFFFF),
        struct.pack(">I", 1) + b"x",
        struct.pack(">I", 40) + b'{"v":7,"id":1,"method":"a.b","params":{}}'[:40],
    ],
    ids=["garbage", "not-an-object", "oversized", "undersized", "bad-version"],
)
def test_bad_frames_close_only_that_connection(agent: Node, payload: bytes) -> None:
    _closed_with_protocol_error(agent, payload)
    assert ping(agent)


def test_truncated_frame_and_half_header(agent: Node) -> None:
    for payload in (struct.pack(">I", 100) + b'{"v":1', b"\x00\x00"):
        s = raw_connect(agent)
        s.sendall(payload)
        s.close()
    assert ping(agent)
    wait_for(lambda: "truncated" in (agent.path / "agent.log").read_text(), what="truncation logged")


def test_unknown_method_keeps_the_connection(agent: Node) -> None:
    with raw_connect(agent) as s:
        send_frame(s, {"v": 1, "id": 1, "method": "no.such", "params": {}})
        reply = recv_frame(s)
        assert reply is not None and reply["error"]["type"] == "UnknownMethodError"  # type: ignore[index]
        send_frame(s, {"v": 1, "id": 2, "method": "secrets.get", "params": {"vault": "app", "path": "x", "bogus": 1}})
        reply = recv_frame(s)
        assert reply is not None and reply["id"] == 2 and reply["error"]["type"] == "InvalidInputError"  # type: ignore[index]
        send_frame(s, {"v": 1, "id": 3, "method": "agent.ping", "params": {}})
        assert recv_frame(s) == {"id": 3, "result": {"pong": True}}


def _writer(node: Node, name: str, stop: threading.Event, done: list[tuple[str, bytes]], errors: list[BaseException],
            autostart: bool = True) -> None:
    i = 0
    try:
        with Client(node.path, password_file=node.password_file, autostart=autostart) as c:
            while not stop.is_set():
                path, value = f"w/{name}/{i}", f"{name}-{i}".encode()
                c.set(f"app:{path}", value)
                done.append((path, value))  # reported done
                i += 1
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


def test_eight_concurrent_writers_lose_nothing(agent: Node) -> None:
    stop = threading.Event()
    done: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_writer, args=(agent, f"c{n}", stop, done, errors)) for n in range(8)]
    for t in threads:
        t.start()
    def each_wrote(n: int) -> bool:  # eight clients writing at once, each many times
        counts = [0] * 8
        for path, _ in list(done):
            counts[int(path.split("/")[1][1:])] += 1
        return min(counts) >= n or bool(errors)

    try:
        wait_for(lambda: each_wrote(50), timeout=120, what="every writer to report 50 writes")
    finally:
        stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len({p.split("/")[1] for p, _ in done}) == 8
    with Client(agent.path, password_file=agent.password_file) as c:
        listed = {e["path"] for e in c.list("app", "w", recursive=True) if e["type"] == "secret"}
        assert listed == {p for p, _ in done}
        for path, value in done:
            assert c.get(f"app:{path}") == value
    r = pk(agent, "vaults", "verify", "app")
    assert r.code == 0, r.err


def test_kill9_during_writes_keeps_every_reported_write(agent: Node) -> None:
    done: list[tuple[str, bytes]] = []
    for round_ in range(3):
        if round_:
            assert pk(agent, "agent", "start").code == 0
        stop = threading.Event()
        errors: list[BaseException] = []
        # autostart=False: a writer must not restart the agent we are about to kill
        threads = [threading.Thread(target=_writer, args=(agent, f"r{round_}c{n}", stop, done, errors, False))
                   for n in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: sum(1 for p, _ in done if p.startswith(f"w/r{round_}")) >= 10, what="some writes")
        pid = running_pid(agent)
        assert pid
        os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        stop.set()
        assert errors and all(isinstance(e, PolykeyError) for e in errors)  # the writers saw the agent die
        wait_for(lambda: running_pid(agent) is None, what="agent death")
    # The next command restarts the agent; every write reported done is there; the vault verifies.
    with Client(agent.path, password_file=agent.password_file) as c:
        for path, value in done:
            assert c.get(f"app:{path}") == value
    assert running_pid(agent) is not None
    r = pk(agent, "vaults", "verify", "app")
    assert r.code == 0, r.err
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=_repo_of(agent), capture_output=True)
    assert fsck.returncode == 0, fsck.stderr


def _repo_of(node: Node) -> str:
    repos = [p for p in (node.path / "vaults").iterdir() if p.is_dir() and (p / "HEAD").exists()]
    assert len(repos) == 1, repos
    return str(repos[0])


def test_agent_survives_client_killed_mid_request(agent: Node) -> None:
    s = raw_connect(agent)
    send_frame(s, {"v": 1, "id": 1, "method": "secrets.set", "params": {"vault": "app", "path": "k", "value": {"$b": "dg=="}}})
    s.close()  # gone before the answer
    assert ping(agent)
    assert pk(agent, "secrets", "get", "app:k").out == b"v"
    assert alive(running_pid(agent) or -1)


def test_leaked_idle_connections_do_not_lock_others_out(agent: Node) -> None:
    assert pk(agent, "secrets", "set", "app:k", input=b"v").code == 0
    with Client(agent.path, password_file=agent.password_file) as c:
        assert c.get("app:k") == b"v"  # an idle client, the oldest connection
        leaked = [raw_connect(agent) for _ in range(64)]  # a program leaking connections
        try:
            assert ping(agent)  # a new client still gets in: the oldest idle ones made room
            r = pk(agent, "secrets", "get", "app:k")
            assert (r.code, r.out) == (0, b"v"), r.err
            assert c.get("app:k") == b"v"  # the idle client reconnects by itself
            assert pk(agent, "agent", "stop", password=False).code == 0
        finally:
            for s in leaked:
                s.close()
    assert running_pid(agent) is None


def test_a_client_carries_on_after_the_agent_restarts(agent: Node) -> None:
    with Client(agent.path, password_file=agent.password_file) as c:
        c.set("app:k", b"1")
        assert pk(agent, "agent", "stop", password=False).code == 0
        with pytest.raises(AgentUnavailableError):
            c.get("app:k")  # its connection died with the agent (the request may not be resent)
        assert c.get("app:k") == b"1"  # the next call connects anew, starting the agent
    assert running_pid(agent) is not None
