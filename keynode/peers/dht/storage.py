"""Validating, bounded record storage for the DHT (docs/spec/discovery.md section 5).

Replaces kademlia's ``ForgetfulStorage``, which keeps any value of any size under
any key. Here a value is only ever a signed :class:`NodeRecord` whose node hashes
to the key; a newer record (higher seq) replaces an older one and never the
other way round; expired records are dropped; at most ``max_records`` are held.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage

from polykey.errors import DiscoveryError, PolykeyError, StaleRecordError
from polykey.wire.records import NodeRecord, decode_record, verify_record

log = logging.getLogger("keynode.peers.dht.storage")


@dataclass(frozen=True)
class _Entry:
    record: NodeRecord
    data: bytes
    stored_at: float  # monotonic


class RecordStorage(IStorage):  # type: ignore[misc]
    """``key -> signed node record`` for the keys this node is close to, plus its own."""

    def __init__(
        self,
        own_key: bytes,
        *,
        max_records: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._own = int.from_bytes(own_key, "big")
        self._max = max_records
        self._clock = clock
        self._monotonic = monotonic
        self._data: dict[bytes, _Entry] = {}
        self.rejected: Counter[str] = Counter()

    # -- our API -----------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> NodeRecord:
        """Validate and store; raise the reason (a :class:`PolykeyError`) if refused.

        An identical copy of the record already held is accepted (a refresh).
        """
        record = verify_record(decode_record(value), now=self._clock(), key=key)
        held = self.get_record(key)
        if held is not None and held != record and not record.newer_than(held):
            raise StaleRecordError()
        if held is None and len(self._data) >= self._max:
            self.cull()
            if len(self._data) >= self._max:
                self._evict_for(key)
        self._data[key] = _Entry(record, value, self._monotonic())
        return record

    def offer(self, key: bytes, value: bytes) -> bool:
        """:meth:`put` that counts and logs a refusal instead of raising."""
        try:
            self.put(key, value)
        except PolykeyError as exc:
            reason = type(exc).__name__
            self.rejected[reason] += 1
            log.debug("refused a record for key %s: %s", key.hex(), reason)
            return False
        return True

    def get_record(self, key: bytes) -> NodeRecord | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.record.expiry <= self._clock():
            del self._data[key]
            return None
        return entry.record

    def cull(self) -> int:
        """Drop expired records; return how many."""
        now = self._clock()
        dead = [k for k, e in self._data.items() if e.record.expiry <= now]
        for k in dead:
            del self._data[k]
        return len(dead)

    def _distance(self, key: bytes) -> int:
        return int.from_bytes(key, "big") ^ self._own

    def _evict_for(self, key: bytes) -> None:
        """Make room by dropping the record farthest from us, if it is farther than ``key``."""
        far_key = max(self._data, key=self._distance)
        if self._distance(far_key) <= self._distance(key):
            raise DiscoveryError("record storage full")
        del self._data[far_key]

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get_record(key) is not None

    # -- kademlia's IStorage -------------------------------------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.offer(key, value)

    def __getitem__(self, key: bytes) -> bytes:
        if self.get_record(key) is None:
            raise KeyError(key)
        return self._data[key].data

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self[key] if self.get_record(key) is not None else default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        self.cull()
        limit = self._monotonic() - seconds_old
        return [(k, e.data) for k, e in self._data.items() if e.stored_at <= limit]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        return iter([(k, e.data) for k, e in self._data.items()])
