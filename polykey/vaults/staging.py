"""Parts of a large import held until its one commit (docs/spec/agent-protocol.md s.6, "Imports").

An import larger than one agent frame arrives as several ``secrets.import_stage`` requests, each
adding items under a token, then one ``secrets.import`` naming the token writes everything as one
commit. Until then nothing touches a vault. Bounded: at most :data:`MAX_OPEN` imports at once, each
at most :data:`MAX_IMPORT_ITEMS` secrets, and :data:`MAX_IMPORT_BYTES` of values all together; one
untouched for :data:`IDLE_SECONDS` is dropped (checked at the next part of any import). Held in memory only, by the unlocked service: locking drops them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from polykey.errors import InvalidInputError

#: The most secrets one import may write, and the most value bytes it may hold.
MAX_IMPORT_ITEMS = 100_000
MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_OPEN = 4
IDLE_SECONDS = 300.0

Parts = tuple[str, ...]


def merge_items(into: dict[Parts, bytes], items: dict[Parts, bytes], size: int) -> int:
    """Add ``items`` to ``into`` (a path twice is an error); returns the new total value size."""
    for parts, value in items.items():
        if parts in into:
            raise InvalidInputError(f"{'/'.join(parts)!r} appears twice in the import")
        into[parts] = value
        size += len(value)
    if len(into) > MAX_IMPORT_ITEMS:
        raise InvalidInputError(f"an import may write at most {MAX_IMPORT_ITEMS:,} secrets")
    if size > MAX_IMPORT_BYTES:
        raise InvalidInputError(f"an import may hold at most {MAX_IMPORT_BYTES // (1 << 20)} MiB of values")
    return size


class ImportStaging:
    """Imports in progress, by token."""

    def __init__(self, new_token: Callable[[], str], clock: Callable[[], float] = time.monotonic) -> None:
        self._new_token = new_token
        self._clock = clock
        self._open: dict[str, tuple[dict[Parts, bytes], int, float]] = {}
        self._mutex = threading.Lock()

    def add(self, token: str | None, items: dict[Parts, bytes]) -> tuple[str, int]:
        """Hold ``items`` under ``token`` (None: a new import). Returns ``(token, items held)``.

        On any error the whole import is dropped: a client cannot commit half of one.
        """
        with self._mutex:
            now = self._clock()
            for t in [t for t, (_i, _s, seen) in self._open.items() if now - seen > IDLE_SECONDS]:
                del self._open[t]
            held: dict[Parts, bytes] = {}
            size = 0
            if token is None:
                if len(self._open) >= MAX_OPEN:
                    raise InvalidInputError(f"{MAX_OPEN} imports are already in progress; try again later")
                token = self._new_token()
            else:
                found = self._open.pop(token, None)
                if found is None:
                    raise InvalidInputError("no import in progress under this token (it expired or the agent was locked)")
                held, size, _seen = found
            size = merge_items(held, items, size)
            if size + sum(s for _i, s, _t in self._open.values()) > MAX_IMPORT_BYTES:
                raise InvalidInputError(f"imports in progress hold {MAX_IMPORT_BYTES // (1 << 20)} MiB of values "
                                        "already; try again when they are done")
            self._open[token] = (held, size, now)
            return token, len(held)

    def take(self, token: str) -> tuple[dict[Parts, bytes], int]:
        """The items held under ``token`` and their value size, forgotten here."""
        with self._mutex:
            found = self._open.pop(token, None)
        if found is None:
            raise InvalidInputError("no import in progress under this token (it expired or the agent was locked)")
        return found[0], found[1]

    def clear(self) -> None:
        with self._mutex:
            self._open.clear()

    def __len__(self) -> int:
        return len(self._open)
