"""``Discovery``: the DHT service a keynode runs (docs/spec/discovery.md).

A :class:`keynode.lifecycle.Service` (STYLE.md rule 11): entering binds the UDP
socket and opens the service's task group, with its loops (republish, refresh,
node graph saver) and, through :class:`Background`, the protocol's replication
and liveness checks; leaving cancels and awaits every one of them, saves the
node graph and closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from kademlia.node import Node

from keynode.peers.dht.config import DhtConfig
from keynode.peers.dht.graph import GraphEntry, load_graph, save_graph
from keynode.peers.dht.lookup import Lookup, LookupResult
from keynode.peers.dht.protocol import DhtPeer, ValidatingProtocol
from keynode.peers.dht.storage import RecordStorage
from keynode.peers.dht.tasks import Background
from keynode.lifecycle import Service, task_group
from polykey.errors import DiscoveryBindError, DiscoveryNotRunningError, InvalidInputError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg as M
from polykey.wire.records import Address, NodeRecord, Seed, check_host, check_port, dht_key, sign_record

log = logging.getLogger("keynode.peers.dht")

SeedLike = Seed | tuple[NodeId, str, int]
GRAPH_SAVE_DELAY = 5.0  # seconds between a node-graph change and its write (and on shutdown)


class Discovery(Service):
    """Find other keynodes by NodeId through a Kademlia DHT of signed node records.

    ``port=0`` binds a free UDP port (see :attr:`port`). ``addresses`` are the peer
    transport addresses to advertise; by default ``(host, port)``, i.e. the TCP
    transport listens on the same port number as the DHT (docs/spec/discovery.md
    section 1).
    """

    def __init__(
        self,
        keypair: KeyPair,
        *,
        host: str,
        port: int = 0,
        addresses: Sequence[Address] = (),
        seeds: Sequence[SeedLike] = (),
        graph_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        config: DhtConfig = DhtConfig(),
    ) -> None:
        self._keypair = keypair
        self._host = check_host(host, allow_names=False)
        self._port = port
        self._addresses = tuple(addresses)
        self._seeds = [s if isinstance(s, Seed) else Seed(*s) for s in seeds]
        self._graph_path = graph_path
        self._clock = clock
        self.config = config
        self._tasks = Background(config.max_background, log)
        self._storage = RecordStorage(dht_key(keypair.node_id), max_records=config.max_records, clock=clock)
        self._protocol = ValidatingProtocol(keypair.node_id, self._storage, config, self._tasks)
        self._transport: asyncio.DatagramTransport | None = None
        self._manual: dict[NodeId, Address] = {}
        self._saved: list[GraphEntry] = []
        self._record: NodeRecord | None = None
        self._publish_lock = asyncio.Lock()
        self._graph_dirty = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifetime(self) -> AsyncIterator[None]:
        if self._graph_path is not None:
            self._saved = await asyncio.to_thread(load_graph, self._graph_path)
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: self._protocol, local_addr=(self._host, self._port)
            )
        except OSError as exc:
            raise DiscoveryBindError(f"could not bind the DHT to UDP {self._host}:{self._port}: {exc.strerror}") from None
        try:
            self._port = self._transport.get_extra_info("sockname")[1]
            if not self._addresses and not ipaddress.ip_address(self._host).is_unspecified:
                self._addresses = ((self._host, self._port),)
            for entry in self._saved:
                if entry.manual:
                    self._manual[entry.node_id] = (entry.host, entry.port)
                self._add_contact(entry.node_id, entry.host, entry.port)
            async with task_group() as tg:
                self._tasks.open(tg)
                self._tasks.run(self._every(self.config.republish_interval, self._republish), "dht-republish", None)
                self._tasks.run(self._every(self.config.refresh_interval, self._refresh), "dht-refresh", None)
                self._tasks.run(self._graph_saver(), "dht-graph-saver", None)
                log.info("DHT for %s listening on UDP %s:%d", self.node_id, self._host, self._port)
                try:
                    yield
                finally:  # then the group cancels the loops and every background task
                    self._tasks.close()
        finally:
            try:
                if self._graph_path is not None:
                    await asyncio.to_thread(save_graph, self._graph_path, self._graph_entries())
            finally:
                self._transport.close()
                self._transport = None
                await asyncio.sleep(0)  # let connection_lost run and fail pending calls

    def _running(self) -> ValidatingProtocol:
        if self._transport is None:
            raise DiscoveryNotRunningError()
        return self._protocol

    # -- properties ----------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._keypair.node_id

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound UDP port (the real one when constructed with ``port=0``)."""
        return self._port

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self._addresses

    @property
    def has_contacts(self) -> bool:
        """Whether there is anyone to bootstrap from: seeds, or entries of the node graph file."""
        return bool(self._seeds or self._saved or self._manual)

    @property
    def record(self) -> NodeRecord | None:
        """Our latest published record."""
        return self._record

    @property
    def stats(self) -> dict[str, int]:
        """Counters of datagrams, drops by reason, rejected records, timeouts."""
        out = dict(self._protocol.stats)
        out.update({f"storage_rejected_{k}": v for k, v in self._storage.rejected.items()})
        out["stored_records"] = len(self._storage)
        out["rate_limiter_entries"] = len(self._protocol.rate)
        out["outstanding"] = len(self._protocol._outstanding)
        out["background_tasks"] = len(self._tasks)
        return out

    # -- API --------------------------------------------------------------------------------

    async def bootstrap(self) -> int:
        """Join the network through the seeds (and saved nodes), then publish; nodes known after."""
        protocol = self._running()
        loop = asyncio.get_running_loop()
        pings: list[Coroutine[Any, Any, object]] = []
        for seed in self._seeds:
            if seed.node_id != self.node_id:
                pings.append(self._ping_seed(loop, seed))
        known_ids = set()
        for peer in protocol.router.peers():
            known_ids.add(peer.node_id)
            pings.append(protocol.call_ping(peer))
        # Saved and manual entries that left the routing table (they did not answer at an
        # earlier bootstrap) are asked again, so a retry finds nodes that came back.
        for entry in self._saved + [GraphEntry(n, h, p, True) for n, (h, p) in self._manual.items()]:
            if entry.node_id not in known_ids and self._protocol.usable(entry.host, entry.port):
                known_ids.add(entry.node_id)
                pings.append(protocol.call_ping(DhtPeer(entry.node_id, entry.host, entry.port)))
        await asyncio.gather(*pings)
        await self._lookup(dht_key(self.node_id), want_value=False)
        await self.publish()
        # Then the join's bucket refresh (section 7): fills the far ranges of our table and puts
        # us in the tables of nodes there, so lookups from that side can reach us.
        await asyncio.gather(*(self._lookup(rid, want_value=False) for rid in protocol.join_refresh_ids()))
        known = len(protocol.router.peers())
        log.info("DHT bootstrap done: %d nodes known", known)
        return known

    async def _ping_seed(self, loop: asyncio.AbstractEventLoop, seed: Seed) -> None:
        protocol = self._running()
        host = seed.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            family = socket.AF_INET6 if protocol._family == 6 else socket.AF_INET
            try:
                infos = await loop.getaddrinfo(host, seed.port, family=family, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("cannot resolve seed %s: %s", seed, exc)
                return
            host = str(infos[0][4][0])
        if not protocol.usable(host, seed.port):
            log.warning("seed %s is not reachable from UDP %s", seed, self._host)
            return
        answered = await protocol.ping_address((host, seed.port))
        if answered is None:
            log.warning("seed %s did not answer", seed)
        elif answered != seed.node_id:
            log.warning("seed %s answered as another node (%s); ignored", seed, answered)
        else:
            protocol.welcome_if_new(DhtPeer(answered, host, seed.port))

    async def publish(self) -> int:
        """Sign a new record (higher seq) and store it on the k nodes closest to our key.

        Returns how many nodes accepted it. Called periodically and on address change.
        """
        protocol = self._running()
        async with self._publish_lock:
            if not self._addresses:
                log.warning("no address to advertise (bound to %s); not publishing", self._host)
                return 0
            now = self._clock()
            # microseconds: a node restarted within the same millisecond (seen in tests: start,
            # publish, stop, start again) must still publish a higher seq than its last life did
            seq = max(int(now * 1_000_000), self._record.seq + 1 if self._record else 0)
            record = sign_record(self._keypair, self._addresses, seq, int(now) + self.config.record_ttl)
            key, data = dht_key(self.node_id), record.encode()
            self._storage.put(key, data)
            self._record = record
            result = await self._lookup(key, want_value=False)
            replies = await asyncio.gather(*(protocol.call_store(p, key, data) for p in result.closest))
            stored = sum(1 for ok, reply in replies if ok and isinstance(reply, M.Stored) and reply.ok)
            log.info("published record seq %d to %d of %d nodes", seq, stored, len(result.closest))
            return stored

    async def update_addresses(self, addresses: Sequence[Address]) -> int:
        """Change the advertised addresses; republishes at once if they changed."""
        new = tuple((check_host(h), check_port(p)) for h, p in addresses)
        if new == self._addresses:
            return 0
        self._addresses = new
        return await self.publish()

    async def find(self, node_id: NodeId, *, quorum: int | None = None) -> NodeRecord | None:
        """The valid record with the highest seq for ``node_id``, or None. Signature verified.

        The lookup stops after ``quorum`` valid records (default ``config.quorum``; a
        record this node holds counts as one); a larger quorum asks more nodes.
        """
        self._running()
        if node_id == self.node_id:
            return self._record
        key = dht_key(node_id)
        known = self._storage.get_record(key)
        result = await self._lookup(key, want_value=True, known=known, quorum=quorum)
        return result.record

    async def ping(self, host: str, port: int) -> NodeId | None:
        """The NodeId a DHT node at ``host:port`` (IP literal) answers with, or None (unauthenticated)."""
        protocol = self._running()
        address = (check_host(host, allow_names=False), check_port(port))
        return await protocol.ping_address(address) if protocol.usable(*address) else None

    def add_node(self, node_id: NodeId, host: str, port: int) -> None:
        """Add a contact by hand (``pk nodes add``); kept in the node graph file."""
        self._running()
        try:
            address = (check_host(host, allow_names=False), check_port(port))
        except Exception:
            raise InvalidInputError("a node address is an IP address and a port 1..65535") from None
        if node_id == self.node_id:
            raise InvalidInputError("cannot add this node itself")
        self._manual[node_id] = address
        self._add_contact(node_id, *address)
        self._graph_dirty.set()

    def node_graph(self) -> list[dict[str, Any]]:
        """The routing table (and manual entries) for ``pk nodes list``, nearest buckets first."""
        protocol = self._protocol
        rows: list[dict[str, Any]] = []
        seen: set[NodeId] = set()
        for index, bucket in enumerate(protocol.router.buckets):
            for peer in bucket.get_nodes():
                seen.add(peer.node_id)
                rows.append({"node_id": str(peer.node_id), "host": peer.ip, "port": peer.port,
                             "bucket": index, "manual": peer.node_id in self._manual})
        for node_id, (host, port) in self._manual.items():
            if node_id not in seen:
                rows.append({"node_id": str(node_id), "host": host, "port": port, "bucket": None, "manual": True})
        return rows

    # -- internals --------------------------------------------------------------------------

    def _add_contact(self, node_id: NodeId, host: str, port: int) -> None:
        if self._protocol.usable(host, port) and node_id != self.node_id:
            self._protocol.router.add_contact(DhtPeer(node_id, host, port))

    async def _lookup(
        self, key: bytes, *, want_value: bool, known: NodeRecord | None = None, quorum: int | None = None
    ) -> LookupResult:
        protocol = self._running()
        peers = protocol.router.find_neighbors(Node(key), k=self.config.ksize)
        if not peers:
            return LookupResult([], known)
        lookup = Lookup(protocol, key, peers, want_value=want_value, clock=self._clock, known=known, quorum=quorum)
        result = await lookup.run()
        self._graph_dirty.set()
        return result

    def _graph_entries(self) -> list[GraphEntry]:
        entries = [GraphEntry(n, h, p, True) for n, (h, p) in self._manual.items()]
        peers = self._protocol.router.peers()
        for peer in peers:
            if peer.node_id not in self._manual:
                entries.append(GraphEntry(peer.node_id, peer.ip, peer.port, False))
        if not peers:  # nobody answers (offline?): keep what we knew rather than forget it all
            entries += [e for e in self._saved if not e.manual and e.node_id not in self._manual]
        return entries[: self.config.graph_max_nodes]

    async def _every(self, interval: float, action: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception:
                log.exception("periodic DHT task %s failed", getattr(action, "__name__", action))

    async def _republish(self) -> None:
        await self.publish()

    async def _refresh(self) -> None:
        """Refresh buckets without recent lookups (paper 2.3) and drop expired records."""
        self._storage.cull()
        for rid in self._protocol.get_refresh_ids():
            await self._lookup(rid, want_value=False)
        self._graph_dirty.set()

    async def _graph_saver(self) -> None:
        if self._graph_path is None:
            return
        while True:
            await self._graph_dirty.wait()
            await asyncio.sleep(GRAPH_SAVE_DELAY)  # coalesce bursts of changes into one write
            self._graph_dirty.clear()
            try:
                await asyncio.to_thread(save_graph, self._graph_path, self._graph_entries())
            except OSError as exc:
                log.warning("could not save the node graph: %s", exc)
