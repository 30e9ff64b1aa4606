"""One node's agent process in a cluster: find it, signal it, stop it (docs/cluster.md "Commands").

The pid always comes from the node's ``agent.lock``, which only a running agent holds, so a
signal never goes to a process that merely inherited a dead agent's pid.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from polykey.agent_client.spawn import alive, proc_state
from polykey.errors import AgentUnavailableError, InvalidInputError
from keynode.cluster.state import NodeEntry
from keynode.agent.lockfile import holder_pid

STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
TERMINATING = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL}


def pid_of(entry: NodeEntry) -> int | None:
    return holder_pid(Path(entry.node_path))


def running_pid(entry: NodeEntry) -> int:
    pid = pid_of(entry)
    if pid is None:
        raise AgentUnavailableError(f"node {entry.index} is not running (`pk cluster restart {entry.index}` starts it)")
    return pid


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped by its parent counts as gone)."""
    return not alive(pid)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_pid(pid: int) -> None:
    """SIGTERM an agent (resumed first if paused), SIGKILL it if it lingers, until it is gone."""
    _signal(pid, signal.SIGTERM)
    _signal(pid, signal.SIGCONT)
    if not _wait_until(lambda: _gone(pid), STOP_TIMEOUT):  # the process, not only its lock
        _signal(pid, signal.SIGKILL)
        _wait_until(lambda: _gone(pid), STOP_TIMEOUT)


def stop_node(entry: NodeEntry) -> int | None:
    """Stop the node's agent (:func:`stop_pid`); its pid, or None if none ran."""
    pid = pid_of(entry)
    if pid is not None:
        stop_pid(pid)
    return pid


def parse_signal(text: str) -> signal.Signals:
    name = text.strip().upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise InvalidInputError(f"unknown signal {text[:20]!r} (a number or a name such as 9, KILL, TERM)") from None


def kill(entry: NodeEntry, sig: signal.Signals) -> int:
    pid = running_pid(entry)
    _signal(pid, sig)
    if sig in TERMINATING:
        if sig != signal.SIGKILL:
            _signal(pid, signal.SIGCONT)  # a paused agent must run to handle it
        if not _wait_until(lambda: _gone(pid), STOP_TIMEOUT):
            raise AgentUnavailableError(f"node {entry.index} (pid {pid}) is still running {STOP_TIMEOUT:g} s after {sig.name}")
    return pid


def pause(entry: NodeEntry) -> int:
    pid = running_pid(entry)
    _signal(pid, signal.SIGSTOP)
    _wait_until(lambda: proc_state(pid) in ("T", "t"), STOP_TIMEOUT)
    return pid


def resume(entry: NodeEntry) -> int:
    pid = running_pid(entry)
    _signal(pid, signal.SIGCONT)
    return pid
