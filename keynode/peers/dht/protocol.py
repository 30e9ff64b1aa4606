"""The validating Kademlia protocol over UDP (docs/spec/discovery.md sections 4 and 6).

Subclasses of the ``kademlia`` package's protocol, routing table and node that
change what upstream (kademlia 2.2.3 on rpcudp 5.0.1) does wrong for us:

- rpcudp looks up ``rpc_<name>`` for any name in a datagram and calls it with
  any arguments; unpacks any msgpack of any size; spawns a task per datagram
  (unbounded); raises out of those tasks on junk; accepts a reply from any
  address; waits 5 s per request. Here: a strict codec (:mod:`polykey.wire.dhtmsg`),
  an explicit allow-list dispatch, a datagram cap, per-source rate limiting,
  synchronous request handling (no task per datagram), replies matched to the
  address asked, a cap on outstanding requests and shorter timeouts.
- ``welcome_if_new`` hashed storage keys again (``digest(key)``) though they are
  already DHT keys, so replication went to the wrong nodes; fixed. Its store
  calls, and the routing table's liveness pings, were ``ensure_future`` with no
  owner; here they run in the service's task group, bounded (:class:`Background`).
- Peers carry their 32-byte NodeId; their 20-byte DHT id is always derived from
  it (``blake2b(pubkey, 20)``), never taken from the wire.
- Upstream adds any claimed id from any sender, so one socket could fill a
  routing table with made-up ids. Here one UDP endpoint holds one entry (a new id
  at a known endpoint only triggers a liveness ping of the old one), and one IP
  address at most ``max_nodes_per_ip`` entries (loopback exempt, for local clusters).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import ipaddress
import logging
import os
import random
import time
from collections import Counter
from typing import Any

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from keynode.peers.dht.config import DhtConfig
from keynode.failures import describe
from keynode.peers.dht.ratelimit import RateLimiter
from keynode.peers.dht.storage import RecordStorage
from keynode.peers.dht.tasks import Background
from polykey.errors import DatagramError
from polykey.ids import NodeId
from polykey.wire import dhtmsg as M
from polykey.wire.records import dht_key

log = logging.getLogger("keynode.peers.dht.protocol")

Addr = tuple[str, int]
CallResult = tuple[bool, M.Reply | None]


@functools.lru_cache(maxsize=1024)
def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal, else None (cached: asked for every contact of every reply)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


class DhtPeer(Node):  # type: ignore[misc]
    """A kademlia ``Node`` that knows its NodeId; its DHT id is derived from it."""

    def __init__(self, node_id: NodeId, host: str | None = None, port: int | None = None) -> None:
        super().__init__(dht_key(node_id), host, port)
        self.node_id = node_id

    @property
    def address(self) -> Addr:
        assert self.ip is not None and self.port is not None
        return (self.ip, self.port)


class Router(RoutingTable):  # type: ignore[misc]
    """Upstream's routing table with its liveness pings owned by the service, and the
    bucket lookup fixed for an id equal to a bucket's upper bound."""

    def __init__(self, protocol: ValidatingProtocol, ksize: int, node: DhtPeer) -> None:
        super().__init__(protocol, ksize, node)

    def add_contact(self, node: DhtPeer) -> None:
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self.add_contact(node)
        else:  # full: check the least recently seen node; a dead one makes room
            protocol: ValidatingProtocol = self.protocol
            protocol.tasks.start(protocol.call_ping(bucket.head()), "dht-liveness-ping")

    def remove_contact(self, node: DhtPeer) -> None:
        """Remove ``node``'s entry, but only if it is at ``node``'s address: a stale address of a
        node (from an old contact list) failing must not evict the entry at its current one."""
        held = self.entry(node.id)
        if held is None or held.address == node.address:
            super().remove_contact(node)

    def entry(self, dht_id: bytes) -> DhtPeer | None:
        """The routing-table entry (or replacement) with this DHT id, if any."""
        bucket = self.buckets[self.get_bucket_for(Node(dht_id))]
        found: DhtPeer | None = bucket.nodes.get(dht_id) or bucket.replacement_nodes.get(dht_id)
        return found

    def get_bucket_for(self, node: Node) -> int:
        for index, bucket in enumerate(self.buckets):
            if node.long_id <= bucket.range[1]:
                return index
        return len(self.buckets) - 1

    def peers(self) -> list[DhtPeer]:
        return [n for bucket in self.buckets for n in bucket.get_nodes()]

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[DhtPeer]:
        """The ``k`` entries nearest to ``node`` by XOR distance, nearest first.

        Upstream walks the buckets outward from ``node``'s and keeps the first ``k`` it meets.
        Its walker stops as soon as the buckets on the right run out while it is due to go
        left, so a lookup could start from a handful of entries, or none, with a full table
        (seen as failed lookups in a simulated network of 400 nodes: bench/bench_dht_scale.py);
        and the first ``k`` met are not always the nearest. A table holds at most a few
        hundred entries: taking the nearest of all of them is cheap.

        An entry whose id is ``node``'s is included (upstream left it out): a node record's DHT
        key is its node's id, and that node holds its own record. Left out, a lookup never asked
        the node itself and nobody ever returned it as a contact for its own key, so once the other
        holders of its record had died a live node could not be found (tests/faults/
        test_dht_churn.py failed so now and then: after two of five nodes were killed, the
        other two could not find the seed for 90 s).
        """
        k = k or self.ksize
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        candidates = [n for n in self.peers() if exclude is None or not n.same_home_as(exclude)]
        return heapq.nsmallest(k, candidates, key=node.distance_to)

    def _all_entries(self) -> list[DhtPeer]:
        return [n for b in self.buckets for n in (*b.nodes.values(), *b.replacement_nodes.values())]

    def holder_of(self, host: str, port: int, other_than: bytes) -> DhtPeer | None:
        """The entry (other than ``other_than``) already at this UDP endpoint, if any."""
        for n in self._all_entries():
            if n.port == port and n.ip == host and n.id != other_than:
                return n
        return None

    def count_ip(self, host: str) -> int:
        return sum(1 for n in self._all_entries() if n.ip == host)


