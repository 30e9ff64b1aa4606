"""The DHT at scale: 100, 1,000 and 5,000 nodes in one process (issue 13, item 5).

Run: ``python -m bench dht_scale [--quick] [--nodes N]`` (``--quick``: 100 and 1,000 nodes, fewer
lookups; ``--nodes N``: one network of N nodes only).

Every node is a real :class:`keynode.peers.dht.Discovery` (our validating protocol, storage and
lookups, on kademlia's routing table); only the UDP socket is replaced, by an in-memory
datagram network in the same event loop that delivers each datagram after a simulated
one-way link delay (uniform 1-3 ms while measuring, none while the network is built), on a
virtual clock (``VirtualClock``): every time and timeout is simulated, so the figures do not
depend on this process's speed or on the machine's load.
Nodes join one after the other through node 0 with the real ``bootstrap`` (ping the seed, look
up their own id, publish their signed record, then refresh every distance range further away
than their nearest contact, as a real node does), in waves of concurrent joins. Below the
table: the build's RPC timeouts and lookups cut by their deadline (both 0 with nobody dead),
routing-table fill, and for each
missed lookup how near to the key it got.

Per network size, for random (finder, target) pairs of live nodes, ``find(target)``:

- hops: how many sequential requests it took to reach the first node that returned the
  target's record (the contacts a node returns are one hop further than that node);
- requests: datagrams the finder sent for the lookup;
- latency: median and p95 simulated time of ``find`` (link delays, and timeouts on dead nodes);
- success: the record returned is the target's, with its address.

Then 20% of the nodes die at once: their datagrams are dropped while every routing table
still lists them, and the same figures are taken for new pairs of live nodes.
"""

from __future__ import annotations

import asyncio
import random
import selectors
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keynode.peers.dht import DhtConfig, Discovery  # noqa: E402
from polykey.keys.keypair import KeyPair  # noqa: E402
from polykey.wire import dhtmsg as M  # noqa: E402
from polykey.wire.records import Seed  # noqa: E402

HOST = "127.0.0.1"  # loopback: the per-IP routing-table limit does not apply (one machine)
BASE_PORT = 20000
DEAD_FRACTION = 0.2
JOIN_WAVE = 50
Addr = tuple[str, int]


