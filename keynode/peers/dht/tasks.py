"""A bounded set of background tasks owned by one service (STYLE.md rules 11 and 12)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    """Tasks the owner starts and, on :meth:`aclose`, cancels and awaits. Nothing is fire-and-forget.

    :meth:`spawn` refuses (and closes the coroutine) when ``limit`` tasks are
    already running or the set is closed, so a flood cannot grow it.
    """

    def __init__(self, limit: int, log: logging.Logger) -> None:
        self._limit = limit
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> bool:
        if self._closed or len(self._tasks) >= self._limit:
            coro.close()
            return False
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def adopt(self, task: asyncio.Task[Any]) -> bool:
        """Take ownership of a running task (it is cancelled on :meth:`aclose`); False if full."""
        if self._closed or len(self._tasks) >= self._limit:
            return False
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.warning("background task %s failed: %r", task.get_name(), task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
