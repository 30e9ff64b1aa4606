"""The routing table's nearest entries (keynode/peers/dht/protocol.py ``Router.find_neighbors``).

Upstream kademlia's walker could return a handful of entries, or none, from a full table, and
not always the nearest: a lookup then started far from its key and missed the record
(bench/bench_dht_scale.py showed it at 400 simulated nodes).
"""

from __future__ import annotations

import random

from kademlia.node import Node

from keynode.peers.dht.protocol import DhtPeer, Router
from polykey.ids import NodeId


def table(rng: random.Random, size: int) -> tuple[Router, list[DhtPeer]]:
    own = DhtPeer(NodeId(rng.randbytes(32)), "127.0.0.1", 1)
    router = Router(None, 20, own)  # type: ignore[arg-type]  # no protocol: never full enough to ping
    peers = []
    for i in range(size):
        peer = DhtPeer(NodeId(rng.randbytes(32)), "127.0.0.1", 1000 + i)
        router.add_contact(peer)
        peers.append(peer)
    return router, router.peers()


def test_find_neighbors_returns_the_k_nearest_of_the_whole_table() -> None:
    rng = random.Random(7)
    for size in (5, 30, 200):
        router, held = table(rng, size)
        for _ in range(200):
            key = Node(rng.randbytes(20))
            want = sorted(held, key=key.distance_to)[:20]
            assert router.find_neighbors(key, k=20) == want


def test_find_neighbors_excludes_the_asker_but_not_the_key_itself() -> None:
    # The node whose id is the key holds its own record: it comes first (distance 0). Leaving it
    # out (as upstream did) made a node unfindable once the other holders of its record died.
    router, held = table(random.Random(3), 40)
    target = held[5]
    got = router.find_neighbors(Node(target.id), k=20, exclude=held[6])
    assert got[0] == target and held[6] not in got and len(got) == 20
