"""Bad input and faults against live DHT nodes on 127.0.0.1 (issue 5, "Bad input and faults").

Forged records (bad signature, key not matching the DHT id, expired, lower seq,
oversize) injected through raw datagrams, rogue nodes answering lookups with
them, junk datagrams, bounded floods and dead nodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import tracemalloc

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keynode.peers.dht import DhtConfig, Discovery
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg as M
from polykey.wire.records import SIGNATURE_DOMAIN, NodeRecord, dht_key, sign_record

from ..conftest import until
from .dhtnet import HOST, RawPeer, network, ping, run

NOBODY = NodeId(bytes(32))


class Probe:
    """A well-behaved peer that ``node`` already knows, to wait on instead of sleeping.

    A node handles its socket's datagrams in order, so once it answers a ping sent now, it has
    handled every datagram that reached it before; and a ping from a peer it knows, at the address
    it knows, makes it do nothing else (no replication, no liveness check). The probe's socket is
    its own rate-limit bucket.
    """

    def __init__(self, node: Discovery, peer: RawPeer, node_id: NodeId) -> None:
        self.node, self.peer, self.node_id = node, peer, node_id

    @classmethod
    async def introduced(cls, node: Discovery) -> Probe:
        node_id = KeyPair.generate().node_id

        def answer(req: M.DhtRequest, addr: tuple[str, int]) -> M.Reply:
            if isinstance(req.body, M.Ping):
                return M.Pong(node_id)
            return M.Stored(True) if isinstance(req.body, M.Store) else M.Nodes(())

        probe = cls(node, await RawPeer.open(answer), node_id)
        await probe.caught_up()
        await until(lambda: node.stats["outstanding"] == 0, "the node to finish greeting the probe")
        return probe

    async def caught_up(self) -> None:
        """Wait (bounded) until the node has handled every datagram that reached it so far."""
        for _ in range(10):  # the ping itself may be lost while the node's receive buffer is full
            if await ping(self.peer, self.node.port, self.node_id) == self.node.node_id:
                return
        raise AssertionError(f"{self.node.node_id} never answered the probe")

    def close(self) -> None:
        self.peer.close()


def forged_records(target: KeyPair, honest_seq: int) -> dict[str, bytes]:
    """Every kind of bad record an attacker could offer for ``target``'s key."""
    now = int(time.time())
    evil = ("10.66.66.66", 6666)
    good_shape = sign_record(target, [evil], honest_seq + 1000, now + 3600)
    bad_sig = NodeRecord(good_shape.node_id, good_shape.addresses, good_shape.seq, good_shape.expiry,
                         KeyPair.generate().sign(SIGNATURE_DOMAIN + good_shape.signed_bytes()))
    return {
        "bad_signature": bad_sig.encode(),
        "other_key": sign_record(KeyPair.generate(), [evil], honest_seq + 1000, now + 3600).encode(),
        "expired": sign_record(target, [evil], honest_seq + 1000, now - 1).encode(),
        "too_long_lived": sign_record(target, [evil], honest_seq + 1000, now + 48 * 3600).encode(),
        "lower_seq": sign_record(target, [evil], honest_seq - 1, now + 3600).encode(),
        "not_a_record": os.urandom(200),
    }


def test_forged_stores_are_refused_and_lookups_find_the_honest_record() -> None:
    async def main() -> None:
        kps = [KeyPair.generate() for _ in range(10)]
        async with network(10, keypairs=kps) as nodes:
            target, key = kps[4], dht_key(kps[4].node_id)
            assert await nodes[4].publish() == len(nodes) - 1  # now every node holds it (k > n)
            honest = nodes[4].record
            assert honest is not None
            attacker = await RawPeer.open()
            for node in nodes:
                for kind, value in forged_records(target, honest.seq).items():
                    reply = await attacker.request(M.Store(KeyPair.generate().node_id, key, value), node.port)
                    assert reply == M.Stored(False), (kind, reply)
                # oversize record (1,500 bytes) in a datagram under the cap: refused by the codec
                big = b"\x00" + os.urandom(20) + msgpack.packb(["store", [NOBODY.raw, key, b"x" * 1500]])
                attacker.send(big, node.port)
                # oversize datagram: dropped before parsing. Neither gets a reply.
                attacker.send(big + b"x" * 1000, node.port)
                assert await attacker.request(M.Ping(NOBODY), node.port) == M.Pong(node.node_id)
            attacker.close()
            for node in nodes:
                found = await node.find(target.node_id)
                assert found == honest, f"{node.node_id} got {found}"
            assert sum(n.stats.get("rejected_records", 0) for n in nodes) >= 6 * len(nodes)
            assert all(n.stats.get("dropped_malformed", 0) >= 1 for n in nodes)
            assert all(n.stats.get("dropped_oversize", 0) >= 1 for n in nodes)

    run(main)


def grind_near(key: bytes, bits: int) -> NodeId:
    """A NodeId (not a real key: a rogue never signs) whose DHT id shares ``bits`` leading bits with ``key``."""
    want = int.from_bytes(key, "big") >> (160 - bits)
    while True:
        raw = os.urandom(32)
        if int.from_bytes(hashlib.blake2b(raw, digest_size=20).digest(), "big") >> (160 - bits) == want:
            return NodeId(raw)


