"""Tunables of the DHT (docs/spec/discovery.md section 6). Every one has a bound."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DhtConfig:
    """Kademlia parameters and the limits that keep a node's cost bounded."""

    ksize: int = 20  # k: bucket size and replication factor (<= dhtmsg.MAX_CONTACTS = 20)
    alpha: int = 3  # parallel requests per lookup
    rpc_timeout: float = 1.0  # a request without a reply after this is a failure
    straggler_timeout: float = 0.25  # a slower request stops holding one of the alpha slots
    lookup_timeout: float = 5.0  # hard cap on one lookup
    quorum: int = 3  # a record lookup stops after this many valid records (returns the highest seq)
    record_ttl: int = 3600  # our record's lifetime (seconds)
    republish_interval: float = 1200.0  # republish our record this often (record_ttl / 3)
    refresh_interval: float = 900.0  # refresh lonely buckets, cull records, save the node graph
    max_records: int = 2048  # records held for other nodes (each <= 1 KB)
    rate_per_second: float = 200.0  # datagrams accepted per source address per second...
    rate_burst: float = 400.0  # ...with this burst
    max_rate_entries: int = 4096  # source addresses tracked by the rate limiter (LRU)
    max_outstanding: int = 1024  # our requests awaiting a reply
    max_nodes_per_ip: int = 8  # routing-table entries per IP address (loopback exempt)
    max_background: int = 64  # replication and liveness-check tasks in flight
    graph_max_nodes: int = 1000  # entries saved in the node graph file

    def __post_init__(self) -> None:
        if not 1 <= self.ksize <= 20 or not 1 <= self.alpha <= self.ksize or self.quorum < 1:
            raise ValueError("invalid DHT parameters")
        if min(self.rpc_timeout, self.straggler_timeout, self.lookup_timeout) <= 0:
            raise ValueError("DHT timeouts must be positive")