class VirtualClock(selectors.BaseSelector):
    """The simulation's clock: the event loop's time moves only when it would wait.

    Nothing here does real I/O, so instead of blocking in ``select`` the loop jumps to its
    next timer. Timeouts, link delays and latencies are then simulated seconds, independent
    of how fast this one process (simulating every node) gets through its work, or of what
    else runs on the machine: a busy CPU can no longer time requests out.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj if isinstance(fileobj, int) else fileobj.fileno())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("the simulation has nothing left to do but wait forever")
        self.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class SimLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(self.clock)

    def time(self) -> float:
        return self.clock.now


class MemTransport(asyncio.DatagramTransport):
    """One node's end of the in-memory network."""

    def __init__(self, net: MemNet, addr: Addr, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.net, self.addr, self.protocol = net, addr, protocol
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closing:
            self.net.send(self.addr, bytes(data), (addr[0], addr[1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.addr if name == "sockname" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.net.endpoints.pop(self.addr, None)
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


@dataclass
class Trace:
    """What one finder's lookup did: requests sent, and the hop depth of every contact."""

    source: Addr
    requests: int = 0
    depth: dict[Addr, int] = field(default_factory=dict)
    pending: dict[bytes, tuple[Addr, str]] = field(default_factory=dict)
    asked: set[Addr] = field(default_factory=set)
    hops: int | None = None


class MemNet:
    def __init__(self, rng: random.Random) -> None:
        self.endpoints: dict[Addr, MemTransport] = {}
        self.dead: set[Addr] = set()
        self.delay: tuple[float, float] | None = None
        self.rng = rng
        self.trace: Trace | None = None
        self._next_port = BASE_PORT

    async def create_datagram_endpoint(self, factory: Callable[[], asyncio.DatagramProtocol],
                                       local_addr: Addr | None = None, **_: Any) -> tuple[MemTransport, Any]:
        port = local_addr[1] if local_addr and local_addr[1] else self._next_port
        self._next_port = max(self._next_port, port) + 1
        protocol = factory()
        transport = MemTransport(self, (HOST, port), protocol)
        self.endpoints[transport.addr] = transport
        protocol.connection_made(transport)
        return transport, protocol

    def send(self, src: Addr, data: bytes, dst: Addr) -> None:
        if src in self.dead or dst in self.dead:
            return
        target = self.endpoints.get(dst)
        if target is None:
            return
        if self.trace is not None:
            self._observe(self.trace, src, data, dst)
        loop = asyncio.get_running_loop()
        if self.delay is None:
            loop.call_soon(target.protocol.datagram_received, data, src)
        else:
            loop.call_later(self.rng.uniform(*self.delay), target.protocol.datagram_received, data, src)

    @staticmethod
    def _observe(trace: Trace, src: Addr, data: bytes, dst: Addr) -> None:
        try:
            msg = M.decode_datagram(data)
        except Exception:  # noqa: BLE001 - only our own nodes send here
            return
        if src == trace.source and isinstance(msg, M.DhtRequest):
            trace.requests += 1
            trace.pending[msg.msg_id] = (dst, msg.method)
            trace.asked.add(dst)
            trace.depth.setdefault(dst, 1)  # not learnt during this lookup: from the routing table
        elif dst == trace.source and isinstance(msg, M.DhtResponse) and msg.msg_id in trace.pending:
            asked, method = trace.pending.pop(msg.msg_id)
            reply = M.decode_reply(method, msg.payload)
            here = trace.depth.get(asked, 1)
            if isinstance(reply, M.Nodes):
                for c in reply.contacts:
                    trace.depth.setdefault((c.host, c.port), here + 1)
            elif isinstance(reply, M.Value) and trace.hops is None:
                trace.hops = here


@dataclass
class Figures:
    hops: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    found: int = 0
    tried: int = 0
    missed_rank: list[int] = field(default_factory=list)  # a miss: rank of the nearest live node asked


def distance_ranges(me: int, others: list[int]) -> set[int]:
    """The ranges (leading bits in common with ``me``) that hold one of ``others``."""
    return {160 - (me ^ o).bit_length() for o in others}


def table_health(nodes: list[Discovery], rng: random.Random) -> str:
    """Routing-table fill, and how many of a sample of nodes hold no contact in a distance range
    (further than their nearest contact) where the network has a node: a lookup from that side
    that reaches such a node stops there."""
    sizes = sorted(len(n._protocol.router.peers()) for n in nodes)
    ids = [n._protocol.source_node.long_id for n in nodes]
    sample = rng.sample(range(len(nodes)), min(100, len(nodes)))
    holes = 0
    for i in sample:
        me = ids[i]
        table = distance_ranges(me, [p.long_id for p in nodes[i]._protocol.router.peers()])
        if any(r < max(table) for r in distance_ranges(me, ids[:i] + ids[i + 1:]) - table):
            holes += 1
    return (f"routing tables {sizes[0]}/{sizes[len(sizes) // 2]}/{sizes[-1]} entries (min/median/max), "
            f"{holes} of {len(sample)} sampled with an empty distance range")


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def lookups(net: MemNet, nodes: list[Discovery], pairs: list[tuple[int, int]]) -> Figures:
    out = Figures()
    loop = asyncio.get_running_loop()
    for a, b in pairs:
        finder, target = nodes[a], nodes[b]
        net.trace = Trace((HOST, finder.port))
        t0 = loop.time()
        record = await finder.find(target.node_id)
        out.latency.append(loop.time() - t0)
        trace, net.trace = net.trace, None
        out.tried += 1
        if record is not None and record.addresses == ((HOST, target.port),):
            out.found += 1
            out.hops.append(trace.hops if trace.hops is not None else 0)  # 0: the finder held it
        else:
            key = target._protocol.source_node
            live = sorted((n for n in nodes if (HOST, n.port) not in net.dead),
                          key=lambda n: key.distance_to(n._protocol.source_node))
            asked = [r for r, n in enumerate(live) if (HOST, n.port) in trace.asked]
            out.missed_rank.append(asked[0] if asked else len(live))
        out.requests.append(trace.requests)
    return out


def counted(nodes: list[Discovery], *names: str) -> str:
    return ", ".join(f"{sum(n.stats.get(name, 0) for n in nodes)} {name}" for name in names)


async def network(size: int, lookups_per_row: int, rng: random.Random) -> tuple[Figures, Figures, str]:
    net = MemNet(rng)
    loop = asyncio.get_running_loop()
    loop.create_datagram_endpoint = net.create_datagram_endpoint  # type: ignore[assignment,method-assign]
    config = DhtConfig()
    async with AsyncExitStack() as stack:
        seed = await stack.enter_async_context(Discovery(KeyPair.generate(), host=HOST, config=config))
        nodes = [seed]
        spec = Seed(seed.node_id, HOST, seed.port)
        for _ in range(size - 1):
            nodes.append(await stack.enter_async_context(
                Discovery(KeyPair.generate(), host=HOST, seeds=[spec], config=config)))
        t0 = time.perf_counter()
        await seed.bootstrap()
        for start in range(1, size, JOIN_WAVE):
            await asyncio.gather(*(n.bootstrap() for n in nodes[start:start + JOIN_WAVE]))
        built = (f"{size:,} nodes joined in {time.perf_counter() - t0:.1f} s "
                 f"({counted(nodes, 'timeouts', 'lookup_deadlines')}; {table_health(nodes, rng)})")
        net.delay = (0.001, 0.003)
        pairs = [(a, b) for a, b in (rng.sample(range(size), 2) for _ in range(lookups_per_row))]
        healthy = await lookups(net, nodes, pairs)
        dead = set(rng.sample(range(1, size), int(size * DEAD_FRACTION)))
        net.dead = {(HOST, nodes[i].port) for i in dead}
        live = [i for i in range(size) if i not in dead]
        degraded = await lookups(net, nodes, [(a, b) for a, b in (rng.sample(live, 2) for _ in range(lookups_per_row))])
        net.delay = None
    return healthy, degraded, built


def row(size: int, label: str, f: Figures) -> str:
    med_hops = statistics.median(f.hops) if f.hops else float("nan")
    p95_hops = quantile([float(h) for h in f.hops], 0.95) if f.hops else float("nan")
    return (f"| {size:,} | {label} | {med_hops:g} | {p95_hops:g} | {statistics.median(f.requests):g} | "
            f"{statistics.median(f.latency) * 1e3:.1f} ms | {quantile(f.latency, 0.95) * 1e3:.1f} ms | "
            f"{f.found}/{f.tried} ({100 * f.found / f.tried:.0f}%) |")


async def run(quick: bool, nodes: int | None = None) -> None:
    sizes = [nodes] if nodes else [100, 1000] if quick else [100, 1000, 5000]
    per_row = 50 if quick else 200
    rng = random.Random(13)
    builds: list[str] = []
    misses: list[str] = []
    print("\n## DHT at scale (one process, in-memory datagrams, 1-3 ms one-way delay, simulated time)\n")
    print("| nodes | network | hops (median) | hops (p95) | requests (median) | latency (median) | latency (p95) | found |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for size in sizes:  # each size's rows as soon as they are measured (5,000 nodes take minutes)
        print(f"building and measuring {size:,} nodes...", file=sys.stderr, flush=True)
        healthy, degraded, built = await network(size, per_row, rng)
        print(row(size, "all live", healthy))
        print(row(size, f"{DEAD_FRACTION:.0%} dead", degraded), flush=True)
        builds.append(built)
        for label, f in (("all live", healthy), (f"{DEAD_FRACTION:.0%} dead", degraded)):
            if f.missed_rank:
                misses.append(f"{size:,} {label}: nearest live node asked by each missed lookup ranked "
                              f"{sorted(f.missed_rank)} by distance to the key (0: the target)")
    print(f"\nk=20, alpha=3, quorum=3, 1 s RPC timeout, 0.25 s straggler timeout; {per_row} lookups per row. "
          + "log2(n): " + ", ".join(f"{size:,}: {size.bit_length() - 1}" for size in sizes) + ".\n")
    for line in builds + misses:
        print(f"- {line}")


def main(quick: bool = False, nodes: float | None = None) -> None:
    """``nodes``: one network of that size only (``--nodes N``), else every size."""
    with asyncio.Runner(loop_factory=SimLoop) as runner:
        runner.run(run(quick, int(nodes) if nodes else None))


if __name__ == "__main__":
    main("--quick" in sys.argv)