class ValidatingProtocol(KademliaProtocol):  # type: ignore[misc]
    """One node's UDP endpoint: answers the four RPCs and makes calls with timeouts."""

    def __init__(
        self, node_id: NodeId, storage: RecordStorage, config: DhtConfig, tasks: Background
    ) -> None:
        super().__init__(DhtPeer(node_id), storage, config.ksize)
        self.router = Router(self, config.ksize, self.source_node)
        self.node_id = node_id
        self.config = config
        self.tasks = tasks
        self.storage: RecordStorage = storage
        self.stats: Counter[str] = Counter()
        self.rate = RateLimiter(config.rate_per_second, config.rate_burst, config.max_rate_entries)
        self._outstanding: dict[bytes, tuple[asyncio.Future[CallResult], Addr, str]] = {}
        self._family: int | None = None
        self._self_addr: Addr | None = None
        self._last_warning = 0.0
        self._unreported = 0
        self._moving: set[bytes] = set()  # DHT ids whose old address is being checked

    def get_refresh_ids(self) -> list[bytes]:
        """Random ids in buckets without a lookup for an hour (upstream could draw 2**160,
        which does not fit in 20 bytes: the last bucket's range is inclusive)."""
        top = (1 << 160) - 1
        return [
            random.randint(lo, min(hi, top)).to_bytes(20, "big")
            for lo, hi in (b.range for b in self.router.lonely_buckets())
        ]

    def join_refresh_ids(self) -> list[bytes]:
        """One random id in each range of distance further away than our nearest contact.

        Paper section 2.3: a joining node looks up its own id, then "refreshes all k-buckets
        further away than its closest neighbor". The self-lookup only meets nodes near us, so
        without this a table can hold nothing in the far half of the id space, and every lookup
        that reaches such a node from that side stops there (bench/bench_dht_scale.py: 5-20% of
        lookups failed at 1,000 and 5,000 nodes). Range ``i`` holds the ids whose first
        difference with ours is bit ``i`` (from the top); upstream's table need not have a bucket
        per range (its buckets split only as they fill), so the ranges are computed here.
        """
        me = self.source_node.long_id
        nearest = self.router.find_neighbors(self.source_node, k=1)
        if not nearest:
            return []
        shared = 160 - (me ^ nearest[0].long_id).bit_length()  # bits in common with the nearest
        ids = []
        for i in range(shared):
            low = 159 - i  # the bit that differs; the bits below it are random
            prefix = ((me >> low) ^ 1) << low
            ids.append((prefix | random.getrandbits(low)).to_bytes(20, "big"))
        return ids

    # -- asyncio.DatagramProtocol ---------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sockname = transport.get_extra_info("sockname")
        self._family = 6 if len(sockname) == 4 else 4
        self._self_addr = (sockname[0], sockname[1])

    def connection_lost(self, exc: Exception | None) -> None:
        for fut, _, _ in list(self._outstanding.values()):
            if not fut.done():
                fut.set_result((False, None))
        self._outstanding.clear()

    def error_received(self, exc: Exception) -> None:
        self.stats["socket_errors"] += 1
        log.debug("UDP error: %r", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer: Addr = (addr[0], addr[1])
        try:
            self.stats["datagrams"] += 1
            if len(data) > M.MAX_DATAGRAM:
                return self._drop(peer, "oversize")
            if not self.rate.allow(peer):
                return self._drop(peer, "rate_limited", warn=False)
            try:
                msg = M.decode_datagram(data)
            except DatagramError as exc:
                return self._drop(peer, "malformed", exc.message)
            if isinstance(msg, M.DhtResponse):
                return self._accept_reply(msg, peer)
            reply = self._answer(msg.body, peer)
            if reply is not None:
                self._send(M.encode_reply(msg.msg_id, reply), peer)
        except Exception as e:  # a bug must not take the endpoint down: one line, never the bytes
            self.stats["internal_errors"] += 1
            log.error("internal error handling a datagram from %s: %s", peer, describe(e))
            del e
        return None

    def _drop(self, peer: Addr, reason: str, detail: str = "", *, warn: bool = True) -> None:
        self.stats[f"dropped_{reason}"] += 1
        now = time.monotonic()
        if warn and now - self._last_warning >= 1.0:  # at most one line a second under a flood
            log.warning("dropped a DHT datagram from %s: %s %s(%d more dropped since the last report)",
                        peer, reason, f"({detail}) " if detail else "", self._unreported)
            self._last_warning, self._unreported = now, 0
        else:
            self._unreported += 1

    def _send(self, data: bytes, peer: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, peer)

    def usable(self, host: str, port: int) -> bool:
        """Whether we can send to this contact (same IP family, not ourselves)."""
        return _ip_version(host) == self._family and (host, port) != self._self_addr

    # -- answering requests (the allow-list) ----------------------------------------------

    def _answer(self, body: M.RequestBody, peer: Addr) -> M.Reply | None:
        self.stats[f"rpc_{type(body).__name__.lower()}"] += 1
        if body.sender == self.node_id:
            return None  # someone replaying our own requests at us
        source = DhtPeer(body.sender, *peer)
        if isinstance(body, M.Ping):
            return self.rpc_ping(source)
        if isinstance(body, M.Store):
            return self.rpc_store(source, body.key, body.value)
        if isinstance(body, M.FindNode):
            return self.rpc_find_node(source, body.key)
        return self.rpc_find_value(source, body.key)

    def rpc_ping(self, source: DhtPeer) -> M.Reply:
        self.welcome_if_new(source)
        return M.Pong(self.node_id)

    def rpc_store(self, source: DhtPeer, key: bytes, value: bytes) -> M.Reply:
        self.welcome_if_new(source)
        ok = self.storage.offer(key, value)
        if not ok:
            self.stats["rejected_records"] += 1
        return M.Stored(ok)

    def rpc_find_node(self, source: DhtPeer, key: bytes) -> M.Reply:
        self.welcome_if_new(source)
        neighbors = self.router.find_neighbors(Node(key), exclude=source)
        return M.Nodes(tuple(M.Contact(n.node_id, n.ip, n.port) for n in neighbors[: M.MAX_CONTACTS]))

    def rpc_find_value(self, source: DhtPeer, key: bytes) -> M.Reply:
        value = self.storage.get(key)
        if value is None:
            return self.rpc_find_node(source, key)
        self.welcome_if_new(source)
        return M.Value(value)

    def welcome_if_new(self, node: DhtPeer) -> None:
        """Add a node to the routing table; hand it the records it should now hold (paper 2.5).

        Upstream wrapped each storage key in ``digest()`` again here; our keys are
        already DHT keys and are used as they are.
        """
        if not self.usable(node.ip, node.port):
            return
        if not self.router.is_new_node(node):
            known = self.router.entry(node.id)
            if known is not None and known.address != node.address and node.id not in self._moving:
                # The node may have moved (restarted on another port): ask the old address; if
                # nobody answers there as that node any more, the entry takes the new address.
                self.stats["moved_checks"] += 1
                self._moving.add(node.id)
                if not self.tasks.start(self._check_moved(known, node), "dht-moved-check"):
                    self._moving.discard(node.id)
            return
        holder = self.router.holder_of(node.ip, node.port, node.id)
        if holder is not None:  # one node per endpoint: ask the one we know whether it is still there
            self.stats["endpoint_conflicts"] += 1
            self.tasks.start(self.call_ping(holder), "dht-endpoint-check")
            return
        if not ipaddress.ip_address(node.ip).is_loopback and self.router.count_ip(node.ip) >= self.config.max_nodes_per_ip:
            self.stats["ip_limit_refusals"] += 1
            return
        table = [n.long_id for n in self.router.peers()]
        for key, value in self.storage:
            if len(self.tasks) >= self.config.max_background:
                break
            if self._hands_over(node, Node(key), table):
                self.tasks.start(self.call_store(node, key, value), "dht-replicate")
        self.router.add_contact(node)

    def _hands_over(self, new: DhtPeer, key: Node, table: list[int]) -> bool:
        """Whether a newcomer gets our copy of ``key`` (upstream's rule): we know nobody nearer to
        the key than us, and the newcomer is nearer than the k-th nearest we know (or we know
        nobody). The same test as upstream's ``find_neighbors`` per key, without a table walk
        and a sort per stored record (it ran for every record on every new contact). ``table``:
        the routing table's ids as integers (``long_id``), read once per newcomer; the XOR
        distances are computed on them directly (this loop was most of the CPU time of the
        5,000-node simulation in bench/bench_dht_scale.py)."""
        self.router.buckets[self.router.get_bucket_for(key)].touch_last_updated()  # as find_neighbors did
        k = key.long_id
        distances = [k ^ i for i in table if i != k]
        if not distances:
            return True
        if k ^ self.source_node.long_id >= min(distances):
            return False
        return bool(k ^ new.long_id < heapq.nsmallest(self.config.ksize, distances)[-1])

    async def _check_moved(self, old: DhtPeer, new: DhtPeer) -> None:
        try:
            ok, _ = await self.call_ping(old)  # no valid answer: removed from the table
            if not ok:
                self.welcome_if_new(new)
        finally:
            self._moving.discard(new.id)

    # -- making calls --------------------------------------------------------------------

    def _accept_reply(self, msg: M.DhtResponse, peer: Addr) -> None:
        entry = self._outstanding.get(msg.msg_id)
        if entry is None:
            return self._drop(peer, "unexpected_reply", warn=False)
        fut, expected, method = entry
        if peer != expected:
            return self._drop(peer, "reply_from_wrong_address")
        del self._outstanding[msg.msg_id]
        try:
            reply = M.decode_reply(method, msg.payload)
        except DatagramError as exc:
            self._drop(peer, "malformed_reply", exc.message)
            reply = None
        if not fut.done():
            fut.set_result((reply is not None, reply))
        return None

    async def call(self, address: Addr, body: M.RequestBody) -> CallResult:
        """Send one request and wait (at most ``rpc_timeout``) for its validated reply."""
        if self.transport is None or self.transport.is_closing():
            return (False, None)
        if len(self._outstanding) >= self.config.max_outstanding:
            self.stats["calls_refused_outstanding"] += 1
            return (False, None)
        request = M.DhtRequest(os.urandom(M.MSG_ID_BYTES), body)
        fut: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self._outstanding[request.msg_id] = (fut, address, request.method)
        try:
            self.transport.sendto(M.encode_request(request), address)
            return await asyncio.wait_for(fut, self.config.rpc_timeout)
        except TimeoutError:
            self.stats["timeouts"] += 1
            return (False, None)
        finally:
            self._outstanding.pop(request.msg_id, None)

    async def ping_address(self, address: Addr) -> NodeId | None:
        """Ping an address whose NodeId we may not know; the NodeId it answers with."""
        ok, reply = await self.call(address, M.Ping(self.node_id))
        return reply.node_id if ok and isinstance(reply, M.Pong) else None

    async def call_ping(self, node: DhtPeer) -> CallResult:
        result = await self.call(node.address, M.Ping(self.node_id))
        if result[0] and isinstance(result[1], M.Pong) and result[1].node_id != node.node_id:
            result = (False, None)  # a different node answers there now
        return self.handle_call_response(result, node)

    async def call_store(self, node: DhtPeer, key: bytes, value: bytes) -> CallResult:
        return self.handle_call_response(await self.call(node.address, M.Store(self.node_id, key, value)), node)

    async def call_find_node(self, node: DhtPeer, node_to_find: Node) -> CallResult:
        body = M.FindNode(self.node_id, node_to_find.id)
        return self.handle_call_response(await self.call(node.address, body), node)

    async def call_find_value(self, node: DhtPeer, node_to_find: Node) -> CallResult:
        body = M.FindValue(self.node_id, node_to_find.id)
        return self.handle_call_response(await self.call(node.address, body), node)

    def handle_call_response(self, result: CallResult, node: DhtPeer) -> CallResult:
        if not result[0]:
            log.debug("no valid reply from %s, removing it from the routing table", node)
            self.router.remove_contact(node)
            return result
        self.welcome_if_new(node)
        return result

    def __getattr__(self, name: str) -> Any:
        # rpcudp turns any unknown attribute into a remote call; we never want that.
        raise AttributeError(name)
