"""Request handlers by method name: the agent's plug-in point for services (docs/spec/agent-protocol.md s.3).

A handler is ``async def handler(ctx: RequestContext, params: dict) -> JSON-able``. It raises a
:class:`polykey.errors.PolykeyError` to answer with an error; it may call ``ctx.progress(obj)`` any
number of times before returning, for long operations. Register with
``agent.handlers.register("nodes.find", handler, needs_unlock=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from polykey.errors import UnknownMethodError

_METHOD = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True)
class RequestContext:
    """What a handler knows about the request it serves."""

    request_id: int
    method: str
    peer_uid: int
    peer_pid: int
    progress: Callable[[Any], Awaitable[None]]


Handler = Callable[[RequestContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Registration:
    handler: Handler
    needs_unlock: bool


class HandlerRegistry:
    """Method name -> handler. Names are dotted lower-case (``vaults.create``, ``nodes.find``)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Registration] = {}

    def register(self, method: str, handler: Handler, *, needs_unlock: bool = True) -> None:
        """Add a handler. ``needs_unlock``: answer AgentLockedError while the agent is locked."""
        if not _METHOD.match(method) or len(method) > 64:
            raise ValueError(f"bad method name {method!r}")
        if method in self._handlers:
            raise ValueError(f"method {method!r} is already registered")
        self._handlers[method] = Registration(handler, needs_unlock)

    def lookup(self, method: str) -> Registration:
        try:
            return self._handlers[method]
        except KeyError:
            raise UnknownMethodError(f"the agent does not know the method {method!r}", method=method) from None

    def methods(self) -> list[str]:
        return sorted(self._handlers)
