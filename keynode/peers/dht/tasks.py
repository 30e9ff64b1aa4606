"""The DHT service's background tasks, in the task group of its lifetime (STYLE.md rules 11 and 12)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from keynode.failures import describe
from polykey.errors import DiscoveryNotRunningError

T = TypeVar("T")


class Background:
    """Starts tasks in the task group that :class:`keynode.peers.dht.Discovery` holds while it runs.

    kademlia's protocol callbacks are synchronous, so they cannot open a group of their own:
    they start replication and liveness checks here, and leaving the service's context
    cancels and awaits them with the rest of its group. At most ``limit`` of them run at
    once, so a flood cannot grow them; a task that fails is logged and never takes the
    service down.
    """

    def __init__(self, limit: int, log: logging.Logger) -> None:
        self._limit = limit
        self._log = log
        self._tg: asyncio.TaskGroup | None = None
        self._counted: set[asyncio.Task[Any]] = set()

    def open(self, tg: asyncio.TaskGroup) -> None:
        """Start tasks in ``tg`` (the service's group) from now on."""
        self._tg = tg

    def close(self) -> None:
        """Start no more tasks; the group cancels those running as the service's context exits."""
        self._tg = None

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> bool:
        """Run ``coro`` unless the service is not running or ``limit`` tasks run already."""
        if self._tg is None or len(self._counted) >= self._limit:
            coro.close()
            return False
        return self.keep(self.run(coro, name, None))

    def run(self, coro: Coroutine[Any, Any, T], name: str, fallback: T) -> asyncio.Task[T]:
        """Run ``coro`` for a caller that awaits or cancels it (a lookup's requests), not counted
        against the limit; if it fails, log why and return ``fallback``."""
        if self._tg is None:
            coro.close()
            raise DiscoveryNotRunningError()
        task = self._tg.create_task(self._guarded(coro, name, fallback), name=name)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it started: never awaited
        return task

    def keep(self, task: asyncio.Task[Any]) -> bool:
        """Count a task of :meth:`run` its caller leaves running (a finished lookup's slow requests)
        against the limit; False, for the caller to cancel it, if ``limit`` run already."""
        if self._tg is None or len(self._counted) >= self._limit:
            return False
        self._counted.add(task)
        task.add_done_callback(self._counted.discard)
        return True

    async def _guarded(self, coro: Coroutine[Any, Any, T], name: str, fallback: T) -> T:
        try:
            return await coro
        except Exception as e:  # noqa: BLE001 - one failed check must not cancel the service's group
            self._log.warning("background task %s failed: %s", name, describe(e))
            del e
            return fallback

    def __len__(self) -> int:
        return len(self._counted)
