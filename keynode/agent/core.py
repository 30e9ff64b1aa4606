"""The agent: one long-running process per node holding the unlocked key and open vaults.

Lifecycle (STYLE.md rule 11, :mod:`keynode.lifecycle`): :meth:`Agent.run` owns one task group,
in which the socket server's connections, the idle-lock timer and the socket watch run, and
enters every plugged-in service (an async context manager owning its own tasks) inside it.
:meth:`Agent.stop` (the ``agent.stop`` request, SIGTERM, SIGINT) closes the services in reverse
order, cancels every task still running, and returns; nothing outlives ``run``.

Keys: the agent is locked, or holds one :class:`Unlocked` (the key pair and the vault service
opened with it), set and dropped as one.

Plug-in API for other services (peer transport, discovery, sync)::

    agent.add_service(lambda agent: MyService(agent))   # an async context manager factory,
                                                         # entered in order after the socket
    agent.handlers.register("nodes.find", handler, needs_unlock=True)
    agent.keypair         # the unlocked KeyPair (AgentLockedError while locked)
    agent.vaults          # the VaultService (AgentLockedError while locked)
    await agent.run_blocking(fn, *args)   # a blocking call in the bounded thread pool
    agent.submit_blocking(fn, *args)      # the same, returning the asyncio.Future
    agent.config.extra    # daemon options for services (e.g. host/port/seed), from argv
    agent.on_key_change(callback)         # called after every lock and unlock
    agent.status_extra["peer"] = fn       # fn() -> JSON-able, shown in `pk agent status`
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from polykey import __version__
from polykey.agent_client import paths
from polykey.errors import AgentLockedError, InvalidInputError, PolykeyError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir
from polykey.vaults.service import VaultService
from keynode.handlers import AgentContext, HandlerRegistry, LocalCaller
from keynode.methods import agent as agent_methods
from keynode.agent.hardening import dumpable
from keynode.agent.lockfile import StatusFile
from keynode.agent.server import SocketServer
from keynode.agent.vaultlocks import VaultLocks
from keynode.lifecycle import task_group

log = logging.getLogger("keynode.agent")
T = TypeVar("T")
ServiceFactory = Callable[["Agent"], contextlib.AbstractAsyncContextManager[Any]]

#: How often the agent checks that its socket still exists (seconds).
SOCKET_CHECK_INTERVAL = 2.0
#: How long lock/unlock wait for services that hold the key to follow (seconds).
KEY_CHANGE_TIMEOUT = 10.0
#: Threads for blocking vault work (writes fsync; imports and verification are long).
WORKER_THREADS = 4


@dataclass(frozen=True)
class AgentConfig:
    node_path: Path
    #: Lock the agent after this many seconds without a request that uses the keys.
    idle_lock: float | None = None
    #: Options for plugged-in services (e.g. ``host``, ``port``, ``seed``), passed through from argv.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unlocked:
    """The agent's keys while it is unlocked: the key pair and the vault service opened with it."""

    keypair: KeyPair
    vaults: VaultService

    def close(self) -> None:
        """Close the vault service (it zeroes the index and vault keys), then zero the seed."""
        self.vaults.close()
        self.keypair.wipe()


