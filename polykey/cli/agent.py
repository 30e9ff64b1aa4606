"""``pk agent``: start, stop, status, lock and unlock the node's agent (docs/cli.md "Agent")."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from polykey.agent_client import spawn
from polykey.agent_client.passwords import PasswordSource
from polykey.agent_client.session import AgentSession
from polykey.cli import hot
from polykey.cli.common import Options, common_options, emit, settings
from polykey.errors import AgentRunningError, AgentUnavailableError
from polykey.wire.records import parse_seed

STOP_TIMEOUT = 10.0


def password_source(s: Options) -> PasswordSource:
    return PasswordSource(s.password_file)


def session(s: Options, *, autostart: bool = True) -> AgentSession:
    """A session with the agent of the current node, started on demand (the vault commands use this)."""
    return s.session(autostart=autostart)


def _running(s: Options) -> AgentSession:
    """Calls to the agent if one runs (AgentUnavailableError if none), never starting one; a busy
    agent is retried, as every client does (docs/spec/agent-protocol.md section 3 "Limits")."""
    return AgentSession(s.node_path, autostart=False)


def _running_status(s: Options) -> dict[str, Any] | None:
    return hot.running_status(s)


@click.group()
def agent() -> None:
    """The node's agent: a background process holding the unlocked key and open vaults.

    Commands that need it start it on demand; these commands manage it explicitly.
    """


@agent.command("start")
@click.option("--foreground", is_flag=True, help="Run in this process, not in the background (systemd, containers).")
@click.option("--idle-lock", type=click.FloatRange(min=0.1), metavar="SECONDS", help="Lock after this long unused.")
@click.option("--host", metavar="ADDR", help="Peer listener address, TCP and UDP [env PK_PEER_HOST; default 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Peer listener port [env PK_PEER_PORT; default a free port].")
@click.option("--seed", "seeds", multiple=True, metavar="NODEID@HOST:PORT",
              help="A seed node to join the network through (repeatable) [env PK_SEED_NODES].")
@click.option("--sync-interval", type=click.FloatRange(0.1, 86400), metavar="SECONDS",
              help="Seconds between automatic sync's anti-entropy passes [env PK_SYNC_INTERVAL; default 60].")
@common_options
def agent_start(foreground: bool, idle_lock: float | None, host: str | None, port: int | None,
                seeds: tuple[str, ...], sync_interval: float | None) -> None:
    """Start the agent (asks for the node password once: terminal, --password-file or PK_PASSWORD).

    The agent also listens for other keynodes on HOST:PORT (TCP for the encrypted
    channel, UDP for the DHT), joins the network through the seed nodes, and keeps shared
    vaults in sync with their other members on its own (docs/sync.md).
    """
    s = settings()
    spawn.require_node(str(s.node_path))
    extra = ["--idle-lock", f"{idle_lock:g}"] if idle_lock else []
    if host is not None:
        extra += ["--host", host]
    if port is not None:
        extra += ["--port", str(port)]
    for seed in seeds:
        extra += ["--seed", str(parse_seed(seed))]
    if sync_interval is not None:
        extra += ["--sync-interval", f"{sync_interval:g}"]
    if foreground:
        running = _running_status(s)
        if running is not None:  # before asking for a password: the answer does not depend on it
            raise AgentRunningError(
                f"an agent is already running for {s.node_path} (pid {running.get('pid')}): `pk agent stop` it first"
            )
        password = password_source(s).get()
        fd = spawn.password_pipe(password)
        os.set_inheritable(fd, True)
        argv = spawn.daemon_argv(str(s.node_path), ["--foreground", "--password-fd", str(fd), *extra])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], argv, spawn.daemon_env())
    current = _running_status(s)
    if current is not None:
        note = " Its options are unchanged: `pk agent stop` first to start it with others." if extra else ""
        emit(s, f"An agent is already running (pid {current.get('pid')}).{note}", {**current, "started": False})
        return
    status = spawn.start_agent(str(s.node_path), password_source(s).get(), extra)
    emit(s, f"Agent started (pid {status.get('pid')}).\n" + hot.describe_status(status), {**status, "started": True})


@agent.command("stop")
@common_options
def agent_stop() -> None:
    """Stop the agent (within a second); its keys leave memory with it."""
    s = settings()
    pid = stop_agent(s)
    if pid is None:
        emit(s, "No agent is running.", {"stopped": False, "running": False})
        return
    emit(s, "Agent stopped.", {"stopped": True, "pid": pid})


def stop_agent(s: Options) -> int | None:
    """Stop the node's agent and wait until it is gone; its pid, or None if none was running."""
    try:
        with _running(s) as c:
            reply = c.call("agent.stop")
    except AgentUnavailableError:
        return None
    pid = int(reply.get("pid", 0)) if isinstance(reply, dict) else 0
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid and time.monotonic() < deadline and spawn.alive(pid):
        time.sleep(0.02)
    if pid and spawn.alive(pid):
        raise AgentUnavailableError(f"the agent (pid {pid}) did not stop within {STOP_TIMEOUT:g} s")
    return pid


@agent.command("status")
@common_options
def agent_status() -> None:
    """Show whether the agent runs, its state (locked/unlocked), NodeId, uptime and open vaults."""
    hot.agent_status(settings())


@agent.command("lock")
@common_options
def agent_lock() -> None:
    """Drop the keys from the agent's memory; the next use asks for the password again."""
    s = settings()
    try:
        with _running(s) as c:
            status = c.call("agent.lock")
    except AgentUnavailableError:
        emit(s, "No agent is running (nothing to lock).", {"state": "stopped"})
        return
    emit(s, "Agent locked.", status)


@agent.command("unlock")
@common_options
def agent_unlock() -> None:
    """Give the agent the node password again (starting it if none runs).

    The password is checked even when the agent is already unlocked: a wrong one fails (exit 77)
    and changes nothing.
    """
    s = settings()
    source = password_source(s)
    with _running(s) as c:
        try:
            status = c.call("agent.status")
        except AgentUnavailableError:
            status = None
        if status is not None:
            if isinstance(status, dict) and status.get("state") == "unlocked" and not source.available():
                emit(s, "Agent already unlocked.", status)
                return
            emit(s, "Agent unlocked.", c.call("agent.unlock", {"password": source.get()}))
            return
    with session(s) as sess:  # none runs: start it, which unlocks it with the password
        emit(s, "Agent unlocked.", sess.call("agent.status"))
