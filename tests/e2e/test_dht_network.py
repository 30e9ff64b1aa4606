"""Discovery over real UDP sockets on 127.0.0.1: nodes that know only a seed find each other."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from keynode.peers.dht import DhtConfig, Discovery
from polykey.errors import DiscoveryBindError, DiscoveryNotRunningError, InvalidInputError, NodeGraphFileError
from polykey.keys.keypair import KeyPair
from polykey.wire.records import Seed, parse_record

from ..conftest import until
from .dhtnet import HOST, network, run


def test_nodes_knowing_only_a_seed_find_each_other() -> None:
    async def main() -> None:
        async with network(15) as nodes:
            for a in nodes:
                for b in nodes:
                    record = await a.find(b.node_id)
                    assert record is not None, f"{a.node_id} did not find {b.node_id}"
                    assert record.node_id == b.node_id
                    assert record.addresses == ((HOST, b.port),)
                    # what find() returns is a verified record: it re-verifies from its bytes
                    assert parse_record(record.encode(), now=__import__("time").time(), key=record.key) == record
            assert all(n.stats.get("internal_errors", 0) == 0 for n in nodes)

    run(main)


def test_republish_on_address_change_wins_by_seq() -> None:
    async def main() -> None:
        async with network(8) as nodes:
            mover, seeker = nodes[5], nodes[2]
            old = await seeker.find(mover.node_id)
            assert old is not None
            stored = await mover.update_addresses([(HOST, 40001), ("node5.example.org", 40002)])
            assert stored > 0
            new = await seeker.find(mover.node_id)
            assert new is not None and new.seq > old.seq
            assert new.addresses == ((HOST, 40001), ("node5.example.org", 40002))
            assert await mover.update_addresses(new.addresses) == 0  # unchanged: no republish

    run(main)


def test_find_unknown_node_returns_none() -> None:
    async def main() -> None:
        async with network(5) as nodes:
            assert await nodes[3].find(KeyPair.generate().node_id) is None
            assert (await nodes[3].find(nodes[3].node_id)) == nodes[3].record

    run(main)


def test_node_graph_file_persists_and_rebootstraps(tmp_path: Path) -> None:
    graph = tmp_path / "node-graph.json"
    kp = KeyPair.generate()
    manual = KeyPair.generate().node_id

    async def main() -> None:
        async with network(6) as nodes:
            async with Discovery(kp, host=HOST, seeds=[Seed(nodes[0].node_id, HOST, nodes[0].port)],
                                 graph_path=graph) as d:
                assert await d.bootstrap() >= 5
                d.add_node(manual, "127.0.0.1", 9)
                rows = d.node_graph()
                assert {r["node_id"] for r in rows} >= {str(n.node_id) for n in nodes}
                assert [r["manual"] for r in rows if r["node_id"] == str(manual)] == [True]
                with pytest.raises(InvalidInputError):
                    d.add_node(manual, "not-an-ip", 9)
            doc = json.loads(graph.read_text())
            assert doc["format"] == "polykey-node-graph" and doc["version"] == 1
            assert stat.S_IMODE(graph.stat().st_mode) == 0o600
            assert {"node_id": str(manual), "host": "127.0.0.1", "port": 9, "manual": True} in doc["nodes"]
            # restart with no seeds at all: the saved graph is enough to rejoin
            async with Discovery(kp, host=HOST, graph_path=graph) as again:
                assert await again.bootstrap() >= 5
                found = await again.find(nodes[4].node_id)
                assert found is not None and found.addresses == ((HOST, nodes[4].port),)
                assert any(r["manual"] and r["node_id"] == str(manual) for r in again.node_graph())

    run(main)


def test_corrupt_node_graph_file_is_a_clear_error(tmp_path: Path) -> None:
    graph = tmp_path / "g.json"
    graph.write_text('{"format": "polykey-node-graph", "version": 1, "nodes": [{"node_id": "x"}]}')

    async def main() -> None:
        with pytest.raises(NodeGraphFileError):
            async with Discovery(KeyPair.generate(), host=HOST, graph_path=graph):
                pass

    run(main)


def test_seed_answering_with_another_identity_is_ignored() -> None:
    async def main() -> None:
        async with network(3) as nodes:
            impostor = Seed(KeyPair.generate().node_id, HOST, nodes[0].port)
            async with Discovery(KeyPair.generate(), host=HOST, seeds=[impostor]) as d:
                await d.bootstrap()
                # the claimed identity is never recorded for that address; whatever the node
                # there is, it is known by the NodeId it gives in its own messages
                rows = d.node_graph()
                assert str(impostor.node_id) not in {r["node_id"] for r in rows}
                assert all(r["node_id"] != str(impostor.node_id) for r in rows)
                assert {(r["node_id"], r["port"]) for r in rows} <= {(str(n.node_id), n.port) for n in nodes}

    run(main)


def test_bind_error_and_use_outside_context() -> None:
    async def main() -> None:
        async with Discovery(KeyPair.generate(), host=HOST) as a:
            assert a.port > 0 and a.addresses == ((HOST, a.port),)
            with pytest.raises(DiscoveryBindError):
                async with Discovery(KeyPair.generate(), host=HOST, port=a.port):
                    pass
        with pytest.raises(DiscoveryNotRunningError):
            await a.find(a.node_id)

    run(main)


def test_shutdown_is_prompt_and_leaves_no_task() -> None:
    config = DhtConfig(republish_interval=0.05, refresh_interval=0.05)

    async def main() -> None:
        before = asyncio.all_tasks()
        async with network(4, config) as nodes:
            first = nodes[1].record
            assert first is not None

            def republished_twice() -> bool:  # the periodic tasks ran a few times
                record = nodes[1].record
                if record is not None and record.seq > seqs[-1]:
                    seqs.append(record.seq)
                return len(seqs) >= 3

            seqs = [first.seq]
            await until(republished_twice, "two periodic republishes")
        assert asyncio.all_tasks() == before

    run(main)


def test_ping_and_thorough_find() -> None:
    async def main() -> None:
        async with network(6) as nodes:
            assert await nodes[1].ping(HOST, nodes[4].port) == nodes[4].node_id
            assert await nodes[1].ping(HOST, nodes[1].port) is None  # ourselves: not a contact
            # quorum larger than the network: the lookup asks every node and still returns the record
            assert await nodes[2].find(nodes[5].node_id, quorum=100) == nodes[5].record

    run(main)
