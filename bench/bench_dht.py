"""DHT discovery benchmark: 50 nodes in one process on 127.0.0.1 (real UDP sockets).

Run: ``python -m bench dht [--quick]``. Prints a table of medians and p90s with
the ratio to a baseline measured in the same run: one direct DHT RPC round trip
(a ping between two nodes). Figures:

- bootstrap: one node joining (ping the seed, iterative lookup of its own id,
  publish its signed record to the k closest nodes), nodes joining one by one;
- lookup: ``Discovery.find(node_id)`` between random pairs (a signed record,
  verified, highest seq), default configuration (k=20, alpha=3, quorum=3);
- the same lookups run to convergence (a quorum never reached, so every one of
  the k nearest is asked): the worst case;
- with 20% of the nodes dead: 10 of the 50 closed without warning, then
  lookups between live nodes at once, while every routing table still lists the
  dead (1 s RPC timeout, 0.25 s straggler timeout): first to convergence, then
  default lookups.

All 50 nodes share one event loop and one core, so every RPC's both ends cost
this process's time.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, fmt_seconds, print_table  # noqa: E402
from keynode.peers.dht import DhtConfig, Discovery  # noqa: E402
from polykey.keys.keypair import KeyPair  # noqa: E402
from polykey.wire.records import Seed  # noqa: E402

HOST = "127.0.0.1"
NODES = 50
DEAD_FRACTION = 0.2
FULL = 1000  # a quorum never reached: the lookup runs until the k nearest have all been asked


async def timed_lookups(
    pairs: list[tuple[Discovery, Discovery]], quorum: int | None = None
) -> tuple[list[float], int]:
    samples, missed = [], 0
    for a, b in pairs:
        t0 = time.perf_counter()
        record = await a.find(b.node_id, quorum=quorum)
        samples.append(time.perf_counter() - t0)
        if record is None or record.addresses != ((HOST, b.port),):
            missed += 1
    return samples, missed


async def run(quick: bool) -> None:
    rng = random.Random(1)
    n_lookups = 60 if quick else 300
    config = DhtConfig()
    async with AsyncExitStack() as stack:
        kps = [KeyPair.generate() for _ in range(NODES)]
        seed = await stack.enter_async_context(Discovery(kps[0], host=HOST, config=config))
        nodes = [seed]
        for kp in kps[1:]:
            spec = Seed(seed.node_id, HOST, seed.port)
            nodes.append(await stack.enter_async_context(Discovery(kp, host=HOST, seeds=[spec], config=config)))
        await seed.bootstrap()
        t_all = time.perf_counter()
        boot = []
        for node in nodes[1:]:
            t0 = time.perf_counter()
            await node.bootstrap()
            boot.append(time.perf_counter() - t0)
        t_all = time.perf_counter() - t_all

        ping = []
        for _ in range(n_lookups):
            a, b = rng.sample(nodes, 2)
            t0 = time.perf_counter()
            assert await a.ping(HOST, b.port) == b.node_id
            ping.append(time.perf_counter() - t0)

        pairs = [tuple(rng.sample(nodes, 2)) for _ in range(n_lookups)]
        lookups, missed = await timed_lookups(pairs)  # type: ignore[arg-type]
        full, full_missed = await timed_lookups(pairs, quorum=FULL)  # type: ignore[arg-type]

        dead = rng.sample(nodes[1:], int(NODES * DEAD_FRACTION))
        for d in dead:
            await d.__aexit__(None, None, None)
        live = [n for n in nodes if n not in dead]
        # worst case first: every lookup must hear from (or give up on) all k nearest, and the
        # routing tables still list the dead; then the default lookups
        pairs = [tuple(rng.sample(live, 2)) for _ in range(n_lookups)]
        dead_full, dead_full_missed = await timed_lookups(pairs, quorum=FULL)  # type: ignore[arg-type]
        timeouts = sum(n.stats.get("timeouts", 0) for n in live)
        pairs = [tuple(rng.sample(live, 2)) for _ in range(n_lookups)]
        dead_lookups, dead_missed = await timed_lookups(pairs)  # type: ignore[arg-type]
        # the dead were closed already; AsyncExitStack closing them again is a no-op

    print_table(
        f"DHT discovery ({NODES} nodes, one process, UDP on 127.0.0.1)",
        [
            Row("one DHT RPC round trip (ping)", ping),
            Row("bootstrap: one node joins (ping seed, self lookup, publish)", boot),
            Row("lookup: find(node_id) -> verified record", lookups, "≤ 50 ms"),
            Row("lookup to convergence (quorum > k: asks all k nearest)", full),
            Row(f"lookup to convergence, {len(dead)} of {NODES} nodes just died", dead_full, "≤ 1.5 s"),
            Row(f"lookup, {len(dead)} of {NODES} nodes dead (after the above)", dead_lookups, "≤ 1.5 s"),
        ],
        baseline="one DHT RPC round trip (ping)",
    )
    print(f"\nall {NODES - 1} joins: {fmt_seconds(t_all)}; lookups that missed the record: "
          f"{missed}, {full_missed}, {dead_full_missed}, {dead_missed} of {n_lookups} per row; "
          f"RPC timeouts to dead nodes during the convergence row: {timeouts}")


def main(quick: bool = False) -> None:
    asyncio.run(run(quick))


if __name__ == "__main__":
    main("--quick" in sys.argv)
