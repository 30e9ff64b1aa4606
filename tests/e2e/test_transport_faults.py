"""Bad input and faults against a live transport node in its own process.

Each attack must close only its own connection, with a reason in the node's log,
and the node must keep serving (checked with a real authenticated ping after each).
Every test gets a node of its own and sets up what it asserts on: under ``-n auto`` no
test can count on another having run against the same node first.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keynode.peers.transport import Transport
from polykey.errors import PeerIdentityMismatchError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import messages as m
from polykey.wire.frames import encode_frame
from polykey.wire.session import NoiseSession

from .. import noise_client
from ..noise_client import raw_frame

NODE_SCRIPT = Path(__file__).with_name("transport_node.py")
NODE_KEY = KeyPair.from_seed(b"\x11" * 32)
CLIENT_KEY = KeyPair.from_seed(b"\x22" * 32)
MAX_MESSAGE = 100_000
LIMITS: dict[str, float] = {
    "handshake_timeout": 1.5,
    "stall_timeout": 1.0,
    "message_timeout": 3.0,
    "keepalive_interval": 0.5,
    "idle_timeout": 2.0,
    "max_message_size": MAX_MESSAGE,
}
WAIT = 10.0  # generous upper bound for the node to close a connection (not a timing assertion)


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    port: int
    node_id: NodeId
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} not logged; log:\n{self.log()[-3000:]}"
            time.sleep(0.02)


@pytest.fixture
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    log_path = tmp_path_factory.mktemp("node") / "node.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), NODE_KEY.seed.hex(), json.dumps(LIMITS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    assert line[:1] == ["READY"], f"node failed to start: {log_path.read_text()}"
    yield Node(proc, int(line[1]), NodeId.from_text(line[2]), log_path)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=WAIT) == 0
    assert "Traceback" not in log_path.read_text()


def node_serves(node: Node) -> dict[str, Any]:
    """An authenticated ping and a stats request from a fresh Transport; the node's stats."""

    async def go() -> dict[str, Any]:
        async with Transport(CLIENT_KEY) as t:
            ch = await t.connect(node.node_id, "127.0.0.1", node.port)
            await ch.ping(timeout=WAIT)
            return await ch.request("stats", {}, timeout=WAIT)

    return asyncio.run(go())


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection (fails on WAIT timeout)."""
    sock.settimeout(WAIT)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except TimeoutError:
            pytest.fail("the node did not close the connection")
        if not chunk:
            return got
        got += chunk


def handshaken(node: Node) -> tuple[socket.socket, NoiseSession]:
    """A raw socket that completed a real handshake, driven by the sans-I/O NoiseSession."""
    return noise_client.handshaken(CLIENT_KEY, node.node_id, node.port, timeout=WAIT)


def test_node_serves_an_authenticated_ping(node: Node) -> None:
    stats = node_serves(node)
    assert stats["connections"] == 1 and stats["handshaking"] == 0


def test_mutual_authentication_across_processes(node: Node) -> None:
    async def go() -> None:
        async with Transport(CLIENT_KEY) as t:
            with pytest.raises(PeerIdentityMismatchError):
                await t.connect(KeyPair.from_seed(b"\x33" * 32).node_id, "127.0.0.1", node.port)
            ch = await t.connect(node.node_id, "127.0.0.1", node.port)
            assert ch.peer == node.node_id
            answer = await ch.request("echo", {"k": b"v"})
            assert answer == {"peer": str(CLIENT_KEY.node_id), "body": {"k": b"v"}}

    asyncio.run(go())


@given(garbage=st.binary(min_size=1, max_size=2000))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_close_only_that_connection(node: Node, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)


@given(
    first=st.binary(min_size=32, max_size=32),
    rest=st.binary(max_size=400),
    then_half=st.booleans(),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_well_framed_random_handshakes_close_only_that_connection(
    node: Node, first: bytes, rest: bytes, then_half: bool
) -> None:
    """A first frame of the right size (random key), then random bytes or a right-sized frame."""
    third = encode_frame((rest * 200)[:161]) if then_half and rest else rest
    with socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) as sock:
        sock.sendall(encode_frame(first) + third)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)


def test_node_still_serves_after_garbage_and_frees_everything(node: Node) -> None:
    rng = random.Random(8)
    garbage = [rng.randbytes(rng.randint(1, 2000)) for _ in range(20)]
    garbage += [encode_frame(rng.randbytes(32)) + rng.randbytes(rng.randint(0, 400)) for _ in range(20)]
    garbage += [encode_frame(rng.randbytes(32)) + encode_frame(rng.randbytes(161)) for _ in range(10)]
    for data in garbage:  # each closed by the node (read_until_closed waits for that) before the next
        with socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            read_until_closed(sock)
    stats = node_serves(node)
    assert stats == {"connections": 1, "handshaking": 0, "tasks": 1}


@pytest.mark.parametrize(
    "prefix,reason",
    [
        (b"\xff\xff" + b"x" * 100, "frame length 65535 outside 32..32"),
        ((33).to_bytes(2, "big") + b"y" * 33, "frame length 33 outside 32..32"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame length"),
    ],
)
def test_oversized_or_foreign_first_frame_closes_with_logged_reason(node: Node, prefix: bytes, reason: str) -> None:
    before = node.log().count(reason)
    with socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) as sock:
        sock.sendall(prefix)  # no shutdown: the node must close on its own
        read_until_closed(sock)
    node.wait_for_log(reason, before + 1)
    node_serves(node)


def attack_bytes(kind: str, sock: socket.socket, s: NoiseSession) -> bytes:
    if kind == "random":
        return b"\x00\x40" + bytes(range(64))
    if kind == "replayed":
        s.send(m.PeerRequest(1, "echo", {"n": 1}))
        frame = s.data_to_send()
        sock.sendall(frame)
        while not (events := s.receive_data(sock.recv(65536))):
            pass
        assert isinstance(events[0].message, m.PeerResponse)  # type: ignore[union-attr]
        return frame
    if kind == "reordered":
        s.send(m.Ping(1))
        first = s.data_to_send()
        s.send(m.Ping(2))
        return s.data_to_send() + first
    if kind == "oversized":
        return raw_frame(s, (MAX_MESSAGE + 1).to_bytes(4, "big") + b"z" * 100)
    if kind == "unknown-type":
        body = msgpack.packb([2, 42, "?"])
        return raw_frame(s, len(body).to_bytes(4, "big") + body)
    if kind == "bad-schema":
        body = msgpack.packb([2, m.T_REQUEST, 0, "echo", {}])
        return raw_frame(s, len(body).to_bytes(4, "big") + body)
    if kind in ("forged-mid-message", "truncated-mid-message"):
        s.send(m.PeerRequest(1, "echo", {"b": bytes(90_000)}))  # two frames
        data = bytearray(s.data_to_send())
        second = 2 + int.from_bytes(data[:2], "big")
        if kind == "forged-mid-message":
            data[second + 1000] ^= 1
            return bytes(data)
        # the first frame loses 100 bytes: its length swallows the start of the second
        return bytes(data[: second - 100] + data[second:])
    if kind == "unknown-answer":
        s.send(m.PeerResponse(77, {}))
        return s.data_to_send()
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("random", "failed authentication"),
        ("replayed", "replayed or reordered"),
        ("reordered", "replayed or reordered"),
        ("oversized", "message length 100001 outside 1..100000"),
        ("unknown-type", "unknown message type"),
        ("bad-schema", "malformed message: request id out of range"),
        ("unknown-answer", "answer to an unknown request id"),
        ("forged-mid-message", "failed authentication"),
        ("truncated-mid-message", "failed authentication"),
    ],
)
def test_bad_transport_messages_close_with_logged_reason(node: Node, kind: str, reason: str) -> None:
    before = node.log().count(reason)
    sock, s = handshaken(node)
    with sock:
        sock.sendall(attack_bytes(kind, sock, s))
        read_until_closed(sock)
    node.wait_for_log(reason, before + 1)
    node_serves(node)


@pytest.mark.parametrize(
    "stage,reason",
    [
        ("connect-only", "handshake timed out"),
        ("after-message-1", "handshake timed out"),
        ("half-of-message-1", "handshake timed out"),
        ("mid-message", "the peer stalled mid-message"),
        ("mid-frame", "the peer stalled mid-message"),
        ("silent-after-handshake", "the peer idle (no keepalive)"),
    ],
)
def test_stalled_peers_time_out_and_are_freed(node: Node, stage: str, reason: str) -> None:
    before = node.log().count(reason)
    if stage in ("mid-message", "mid-frame", "silent-after-handshake"):
        sock, s = handshaken(node)
        if stage == "mid-message":
            s.send(m.PeerRequest(1, "echo", {"b": b"q" * 90_000}))  # two frames
            sock.sendall(s.data_to_send()[:65537])  # only the first
        elif stage == "mid-frame":
            s.send(m.Ping(1))
            sock.sendall(s.data_to_send()[:-3])
        # silent: never answer the node's keepalive pings
    else:
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=WAIT)
        s = NoiseSession(CLIENT_KEY, initiator=True)
        first = s.data_to_send()
        if stage == "after-message-1":
            sock.sendall(first)
        elif stage == "half-of-message-1":
            sock.sendall(first[:10])
    with sock:
        read_until_closed(sock)
    node.wait_for_log(reason, before + 1)
    assert node_serves(node) == {"connections": 1, "handshaking": 0, "tasks": 1}


def test_a_message_trickled_a_byte_per_stall_timeout_is_closed_at_its_deadline(node: Node) -> None:
    """A peer that sends one byte of its message every half stall timeout never trips the stall
    timer; without a deadline for the whole message it would hold its buffer (and its share of
    the node's request budget) for ever. The message must arrive whole within message_timeout."""
    reason = "the peer did not send its message whole within"
    sock, s = handshaken(node)
    with sock:
        s.send(m.PeerRequest(1, "echo", {"b": b"q" * 90_000}))  # two frames
        data = s.data_to_send()
        sock.sendall(data[:65537])  # the first frame...
        sent = 65537
        deadline = time.monotonic() + 4 * WAIT
        while reason not in node.log() and sent < len(data) and time.monotonic() < deadline:
            try:
                sock.sendall(data[sent : sent + 1])  # ...then a byte per half stall timeout (the attack's pace)
            except OSError:
                break
            sent += 1
            time.sleep(LIMITS["stall_timeout"] / 2)
        node.wait_for_log(reason)
    assert node_serves(node) == {"connections": 1, "handshaking": 0, "tasks": 1}


def test_many_concurrent_stalled_handshakes_do_not_block_real_peers(node: Node) -> None:
    socks = [socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) for _ in range(20)]
    try:
        stats = node_serves(node)
        assert stats["connections"] == 1
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("point", [bytes(32), bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")])
def test_low_order_ephemeral_key_closes_that_connection_only(node: Node, point: bytes) -> None:
    reason = "handshake failed: handshake message failed authentication"
    before = node.log().count(reason)
    with socket.create_connection(("127.0.0.1", node.port), timeout=WAIT) as sock:
        sock.sendall(encode_frame(point))
        read_until_closed(sock)
    node.wait_for_log(reason, before + 1)
    assert node_serves(node) == {"connections": 1, "handshaking": 0, "tasks": 1}
