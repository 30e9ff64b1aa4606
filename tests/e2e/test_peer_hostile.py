"""Hostile input on a live agent's peer port (issue 8 items 1 and 2): transport TCP and DHT UDP.

The agent (real `python -m keynode`, started by `pk`) listens for peers on TCP and UDP at one
port. A corpus of hostile transport messages (each on its own authenticated connection) and of
hostile DHT datagrams must leave it serving: an authenticated transport ping, a DHT ping, and
`pk secrets get`, with no traceback and none of the hostile values in its log; a burst of
partial 4 MiB messages must not keep its memory.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

from keynode.peers.transport import Transport
from polykey.errors import ConnectionClosedError, PeerBusyError, UnknownPeerMethodError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg
from polykey.wire import messages as m
from polykey.wire.frames import encode_frame
from polykey.wire.session import DEFAULT_MAX_MESSAGE, MAX_CHUNK, NoiseSession

from ..conftest import Node
from ..noise_client import handshaken
from .agent_util import pk, running_pid, status, wait_for
from .hostile import MARKER, dht_datagrams, transport_messages
from .test_agent_hostile import _log, _rss_mib, _serves, _started, burst_then_rss_back

CLIENT = KeyPair.from_seed(b"\x5a" * 32)
WAIT = 10.0
MIB = 1 << 20


def _peer(node: Node) -> tuple[NodeId, int]:
    st = status(node)
    peer = st["peer"]
    assert isinstance(peer, dict) and isinstance(peer.get("port"), int), st
    return NodeId.from_text(str(st["nodeId"])), peer["port"]


def _handshaken(node_id: NodeId, port: int, key: KeyPair = CLIENT) -> tuple[socket.socket, NoiseSession]:
    return handshaken(key, node_id, port, timeout=WAIT)


def _message_frames(s: NoiseSession, plaintext: bytes, announced: int | None = None) -> list[bytes]:
    """``plaintext`` as one transport message (``u32 length || bytes``), in Noise frames."""
    assert s._send is not None
    data = (len(plaintext) if announced is None else announced).to_bytes(4, "big") + plaintext
    return [encode_frame(s._send.encrypt_with_ad(b"", data[i : i + MAX_CHUNK])) for i in range(0, len(data), MAX_CHUNK)]


def _drain(sock: socket.socket) -> None:
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, TimeoutError):
        pass


def _transport_serves(node_id: NodeId, port: int) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with Transport(CLIENT) as t:
            ch = await t.connect(node_id, "127.0.0.1", port)
            await ch.ping(timeout=WAIT)
            return t.stats()

    return asyncio.run(go())


def _dht_ping(port: int) -> NodeId | None:
    request = dhtmsg.DhtRequest(b"\x09" * 20, dhtmsg.Ping(CLIENT.node_id))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(dhtmsg.encode_request(request), ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except TimeoutError:
            return None
    reply = dhtmsg.decode_datagram(data)
    assert isinstance(reply, dhtmsg.DhtResponse)
    pong = dhtmsg.decode_reply(dhtmsg.PING, reply.payload)
    return pong.node_id if isinstance(pong, dhtmsg.Pong) else None


def _clean_log(node: Node) -> None:
    text = _log(node)
    assert "Traceback" not in text
    assert MARKER not in text
    assert max(len(line) for line in text.splitlines()) < 600


def test_hostile_transport_messages_close_only_their_connection(node: Node) -> None:
    pid = _started(node)
    node_id, port = _peer(node)
    messages = list(transport_messages())
    assert len(messages) > 100
    for plaintext in messages:
        sock, s = _handshaken(node_id, port)
        with sock:
            try:
                sock.sendall(b"".join(_message_frames(s, plaintext)))
            except OSError:
                pass
            _drain(sock)
    _transport_serves(node_id, port)
    _serves(node, pid)
    _clean_log(node)


def test_hostile_dht_datagrams_leave_the_dht_answering(node: Node) -> None:
    pid = _started(node)
    node_id, port = _peer(node)
    datagrams = list(dht_datagrams())
    assert len(datagrams) > 100
    for start in range(0, len(datagrams), 100):  # a new source address per 100: under the rate limit
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for datagram in datagrams[start : start + 100]:
                s.sendto(datagram, ("127.0.0.1", port))
    wait_for(lambda: _dht_ping(port) == node_id, timeout=30, what="a DHT ping answered")
    _transport_serves(node_id, port)
    _serves(node, pid)
    _clean_log(node)
    assert "dropped a DHT datagram" in _log(node)


def _partial_message(node_id: NodeId, port: int) -> None:
    sock, s = _handshaken(node_id, port)
    with sock:  # all but the last 200 kB of a 4 MiB message, then close
        for frame in _message_frames(s, b"\x00" * (DEFAULT_MAX_MESSAGE - 200_000), announced=DEFAULT_MAX_MESSAGE - 4):
            sock.sendall(frame)


def test_rss_returns_after_a_burst_of_partial_peer_messages(node: Node) -> None:
    pid = _started(node)
    node_id, port = _peer(node)
    _transport_serves(node_id, port)
    baseline = _rss_mib(pid)
    burst_then_rss_back(pid, baseline, 48, functools.partial(_partial_message, node_id, port))
    _transport_serves(node_id, port)
    assert running_pid(node) == pid
    assert pk(node, "secrets", "get", "app:canary").out == b"still here"


def test_announced_but_unsent_messages_do_not_hold_the_peer_budget(node: Node) -> None:
    """Peers that only announce large messages (the 4-byte length, nothing of the body) must not
    hold the node's request budget: the budget counts bytes buffered, not bytes promised, or
    17 connections of a few bytes each (any key, any address) make the peer port refuse
    every other peer's messages as busy for as long as they trickle a byte per stall timeout."""
    pid = _started(node)
    node_id, port = _peer(node)
    holders: list[socket.socket] = []
    try:
        for i, announced in enumerate([DEFAULT_MAX_MESSAGE - 4] * 16 + [60]):
            key = KeyPair.from_seed(bytes([0x60 + i]) * 32)  # one key each: no duplicate retired
            sock, s = _handshaken(node_id, port, key)
            s.send(m.Ping(1))  # answered once the node reads messages (past the handshake)...
            sock.sendall(s.data_to_send())
            assert sock.recv(65536), "no pong"
            sock.sendall(b"".join(_message_frames(s, b"", announced=announced)))  # ...then announce
            holders.append(sock)
        assert _large_request_answered(node_id, port)
    finally:
        for sock in holders:
            sock.close()
    assert running_pid(node) == pid


def _large_request_answered(node_id: NodeId, port: int) -> bool:
    """A 1 MiB request (it spans many reads, so it is charged to the budget) gets an answer
    (an error: no such method) rather than the busy close."""

    async def go() -> bool:
        async with Transport(CLIENT) as t:
            ch = await t.connect(node_id, "127.0.0.1", port)
            try:
                await ch.request("no-such-method", {"pad": b"\x00" * MIB}, timeout=WAIT)
            except (UnknownPeerMethodError, PeerBusyError):
                return True
            except ConnectionClosedError:
                return False
            return True

    return asyncio.run(go())
