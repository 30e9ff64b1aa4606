"""Per-source token buckets with a bounded table (STYLE.md rule 12)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    """Allow ``rate`` events per second (burst ``burst``) per key, tracking at most ``max_entries`` keys.

    The least recently seen key is forgotten first; a forgotten key starts again
    with a full bucket, so eviction can only make the limiter more lenient, never
    lock an honest peer out.
    """

    def __init__(
        self, rate: float, burst: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_entries
        self._clock = clock
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def allow(self, key: Hashable) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
            bucket = [self._burst, now]
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)
