"""The peer network's explicit state (keynode.peers.network; docs/architecture.md "Lifecycle")."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keynode.peers.dht import Discovery
    from keynode.peers.transport import Transport


class PeerState(enum.Enum):
    """What the peer services are doing; ``peer`` in `pk agent status` follows it."""

    LOCKED = "locked"  # not running: they hold the key, and the agent is locked
    STARTING = "starting"  # (re)starting or stopping after a lock or unlock: requests wait for it
    RUNNING = "running"
    FAILED = "failed"  # stopped by an error after the agent started; the next unlock tries again
    STOPPED = "stopped"  # the network service has exited (the agent is stopping)


@dataclass(frozen=True)
class Peers:
    """The state, with the running services (RUNNING) or why they stopped (FAILED)."""

    state: PeerState
    services: tuple[Transport, Discovery] | None = None
    error: str | None = None

    def status(self, host: str, port: int) -> dict[str, Any] | None:
        """``peer`` in the agent status: where the services listen, why they failed, or None."""
        if self.state is PeerState.RUNNING:
            return {"host": host, "port": port}
        if self.state is PeerState.FAILED:
            return {"error": self.error}
        return None


class Changes:
    """Wakes everyone waiting in :meth:`until` at each :meth:`notify` to check their condition again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._event.wait()
