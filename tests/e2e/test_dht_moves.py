"""A node that comes back on another port (docs/spec/discovery.md section 6): the routing tables
that knew its old endpoint move to the new one once the old stops answering as that node; a
claim of a live node's NodeId from elsewhere moves nothing."""

from __future__ import annotations

from keynode.peers.dht import Discovery
from keynode.peers.dht.protocol import DhtPeer
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg as M
from polykey.wire.records import Seed

from ..conftest import until
from .dhtnet import HOST, RawPeer, run


def entries(d: Discovery, node: Discovery) -> list[int]:
    return [r["port"] for r in d.node_graph() if r["node_id"] == str(node.node_id)]


def test_a_node_back_on_another_port_replaces_its_old_entry() -> None:
    async def main() -> None:
        mover_key = KeyPair.generate()
        async with Discovery(KeyPair.generate(), host=HOST) as seed:
            spec = [Seed(seed.node_id, HOST, seed.port)]
            async with Discovery(mover_key, host=HOST, seeds=spec) as first:
                await first.bootstrap()
                old_port = first.port
                assert entries(seed, first) == [old_port]
            async with Discovery(mover_key, host=HOST, seeds=spec) as moved:
                assert moved.port != old_port
                await moved.bootstrap()  # it pings the seed from its new endpoint
                await until(lambda: entries(seed, moved) == [moved.port], "the entry to move")
                assert seed.stats["moved_checks"] >= 1
                # a stale copy of the old address failing does not evict the current entry
                ok, _ = await seed._protocol.call_ping(DhtPeer(moved.node_id, HOST, old_port))
                assert not ok and entries(seed, moved) == [moved.port]
                # someone claiming the mover's NodeId from elsewhere: the mover still answers, nothing moves
                raw = await RawPeer.open()
                try:
                    checks = seed.stats["moved_checks"]
                    assert await raw.request(M.Ping(moved.node_id), seed.port) is not None
                    await until(lambda: seed.stats["moved_checks"] > checks and not seed._protocol._moving, "the check")
                    assert entries(seed, moved) == [moved.port]
                finally:
                    raw.close()
                assert (await seed.find(moved.node_id)) == moved.record

    run(main)