def test_rogue_nodes_outnumbering_honest_answers_cannot_win() -> None:
    """Rogues near the target's key answer every lookup with an old (validly signed) or forged record."""

    async def main() -> None:
        kps = [KeyPair.generate() for _ in range(8)]
        config = DhtConfig(quorum=4)
        async with network(8, config, keypairs=kps) as nodes:
            target, key = kps[3], dht_key(kps[3].node_id)
            honest = nodes[3].record
            assert honest is not None
            bad = list(forged_records(target, honest.seq).values())
            old = bad[4]  # lower_seq: a valid signature, so only the seq rule can refuse it
            rogues: list[RawPeer] = []

            def answer(rid: NodeId, n: int) -> object:
                def on_request(req: M.DhtRequest, addr: tuple[str, int]) -> M.Reply | None:
                    if isinstance(req.body, M.Ping):
                        return M.Pong(rid)
                    if isinstance(req.body, M.FindValue):
                        return M.Value(old if n % 2 == 0 else bad[len(rogues) % len(bad)])
                    if isinstance(req.body, M.Store):
                        return M.Stored(True)
                    return M.Nodes(())
                return on_request

            rogue_ids: set[str] = set()
            for n in range(6):
                rid = grind_near(key, 10)
                rogue_ids.add(str(rid))
                rogue = await RawPeer.open(answer(rid, n))
                rogues.append(rogue)
                for node in nodes:  # announce ourselves: every node adds us to its routing table
                    rogue.send(M.encode_request(M.DhtRequest(os.urandom(20), M.Ping(rid))), node.port)

            def every_node_knows_the_rogues() -> bool:
                return all(rogue_ids <= {row["node_id"] for row in node.node_graph()} for node in nodes)

            await until(every_node_knows_the_rogues, "every node to add the rogues to its routing table")
            for node in nodes:
                if node is nodes[3]:
                    continue
                found = await node.find(target.node_id)
                assert found == honest, f"{node.node_id} got {found}"
            asked = sum(1 for r in rogues for q in r.requests if isinstance(q.body, M.FindValue))
            assert asked > 0, "the rogues were never asked: the test did not exercise them"
            assert sum(n.stats.get("rejected_lookup_records", 0) for n in nodes) > 0
            for r in rogues:
                r.close()

    run(main)