class Agent:
    """The daemon's main object. Construct, plug services in, then ``await run()``."""

    def __init__(
        self,
        config: AgentConfig,
        keypair: KeyPair | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.node = NodeDir(config.node_path)
        self.handlers: HandlerRegistry[LocalCaller] = HandlerRegistry()
        self._clock = clock
        self._wall = wall_clock
        self._services: list[ServiceFactory] = []
        self._running = False
        self._stop_event: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="keynode-worker")
        self._status_file = StatusFile(config.node_path)
        self._node_id = str(keypair.node_id if keypair else NodeId(self.node.public_key()))
        self._unlocked: Unlocked | None = None  # None: locked, or a lock has begun
        #: Keys a lock in progress dropped; it closes them (or, if it is cancelled, :meth:`run` does).
        self._dropping: list[Unlocked] = []
        self._inflight = 0
        self._drained: asyncio.Event | None = None
        self._key_change = asyncio.Lock()  # one lock/unlock at a time
        self.started_at = wall_clock()
        self._started_mono = clock()
        self.last_used = clock()
        #: VaultIds (text) of the vaults clients used since the last unlock; shown by name in status.
        self.opened_vaults: set[str] = set()
        self._key_listeners: list[Callable[[], Awaitable[Any] | None]] = []
        #: Extra fields of :meth:`status`, each computed when asked (plugged-in services).
        self.status_extra: dict[str, Callable[[], Any]] = {}
        #: Write locks per vault, shared by the vault methods and sync (keynode.agent.vaultlocks).
        self.vault_locks = VaultLocks()
        self._write_listeners: list[Callable[[str], None]] = []
        if keypair is not None:
            self._set_keys(keypair)
        agent_methods.install(self)

    # -- plug-in API -----------------------------------------------------------------

    def add_service(self, factory: ServiceFactory) -> None:
        """Add a service: ``factory(agent)`` returns an async context manager entered at start."""
        if self._running:
            raise RuntimeError("services must be added before the agent runs")
        self._services.append(factory)

    def on_key_change(self, callback: Callable[[], Awaitable[Any] | None]) -> None:
        """Call ``callback()`` after every lock and unlock (services holding the key follow it).

        If it returns an awaitable, lock and unlock answer only once it is done (at most
        :data:`KEY_CHANGE_TIMEOUT` seconds), so `pk agent lock` returns after the services
        holding the key have let it go.
        """
        self._key_listeners.append(callback)

    def on_vault_written(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(vault_id)`` (VaultId text) after every write this agent made to a vault."""
        self._write_listeners.append(callback)

    def vault_written(self, vault_id: str) -> None:
        """A write to ``vault_id`` committed: tell the listeners (automatic sync announces it)."""
        for callback in self._write_listeners:
            callback(vault_id)

    async def _keys_changed(self) -> None:
        waits = [waitable for waitable in (callback() for callback in self._key_listeners) if waitable is not None]
        tasks: list[asyncio.Task[Any]] = []
        try:
            async with asyncio.timeout(KEY_CHANGE_TIMEOUT), asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(_wait(waitable)) for waitable in waits]
        except TimeoutError:
            for _ in (task for task in tasks if task.cancelled()):
                log.warning("a service did not follow the key change within %g s", KEY_CHANGE_TIMEOUT)

    @property
    def locked(self) -> bool:
        return self._unlocked is None

    def _keys(self) -> Unlocked:
        if self._unlocked is None:
            raise AgentLockedError()
        return self._unlocked

    @property
    def keypair(self) -> KeyPair:
        return self._keys().keypair

    @property
    def vaults(self) -> VaultService:
        return self._keys().vaults

    async def run_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call in the bounded worker pool (never on the event loop)."""
        return await self.submit_blocking(fn, *args, **kwargs)

    def submit_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Like :meth:`run_blocking`, returning the pool's future (to wait on with a timeout)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    @contextlib.asynccontextmanager
    async def using_keys(self) -> AsyncIterator[VaultService]:
        """Hold the unlocked vault service for one request; :meth:`lock` waits for these to end."""
        service = self.vaults
        self._inflight += 1
        self.last_used = self._clock()
        try:
            yield service
        finally:
            self._inflight -= 1
            self.last_used = self._clock()
            if self._inflight == 0 and self._drained is not None:
                self._drained.set()

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def run(self, on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Serve until :meth:`stop`. ``on_ready`` is called once the socket accepts connections."""
        self._stop_event = asyncio.Event()
        self._running = True
        try:
            async with task_group() as tg:  # leaving it cancels the connections and timers
                async with contextlib.AsyncExitStack() as stack:
                    sock = Path(paths.socket_path(self.config.node_path))
                    await stack.enter_async_context(SocketServer(sock, self.dispatch, tg))
                    for factory in self._services:
                        await stack.enter_async_context(factory(self))
                    if self.config.idle_lock:
                        tg.create_task(self._idle_lock_loop(self.config.idle_lock), name="idle-lock")
                    tg.create_task(self._watch_socket(sock), name="socket-watch")
                    self._write_status()
                    log.info("agent %s serving on %s (pid %d)", self._node_id, sock, os.getpid())
                    if on_ready is not None:
                        on_ready(self.status())
                    await self._stop_event.wait()
                    log.info("stopping")
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)  # writes in flight finish first
            left, self._unlocked = [*self._dropping, *([self._unlocked] if self._unlocked else [])], None
            self._dropping.clear()
            self.opened_vaults = set()
            for keys in left:
                keys.close()  # every service has exited: zero the keys
            self._status_file.remove()
            log.info("stopped")

    # -- keys ------------------------------------------------------------------------

    def _set_keys(self, keypair: KeyPair) -> None:
        vaults = VaultService(self.config.node_path, keypair)
        try:
            removed = vaults.sweep_leftovers()
        except BaseException:
            vaults.close()
            raise
        if removed:
            log.info("removed %d leftover(s) of interrupted vault writes: %s", len(removed), ", ".join(removed))
        self._unlocked = Unlocked(keypair, vaults)
        self.opened_vaults = set()
        self.last_used = self._clock()

    async def lock(self, reason: str) -> None:
        """Drop the keys; waits for requests that are using them to finish."""
        async with self._key_change:
            keys = self._unlocked
            if keys is None:
                return
            self._unlocked = None  # new requests see "locked" from here on
            self._dropping.append(keys)
            while self._inflight:
                self._drained = asyncio.Event()
                await self._drained.wait()
            self._drained = None
            self.opened_vaults = set()
            keys.vaults.close()  # zeroes the index and vault keys
            log.info("locked (%s)", reason)
            await self._keys_changed()
            self._dropping.remove(keys)
            keys.keypair.wipe()  # the services holding the key have let it go: zero the seed
            self._write_status()

    async def unlock(self, password: bytes) -> None:
        """Unlock with ``password``; when already unlocked, only check it (WrongPasswordError if it
        is wrong: nothing changes either way)."""
        async with self._key_change:
            keypair = await self.run_blocking(self.node.unlock, password)
            if str(keypair.node_id) != self._node_id:
                keypair.wipe()
                raise InvalidInputError("the key file changed under the agent; restart it")
            if not self.locked:
                keypair.wipe()
                return
            try:
                self._set_keys(keypair)
            except BaseException:
                keypair.wipe()
                raise
            log.info("unlocked")
            await self._keys_changed()
            self._write_status()

    async def _watch_socket(self, sock: Path) -> None:
        """Stop when our socket is removed or replaced (node directory deleted), as gpg-agent does."""
        ours = sock.stat().st_ino
        while True:
            await asyncio.sleep(SOCKET_CHECK_INTERVAL)
            try:
                current = sock.stat().st_ino
            except FileNotFoundError:
                current = None
            if current != ours:
                log.warning("the socket %s was removed or replaced; stopping", sock)
                self.stop()
                return

    async def _idle_lock_loop(self, idle: float) -> None:
        interval = max(0.05, min(1.0, idle / 4))
        while True:
            await asyncio.sleep(interval)
            if not self.locked and self._inflight == 0 and self._clock() - self.last_used >= idle:
                await self.lock(f"idle for {idle:g} s")

    # -- status ----------------------------------------------------------------------

    def note_opened(self, vault: str) -> None:
        """Record that a client used ``vault`` (a name or a VaultId): one entry per vault."""
        if self._unlocked is None:
            return
        try:
            self.opened_vaults.add(self._unlocked.vaults.vault_id(vault))
        except PolykeyError:
            pass  # gone meanwhile (deleted), or the index cannot be read: nothing to show

    def _open_vault_names(self) -> list[str]:
        if self._unlocked is None or not self.opened_vaults:
            return []
        try:
            names = self._unlocked.vaults.vault_names()
        except PolykeyError:  # the index cannot be read: the VaultIds are all there is to show
            return sorted(self.opened_vaults)
        return sorted(names[vid] for vid in self.opened_vaults if vid in names)

    def status(self) -> dict[str, Any]:
        return {
            "state": "locked" if self.locked else "unlocked",
            "nodeId": self._node_id,
            "pid": os.getpid(),
            "socket": paths.socket_path(self.config.node_path),
            "nodePath": str(self.config.node_path),
            "startedAt": int(self.started_at),
            "uptime": round(self._clock() - self._started_mono, 3),
            "idleLock": self.config.idle_lock,
            "openVaults": self._open_vault_names(),
            "version": __version__,
            "dumpable": dumpable(),  # False: no core dump, no ptrace or /proc/PID/mem but by root
            **{name: field() for name, field in self.status_extra.items()},
        }

    def _write_status(self) -> None:
        status = self.status()
        del status["uptime"], status["openVaults"]
        try:
            self._status_file.write(status)
        except OSError as e:
            log.warning("cannot write the status file: %s", e.strerror)

    # -- requests --------------------------------------------------------------------

    async def dispatch(self, ctx: AgentContext, params: dict[str, Any]) -> Any:
        registration = self.handlers.lookup(ctx.method)
        if registration.needs_unlock and self.locked:
            raise AgentLockedError()
        return await registration.handler(ctx, params)


async def _wait(waitable: Awaitable[Any]) -> None:
    await waitable


__all__ = ["Agent", "AgentConfig", "ServiceFactory", "Unlocked"]
