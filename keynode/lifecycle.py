"""One lifecycle idiom for long-running services (STYLE.md rule 11; docs/architecture.md "Lifecycle").

A service writes its whole life as one async generator, ``lifetime()``: acquire what it
needs, open ``async with task_group() as tg`` for its tasks, ``yield`` while it serves,
release. When the ``yield`` returns, every task of the group is cancelled and awaited, so
nothing outlives the service. :class:`Service` makes the object itself the async context
manager (``async with Transport(...) as t``), as trio's nurseries and ``asyncio.TaskGroup``
are used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self


class _End(Exception):
    """Raised at the end of a :func:`task_group` body to cancel the tasks still running."""


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` whose tasks are cancelled, then awaited, when its body ends.

    A plain TaskGroup waits for its tasks to finish; a service's tasks (loops, connections)
    run until the service stops. As with a TaskGroup, a task that fails cancels the others
    and the body, and its exception comes out in an ExceptionGroup. An exception of the body
    itself, with no task failing, comes out as itself (a TaskGroup would wrap it in a group at
    every level of nested services, hiding it from ``except`` clauses and from the reader).
    """
    raised: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            try:
                yield tg
            except BaseException as e:
                raised = e
                raise
            raise _End
    except BaseExceptionGroup as group:
        _ends, rest = group.split(_End)
        if rest is None:
            return
        if raised is not None and rest.exceptions == (raised,):
            raise raised from None
        raise rest from None


class Service:
    """Base of a long-running service: ``async with service`` runs :meth:`lifetime` up to its ``yield``."""

    _life: contextlib.AbstractAsyncContextManager[None] | None = None

    def lifetime(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The service's life: an ``@contextlib.asynccontextmanager`` generator yielding once."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._life is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        life = self.lifetime()
        await life.__aenter__()
        self._life = life
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        life, self._life = self._life, None
        if life is None:  # left already (stopped early by hand): nothing is left to close
            return None
        return await life.__aexit__(et, ev, tb)
