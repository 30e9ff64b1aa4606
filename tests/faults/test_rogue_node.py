"""A misbehaving node with a valid identity among real agents (issue 13, "Fault suite").

The rogue is a test double built on our own codecs (polykey.wire): it has a real keypair,
joins the DHT of a `pk cluster` by pinging every node, and then lies. It answers lookups
with forged records and contacts that point at the wrong places, stores poisoned records
on every node, publishes a validly signed record of its own that names an honest node's
address, floods the DHT port, and opens encrypted channels (a real Noise handshake under its
real NodeId) only to send garbage frames. The honest nodes keep serving each other and
accept nothing forged: each still finds every other at the address it listens on, under a
record that node signed; the rogue's lying address is never reported verified; no agent
dies or logs a traceback.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg as M
from polykey.wire.frames import encode_frame
from polykey.wire.records import SIGNATURE_DOMAIN, NodeRecord, dht_key, sign_record

from ..cluster import Cluster, alive, make_cluster
from ..e2e.dhtnet import HOST, RawPeer
from ..noise_client import handshaken

__all__ = ["make_cluster"]
MakeCluster = Callable[[str], Cluster]
BOUND = 90.0
HONEST = 4


def forgeries(rogue: KeyPair, victim: NodeId, lie: tuple[str, int]) -> list[bytes]:
    """Records for ``victim``'s key that must all be refused (the rogue holds no victim key)."""
    now = int(time.time())
    claimed = NodeRecord(victim, (lie,), 2**62, now + 3600, b"\x00" * 64)
    bad_sig = NodeRecord(victim, (lie,), 2**62, now + 3600, rogue.sign(SIGNATURE_DOMAIN + claimed.signed_bytes()))
    return [
        bad_sig.encode(),
        sign_record(rogue, [lie], 2**62, now + 3600).encode(),  # the rogue's own, under the victim's key
    ]


class Rogue:
    """The lying node's DHT side: answers every request with something wrong."""

    def __init__(self, keypair: KeyPair, honest: list[tuple[NodeId, int]]) -> None:
        self.keypair = keypair
        self.honest = honest
        self.asked_values = 0
        self.peer: RawPeer | None = None

    def on_request(self, req: M.DhtRequest, addr: tuple[str, int]) -> M.Reply | None:
        body = req.body
        if isinstance(body, M.Ping):
            return M.Pong(self.keypair.node_id)
        if isinstance(body, M.Store):
            return M.Stored(True)
        wrong_port = self.honest[0][1]
        # every honest NodeId at one honest node's port, and made-up nodes at dead ports
        contacts = [M.Contact(nid, HOST, wrong_port) for nid, _ in self.honest]
        contacts += [M.Contact(NodeId(os.urandom(32)), HOST, 9) for _ in range(8)]
        if isinstance(body, M.FindValue):
            self.asked_values += 1
            victim = next((nid for nid, _ in self.honest if dht_key(nid) == body.key), None)
            if victim is not None:
                return M.Value(forgeries(self.keypair, victim, (HOST, wrong_port))[self.asked_values % 2])
        return M.Nodes(tuple(contacts[: M.MAX_CONTACTS]))


def garbage_frames(keypair: KeyPair, node_id: NodeId, port: int) -> None:
    """Valid channels (the rogue's real identity) carrying frames that break the protocol."""
    for attack in range(4):
        sock, s = handshaken(keypair, node_id, port)
        with sock:
            if attack == 0:
                sock.sendall(b"\x00\x40" + os.urandom(64))  # fails authentication
            elif attack == 1:
                assert s._send is not None
                sock.sendall(encode_frame(s._send.encrypt_with_ad(b"", b"\xff\xff\xff\xff" + os.urandom(50))))
            elif attack == 2:
                assert s._send is not None
                body = msgpack.packb([2, 42, "?"])  # an unknown message type
                sock.sendall(encode_frame(s._send.encrypt_with_ad(b"", len(body).to_bytes(4, "big") + body)))
            else:
                sock.sendall(encode_frame(os.urandom(3000)) + os.urandom(100))  # a whole frame of noise
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass


async def attack(c: Cluster, rogue: Rogue) -> RawPeer:
    peer = await RawPeer.open(rogue.on_request)
    rogue.peer = peer
    rid = rogue.keypair.node_id
    ports = [c.nodes[i]["port"] for i in range(HONEST)]
    for port in ports:  # join: every honest node adds the rogue to its routing table
        assert await peer.request(M.Ping(rid), port) is not None
    lie = (HOST, ports[1])
    own = sign_record(rogue.keypair, [lie], int(time.time() * 1e6), int(time.time()) + 3600).encode()
    for port in ports:
        # a validly signed record of its own naming an honest node's address: stored, never verified
        assert await peer.request(M.Store(rid, dht_key(rid), own), port) == M.Stored(True)
        for i in range(HONEST):
            victim = NodeId.from_text(c.node_id(i))
            for forged in forgeries(rogue.keypair, victim, lie):
                assert await peer.request(M.Store(rid, dht_key(victim), forged), port) == M.Stored(False)
    # floods on one node's port: valid pings under fresh ids, and junk
    for n in range(6000):
        if n % 2:
            peer.send(M.encode_request(M.DhtRequest(os.urandom(20), M.Ping(NodeId(os.urandom(32))))), ports[2])
        else:
            peer.send(os.urandom(n % 1500), ports[2])
        if n % 100 == 0:
            await asyncio.sleep(0.001)
    for i in range(HONEST):
        await asyncio.to_thread(garbage_frames, rogue.keypair, NodeId.from_text(c.node_id(i)), ports[i])
    return peer


def test_a_lying_flooding_node_changes_nothing_honest_nodes_accept(make_cluster: MakeCluster) -> None:
    c = make_cluster("rogue")
    c.up(HONEST)
    pids = [n["pid"] for n in c.nodes]
    everyone = list(range(HONEST))
    c.all_find_all(everyone, BOUND)
    rogue = Rogue(KeyPair.generate(), [(NodeId.from_text(n["nodeId"]), n["port"]) for n in c.nodes])

    async def main() -> None:
        peer = await attack(c, rogue)
        try:
            # while the rogue keeps answering lookups with lies: honest answers only
            await asyncio.to_thread(c.all_find_all, everyone, BOUND)
            rid = str(rogue.keypair.node_id)
            for i in everyone:
                r = await asyncio.to_thread(_find_rogue, c, i, rid)
                assert r is not None and not any(a["verified"] for a in r), r
        finally:
            peer.close()

    asyncio.run(asyncio.wait_for(main(), 300))
    assert rogue.asked_values > 0, "no lookup asked the rogue: the test did not exercise its answers"
    c.all_find_all(everyone, BOUND)
    assert all(alive(p) for p in pids)
    assert [n["pid"] for n in c.status()] == pids
    for i in everyone:
        assert "Traceback" not in (Path(c.path(i)) / "agent.log").read_text(errors="replace")


def _find_rogue(c: Cluster, i: int, rid: str) -> list[dict[str, object]] | None:
    """The addresses node i tried for the rogue (none may be verified: it lied about them)."""
    from polykey.errors import PeerNotFoundError, PeerUnreachableError

    try:
        found = c.call(i, "nodes.find", {"nodeId": rid})
    except PeerUnreachableError as e:
        tried: list[dict[str, object]] = e.data.get("tried", [])
        return tried
    except PeerNotFoundError:
        return []
    addresses: list[dict[str, object]] = found["addresses"]
    return addresses
