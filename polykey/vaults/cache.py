"""Decrypted tree listings, shared by the open vaults of one service (docs/architecture.md "Agent memory").

A git tree is immutable and named by its content, so the decrypted names of its entries never
change: the listing of tree ``oid`` under epoch ``e`` of vault ``v`` can be kept and reused by
every later read of any commit that still holds that tree. ``pk secrets ls -r`` of an unchanged
vault is then a walk over cached listings, and after one write only the trees on the changed
path are decrypted again.

The cache is an LRU bounded both by the number of trees and by an estimate of the bytes it
holds, so a node with many large vaults costs a fixed amount of memory. It holds plaintext names
(never values) and lives only while the keys are unlocked: :meth:`VaultService.close` (the agent
locking) clears it. Thread-safe: calls on different vaults may come from different threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from polykey.vaults.repo import Entry

if TYPE_CHECKING:
    from polykey.vaults.format import EpochKeys


@dataclass(frozen=True, slots=True)
class Listed:
    """One entry of a decrypted tree listing. ``plain`` is None for the entries whose stored name is
    not encrypted (``.pk`` and the directory marker)."""

    stored: str
    plain: str | None
    entry: Entry


Key = tuple[bytes, bytes, str]  # (vault id bytes, key commitment, tree oid)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_TREES = 4096
MAX_BYTES = 3 * 1024 * 1024
#: Estimated bytes of one cached entry beyond its strings (tuple, str headers, dict slot).
ENTRY_OVERHEAD = 200


def listing_size(entries: tuple[Listed, ...]) -> int:
    """The estimated memory of one cached listing, in bytes."""
    return ENTRY_OVERHEAD * (1 + len(entries)) + sum(len(e.stored) + len(e.plain or "") + len(e.entry.oid) for e in entries)


def rows_size(rows: list[dict[str, Any]]) -> int:
    """The estimated memory of one cached ``list_secrets`` answer (its strings are shared)."""
    return ENTRY_OVERHEAD + sum(2 * ENTRY_OVERHEAD + len(r["path"]) for r in rows)


class BoundedCache(Generic[K, V]):
    """LRU of at most ``max_trees`` values and about ``max_bytes`` bytes (as ``size`` estimates)."""

    def __init__(self, max_trees: int, max_bytes: int, size: Callable[[V], int]) -> None:
        self.max_trees = max_trees
        self.max_bytes = max_bytes
        self._size = size
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._mutex = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._mutex:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: K, entries: V) -> None:
        """Keep ``entries``; a value larger than the whole budget is not kept at all."""
        size = self._size(entries)
        if size > self.max_bytes:
            return
        with self._mutex:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (entries, size)
            self._bytes += size
            while len(self._items) > self.max_trees or self._bytes > self.max_bytes:
                _k, (_e, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._mutex:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return self._bytes


class NameCache:
    """One vault's name encryption both ways, per key (by its commitment): a plain path component's
    stored name, and a stored name's plain component.

    AES-SIV names are deterministic, and decryption authenticates: under one key a stored name has
    exactly one plain name and the other way round. A name decrypted once is kept both ways, so a
    tree that changed costs a dict lookup per entry it shares with the trees before it, not a
    decryption: ``ls -r`` of a flat 10,000-secret vault right after a write decrypts the one new
    name (its listing is too large for :class:`TreeNames`). A name encrypted (a read or write of
    a path) is kept one way only: writes alone never pay for the reverse map. At most ``limit``
    entries (both maps together); when full it starts over. Thread-safe in the way a dict is: two
    threads may both compute a name, to the same value.
    """

    def __init__(self, limit: int = 40_000) -> None:
        self.limit = limit
        self._maps: dict[bytes, tuple[dict[str, str], dict[str, str]]] = {}
        self._count = 0

    def _pair(self, keys: EpochKeys) -> tuple[dict[str, str], dict[str, str]]:
        maps = self._maps.get(keys.commitment)
        if maps is None:
            maps = self._maps[keys.commitment] = ({}, {})
        return maps

    def _add(self, maps: tuple[dict[str, str], dict[str, str]], plain: str, stored: str, both: bool) -> None:
        if self._count >= self.limit:  # start over, keeping the (emptied) maps the caller holds
            for to_stored, to_plain in self._maps.values():
                to_stored.clear()
                to_plain.clear()
            self._count = 0
        if plain not in maps[0]:
            maps[0][plain] = stored
            self._count += 1
        if both and stored not in maps[1]:
            maps[1][stored] = plain
            self._count += 1

    def stored(self, keys: EpochKeys, plain: str) -> str:
        """The stored (encrypted) name of the path component ``plain`` under ``keys``."""
        return self._either(keys, 0, plain, keys.encrypt_name)

    def plain(self, keys: EpochKeys, stored: str) -> str:
        """The plain component of the stored name ``stored`` (VaultIntegrityError if it is not one)."""
        return self._either(keys, 1, stored, keys.decrypt_name)

    def _either(self, keys: EpochKeys, side: int, name: str, compute: Callable[[str], str]) -> str:
        """``name`` mapped by ``maps[side]`` (0: plain -> stored, 1: stored -> plain), computed and
        kept if it is not there yet (a decrypted name both ways)."""
        maps = self._pair(keys)
        found = maps[side].get(name)
        if found is None:
            found = compute(name)
            if side == 0:
                self._add(maps, name, found, both=False)
            else:
                self._add(maps, found, name, both=True)
        return found

    def clear(self) -> None:
        self._maps = {}
        self._count = 0

    def __len__(self) -> int:
        """The entries held, both maps together."""
        return self._count


class TreeNames(BoundedCache[Key, tuple[Listed, ...]]):
    """Decrypted tree listings by ``(vault id, key commitment, tree oid)`` (keys by identity, spec 4.3)."""

    def __init__(self, max_trees: int = MAX_TREES, max_bytes: int = MAX_BYTES) -> None:
        super().__init__(max_trees, max_bytes, listing_size)


def answer_size(answer: tuple[bytes, str, list[dict[str, Any]] | None]) -> int:
    return ENTRY_OVERHEAD if answer[2] is None else rows_size(answer[2])


class Listings(BoundedCache[tuple[bytes, tuple[str, ...], bool], tuple[bytes, str, list[dict[str, Any]] | None]]):
    """``list_secrets`` answers by ``(vault id, directory path, recursive)``, each with the key (its
    commitment) and
    directory tree it lists: only the latest answer per directory is kept (after a write the old
    one is replaced, not left to age out), and it answers only while that tree is current. The rows
    are None (only the tree is noted) until the same tree is listed a second time."""

    def __init__(self, max_answers: int = 8, max_bytes: int = 5 * 1024 * 1024) -> None:
        super().__init__(max_answers, max_bytes, answer_size)
