"""Iterative lookups (docs/spec/discovery.md section 7).

A subclass of kademlia's ``SpiderCrawl`` (its ``NodeHeap`` of the k nearest) with
its own loop instead of upstream's round-by-round ``gather``:

- up to ``alpha`` requests are in flight; each reply immediately lets the next
  one go, and a request slower than ``straggler_timeout`` stops holding its slot,
  so one dead node never stalls a round;
- a value lookup validates every record it is given (signature, key, expiry) and
  returns the one with the highest ``seq`` (upstream returns "the most common
  value", which whoever answers most often decides);
- a lookup ends when the k nearest have all been asked (stragglers are not
  waited for once someone has answered), on ``quorum`` valid records, or at
  ``lookup_timeout``. Its requests run in the service's task group (bounded), and
  those still in flight then finish there, so a dead node still times out and
  leaves the routing table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kademlia.crawling import SpiderCrawl
from kademlia.node import Node

from keynode.peers.dht.protocol import CallResult, DhtPeer, ValidatingProtocol
from polykey.errors import PolykeyError
from polykey.wire import dhtmsg as M
from polykey.wire.records import NodeRecord, parse_record

log = logging.getLogger("keynode.peers.dht.lookup")
#: What a request that failed (or was cancelled by the service stopping) counts as.
FAILED: CallResult = (False, None)


@dataclass
class LookupResult:
    closest: list[DhtPeer]  # the k nearest that answered, nearest first
    record: NodeRecord | None = None  # highest valid seq seen (value lookups)
    holders: list[DhtPeer] = field(default_factory=list)  # peers that returned a valid record
    rejected: int = 0  # invalid records offered to us


class Lookup(SpiderCrawl):  # type: ignore[misc]
    def __init__(
        self,
        protocol: ValidatingProtocol,
        key: bytes,
        peers: Sequence[DhtPeer],
        *,
        want_value: bool,
        clock: Callable[[], float],
        known: NodeRecord | None = None,
        quorum: int | None = None,
    ) -> None:
        cfg = protocol.config
        self.quorum = quorum if quorum is not None else cfg.quorum
        super().__init__(protocol, Node(key), list(peers), cfg.ksize, cfg.alpha)
        self.protocol: ValidatingProtocol = protocol
        self.key = key
        self.want_value = want_value
        self.clock = clock
        self.best = known
        self.valid = 1 if known is not None else 0
        self.holders: list[DhtPeer] = []
        self.answered: set[bytes] = set()
        self.rejected = 0

    async def run(self) -> LookupResult:
        cfg = self.protocol.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.lookup_timeout
        inflight: dict[asyncio.Task[CallResult], tuple[DhtPeer, float]] = {}
        finished = False
        try:
            while not (self.want_value and self.valid >= self.quorum):
                now = loop.time()
                if now >= deadline:
                    log.debug("lookup for %s hit its deadline", self.key.hex())
                    self.protocol.stats["lookup_deadlines"] += 1
                    break
                active = sum(1 for _, t0 in inflight.values() if now - t0 < cfg.straggler_timeout)
                uncontacted = self.nearest.get_uncontacted()
                for peer in uncontacted[: max(0, self.alpha - active)]:
                    self.nearest.mark_contacted(peer)
                    inflight[self.protocol.tasks.run(self._ask(peer), "dht-lookup-request", FAILED)] = (peer, now)
                    active += 1
                if not inflight:
                    break
                if active == 0 and not self.nearest.get_uncontacted() and self.answered:
                    break  # only stragglers left, and we have answers
                wake = min([t0 + cfg.straggler_timeout for _, t0 in inflight.values()
                            if t0 + cfg.straggler_timeout > now], default=deadline)
                done, _ = await asyncio.wait(
                    inflight, timeout=max(0.0, min(wake, deadline) - now), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    peer, _ = inflight.pop(task)
                    self._handle(peer, FAILED if task.cancelled() else task.result())  # cancelled: stopping
            finished = True
        finally:
            dropped = [t for t in inflight if not (finished and self.protocol.tasks.keep(t))]
            for task in dropped:
                task.cancel()
            if dropped:
                await asyncio.gather(*dropped, return_exceptions=True)
        closest = [p for p in self.nearest if p.id in self.answered]
        return LookupResult(closest, self.best, self.holders, self.rejected)

    async def _ask(self, peer: DhtPeer) -> CallResult:
        if self.want_value:
            return await self.protocol.call_find_value(peer, self.node)
        return await self.protocol.call_find_node(peer, self.node)

    def _handle(self, peer: DhtPeer, result: CallResult) -> None:
        ok, reply = result
        if not ok:
            self.nearest.remove([peer.id])
            return
        self.answered.add(peer.id)
        if isinstance(reply, M.Value):
            self._take_record(peer, reply.value)
        elif isinstance(reply, M.Nodes):
            fresh = [
                DhtPeer(c.node_id, c.host, c.port)
                for c in reply.contacts
                if c.node_id != self.protocol.node_id and self.protocol.usable(c.host, c.port)
            ]
            self.nearest.push(fresh)

    def _take_record(self, peer: DhtPeer, value: bytes) -> None:
        try:
            record = parse_record(value, now=self.clock(), key=self.key)
        except PolykeyError as exc:
            self.rejected += 1
            self.protocol.stats["rejected_lookup_records"] += 1
            log.info("ignored an invalid record for %s from %s: %s", self.key.hex(), peer, type(exc).__name__)
            return
        self.valid += 1
        self.holders.append(peer)
        if self.best is None or record.newer_than(self.best):
            self.best = record
