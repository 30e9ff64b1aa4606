"""One request model for the agent socket and the peer transport (docs/architecture.md "Requests").

A handler is ``async def handler(ctx: RequestContext[C], params: dict) -> answer``, registered by
method name in a :class:`HandlerRegistry`. ``ctx.caller`` says who is asking: a
:class:`LocalCaller` (uid and pid of a process of the agent's user, on the agent socket) or a
:class:`PeerCaller` (the NodeId the Noise handshake proved, on the peer transport). A handler
raises a :class:`polykey.errors.PolykeyError` to answer with an error; both servers send it as
``{type, message, data}`` (:meth:`PolykeyError.to_wire`) and the caller rebuilds the same class
(:func:`polykey.errors.from_wire`). Anything else a handler raises is a bug: it is logged and the
caller gets :func:`internal_error`. ``ctx.progress(obj)`` sends progress on the agent socket (long
operations) and does nothing on the transport.

Register agent methods with ``agent.handlers.register("nodes.find", handler, needs_unlock=True)``,
peer methods with ``transport.register("ping", handler)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from keynode.failures import describe
from polykey.errors import PolykeyError, UnknownMethodError
from polykey.ids import NodeId

#: Agent method names: dotted lower-case (``vaults.create``, ``nodes.find``).
AGENT_METHOD = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

C = TypeVar("C", "LocalCaller", "PeerCaller")


@dataclass(frozen=True)
class LocalCaller:
    """A process of the agent's own user, on the agent socket (its SO_PEERCRED)."""

    uid: int
    pid: int

    def __str__(self) -> str:
        return f"pid {self.pid}"


@dataclass(frozen=True)
class PeerCaller:
    """A peer node, on the transport: its NodeId is proven by the handshake."""

    node_id: NodeId

    def __str__(self) -> str:
        return str(self.node_id)


async def no_progress(obj: Any) -> None:
    """``ctx.progress`` where progress cannot be sent (the peer transport)."""


@dataclass(frozen=True)
class RequestContext(Generic[C]):
    """What a handler knows about the request it serves."""

    request_id: int
    method: str
    caller: C
    progress: Callable[[Any], Awaitable[None]] = no_progress


AgentContext = RequestContext[LocalCaller]
PeerContext = RequestContext[PeerCaller]
Handler = Callable[[RequestContext[C], dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Registration(Generic[C]):
    handler: Handler[C]
    needs_unlock: bool


class HandlerRegistry(Generic[C]):
    """Method name -> handler. ``pattern``: the names this server accepts; ``unknown(method)``: the
    error answering a method nobody registered (the defaults are the agent's)."""

    def __init__(
        self, pattern: re.Pattern[str] = AGENT_METHOD, unknown: Callable[[str], PolykeyError] | None = None
    ) -> None:
        self._pattern = pattern
        self._unknown = unknown or _unknown_agent_method
        self._handlers: dict[str, Registration[C]] = {}

    def register(self, method: str, handler: Handler[C], *, needs_unlock: bool = True) -> None:
        """Add a handler. ``needs_unlock``: on the agent, answer AgentLockedError while it is locked."""
        if not self._pattern.match(method) or len(method) > 64:
            raise ValueError(f"bad method name {method!r}")
        if method in self._handlers:
            raise ValueError(f"method {method!r} is already registered")
        self._handlers[method] = Registration(handler, needs_unlock)

    def lookup(self, method: str) -> Registration[C]:
        try:
            return self._handlers[method]
        except KeyError:
            raise self._unknown(method) from None

    def methods(self) -> list[str]:
        return sorted(self._handlers)


def _unknown_agent_method(method: str) -> PolykeyError:
    return UnknownMethodError(f"the agent does not know the method {method!r}", method=method)


def internal_error(log: logging.Logger, ctx: RequestContext[Any], e: BaseException, message: str) -> PolykeyError:
    """The answer to a request whose handler failed with ``e``, which is not a PolykeyError (a bug).

    Logged as one line naming where it was raised, not its text (it may quote a secret); the
    caller gets ``message`` and learns nothing more.
    """
    log.error("internal error serving %s: %s (caller: %s)", ctx.method, describe(e), ctx.caller)
    return PolykeyError(message)
