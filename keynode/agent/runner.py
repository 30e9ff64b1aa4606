"""Run one agent to completion: lock file, key unlock, services, signals (docs/spec/agent-protocol.md s.1)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from polykey.crypto import memory
from polykey.errors import PolykeyError
from polykey.keys.store import NodeDir
from keynode.methods import vaults as vault_methods
from keynode.methods import nodes as node_methods
from keynode.peers import network
from keynode.agent.core import Agent, AgentConfig
from keynode.agent.lockfile import AgentLock

log = logging.getLogger("keynode")

#: Functions called with the new Agent before it runs, to plug in services and handlers
#: (the peer transport and discovery add themselves here). See keynode.agent.core for the API.
EXTENSIONS: list[Callable[[Agent], None]] = [vault_methods.install, node_methods.install]


#: Functions called with keynode's argparse parser, to add daemon options for services
#: (e.g. ``--host``, ``--port``, ``--seed``). Every option not of the core daemon ends up in
#: ``AgentConfig.extra`` under its argparse ``dest``. ``pk agent start`` passes such options
#: through its ``extra`` daemon arguments (polykey.agent_client.spawn.start_agent).
PARSER_EXTENSIONS: list[Callable[[argparse.ArgumentParser], None]] = [network.add_daemon_options]


class ReadyReporter(Protocol):
    def ready(self, status: dict[str, Any]) -> None: ...


def run_agent(
    node_path: Path,
    password: bytearray,
    reporter: ReadyReporter,
    *,
    idle_lock: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    mode = node_path.stat().st_mode & 0o777
    if mode != 0o700:  # the socket's only protection besides SO_PEERCRED is this directory
        log.warning("node directory %s had mode %o; setting 0700", node_path, mode)
        os.chmod(node_path, 0o700)
    lock = AgentLock(node_path)
    lock.acquire()  # AgentRunningError: reported by the caller
    try:
        try:
            keypair = NodeDir(node_path).unlock(password)
        finally:
            memory.wipe(password)  # the agent keeps the key, never the password
        agent = Agent(AgentConfig(node_path, idle_lock=idle_lock, extra=dict(extra or {})), keypair)
        for extend in EXTENSIONS:
            extend(agent)
        try:
            asyncio.run(_serve(agent, reporter))
        except BaseExceptionGroup as group:
            # A service or the socket failed to start: report its PolykeyError, not the group.
            first = _first_polykey_error(group)
            if first is None:
                raise
            raise first from group
    finally:
        lock.release()
    return 0


def _first_polykey_error(group: BaseExceptionGroup[BaseException]) -> PolykeyError | None:
    for exc in group.exceptions:
        if isinstance(exc, PolykeyError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_polykey_error(exc)
            if found is not None:
                return found
    return None


async def _serve(agent: Agent, reporter: ReadyReporter) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, _on_signal, agent, sig)
    await agent.run(reporter.ready)


def _on_signal(agent: Agent, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    agent.stop()