def junk_corpus(rng: random.Random, count: int) -> list[bytes]:
    msg_id = bytes(20)
    structured = [
        b"\x00" + msg_id + b"\x92\xa4stun\x90",
        b"\x00" + msg_id + b"\x92\xaasave_state\x91\xa4/tmp",
        b"\x00" + msg_id + b"\x91" * 1500 + b"\xc0",
        b"\x00" + msg_id + b"\xdd\xff\xff\xff\xff",
        b"\x01" + os.urandom(20) + b"\xc3",  # a reply nobody asked for
        b"\x02" + msg_id + b"\xc0",
        b"\x00" + msg_id,
        b"",
        b"\x00" * 5000,
    ]
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(structured[(i // 3) % len(structured)])
        else:
            out.append(rng.randbytes(rng.choice([0, 1, 21, 22, 100, 1400, 2048, 2049, 4000])))
    return out


def test_junk_datagrams_are_dropped_without_errors() -> None:
    config = DhtConfig(rate_per_second=1e6, rate_burst=1e6)  # every datagram reaches the parser

    async def main() -> None:
        async with network(4, config) as nodes:
            raw = await RawPeer.open()
            victim = nodes[1]
            probe = await Probe.introduced(victim)
            for i, data in enumerate(junk_corpus(random.Random(5), 1500)):
                raw.send(data, victim.port)
                if i % 50 == 0:
                    await asyncio.sleep(0.001)
            await probe.caught_up()
            stats = victim.stats
            assert stats.get("internal_errors", 0) == 0
            assert stats.get("dropped_malformed", 0) > 500
            assert stats.get("dropped_oversize", 0) > 100
            assert stats.get("dropped_unexpected_reply", 0) > 0
            assert stats["outstanding"] == 0
            # still serving
            assert await ping(raw, victim.port, KeyPair.generate().node_id) == victim.node_id
            assert await nodes[3].find(nodes[0].node_id) == nodes[0].record
            raw.close()
            probe.close()

    run(main)


def test_floods_cost_bounded_memory_and_the_node_keeps_serving() -> None:
    config = DhtConfig(rate_per_second=50, rate_burst=100, max_rate_entries=64, max_records=16, max_background=8)

    async def main() -> None:
        async with network(5, config) as nodes:
            victim = nodes[2]
            probe = await Probe.introduced(victim)
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            # 1. one source, 20,000 valid pings with fresh identities (routing-table churn)
            raw = await RawPeer.open()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(20000):
                raw.send(M.encode_request(M.DhtRequest(os.urandom(20), M.Ping(NodeId(os.urandom(32))))), victim.port)
                if i % 40 == 0:
                    await asyncio.sleep(0.0005)  # let the victim read, so the flood reaches it
            await probe.caught_up()
            elapsed = loop.time() - t0
            reached, limited = victim.stats["datagrams"], victim.stats.get("dropped_rate_limited", 0)
            assert reached > 2000, f"the flood did not reach the node ({reached})"
            # what got past the limiter from that one source is what its token bucket allows
            # (plus the little honest traffic of a 5-node network)
            assert reached - limited <= config.rate_burst + config.rate_per_second * elapsed + 200
            assert victim.stats.get("endpoint_conflicts", 0) > 0  # one socket, one routing entry
            # 2. 300 sources (more than the rate limiter tracks), each a burst of junk
            socks = [await RawPeer.open() for _ in range(300)]
            for s in socks:
                for _ in range(5):
                    s.send(os.urandom(64), victim.port)
                await asyncio.sleep(0)
            # 3. many valid, signed records of fresh keys (more than storage holds)
            for _ in range(60):
                kp = KeyPair.generate()
                rec = sign_record(kp, [(HOST, 1)], 1, int(time.time()) + 600).encode()
                socks[0].send(M.encode_request(M.DhtRequest(os.urandom(20), M.Store(kp.node_id, dht_key(kp.node_id), rec))),
                              victim.port)
                await asyncio.sleep(0.002)
            await probe.caught_up()
            grown = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            stats = victim.stats
            assert stats["rate_limiter_entries"] <= 64
            assert stats["stored_records"] <= 16
            assert stats["background_tasks"] <= 8
            assert stats["outstanding"] <= config.max_outstanding
            assert stats.get("internal_errors", 0) == 0
            assert grown < 8 * 1024 * 1024, f"memory grew by {grown} bytes"
            # our own record and the honest network are unaffected
            assert victim.record is not None
            for s in [raw, *socks, probe]:
                s.close()
            # at once: the flooding addresses' buckets are still empty, and honest peers never mattered
            assert await nodes[4].find(victim.node_id) == victim.record
            assert await victim.find(nodes[0].node_id) == nodes[0].record

    run(main)


def test_dead_nodes_do_not_stall_lookups() -> None:
    # quorum > n: every lookup must go through the k nearest, dead ones included
    config = DhtConfig(rpc_timeout=0.5, straggler_timeout=0.1, lookup_timeout=3.0, quorum=20)

    async def main() -> None:
        async with network(12, config) as nodes:
            dead = nodes[2:5]
            for d in dead:  # stop them abruptly: their sockets close, their records stay in the DHT
                await d.__aexit__(None, None, None)
            live = [n for n in nodes if n not in dead]
            loop = asyncio.get_running_loop()
            for a in live:
                for b in live:
                    record = await asyncio.wait_for(a.find(b.node_id), config.lookup_timeout + 2)
                    assert record is not None and record.addresses == ((HOST, b.port),)
            # a lookup for a dead node ends too (its record, still valid, may be returned)
            t0 = loop.time()
            got = await asyncio.wait_for(live[0].find(dead[0].node_id), config.lookup_timeout + 2)
            assert got is None or got.node_id == dead[0].node_id
            assert loop.time() - t0 < config.lookup_timeout + 2
            # calls to the dead run out in the background: the dead were actually tried
            await until(lambda: sum(n.stats.get("timeouts", 0) for n in live) > 0, "calls to the dead to time out")
            dead_ids = {str(d.node_id) for d in dead}
            assert any(not dead_ids & {r["node_id"] for r in n.node_graph()} for n in live)

    run(main)


_junk_objs = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64) | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=2),
    max_leaves=10,
)
_requests = st.builds(
    lambda m, args: [m, args],
    st.sampled_from(sorted(M.METHODS) + ["stun", "rpc_ping", ""]),
    st.lists(st.one_of(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=32),
                       st.binary(max_size=1100), _junk_objs), max_size=4),
)
_datagrams = st.one_of(
    st.binary(max_size=2100),
    st.tuples(st.sampled_from([0, 1, 2]), st.binary(min_size=20, max_size=20), st.one_of(_requests, _junk_objs)).map(
        lambda t: bytes([t[0]]) + t[1] + msgpack.packb(t[2], use_bin_type=True)
    ),
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_datagrams, min_size=1, max_size=40))
def test_hypothesis_garbage_against_a_live_node(datagrams: list[bytes]) -> None:
    config = DhtConfig(rate_per_second=1e6, rate_burst=1e6)

    async def main() -> None:
        kp = KeyPair.generate()
        async with Discovery(kp, host=HOST, config=config) as node:
            await node.bootstrap()
            raw = await RawPeer.open()
            for data in datagrams:
                raw.send(data, node.port)
            assert await ping(raw, node.port, NOBODY) == node.node_id  # still serving, in order after the junk
            assert node.stats.get("internal_errors", 0) == 0
            assert node.stats["stored_records"] == 1  # only its own: random bytes are never a valid record
            raw.close()

    run(main, timeout=30)
