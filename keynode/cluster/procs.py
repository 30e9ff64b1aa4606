"""One node's agent process in a cluster: find it, signal it, stop it (docs/cluster.md "Commands").

A running agent's pid comes from the node's ``agent.lock``, which only a running agent holds,
so a signal never goes to a process that merely inherited a dead agent's pid. An agent still
starting holds no lock yet (its interpreter is starting, or it is in its double fork: see
keynode/__main__.py ``_daemonize``): stopping a node also finds those by their argv, which
names the node directory (``python -m keynode --node-path NODE``, as
polykey.agent_client.spawn.daemon_argv writes it), and checks that argv again right before
each signal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from polykey.agent_client.spawn import alive, proc_state
from polykey.errors import AgentUnavailableError, ClusterError, InvalidInputError
from keynode.cluster.state import NodeEntry
from keynode.agent.lockfile import holder_pid

STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
STOP_ROUNDS = 5  # looks for a node's processes, each stopping what it found (see stop_nodes)
PROC = Path("/proc")
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


def _argv(pid: int) -> list[bytes] | None:
    """``pid``'s argv (readable for a hardened agent too), or None once it is gone."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None when it
    is gone or there is no /proc: with the pid, it names one process even after pid reuse."""
    try:
        fields = (PROC / str(pid) / "stat").read_bytes().rsplit(b") ", 1)[1].split()
        return int(fields[19])  # fields after "(comm) " start at field 3
    except (OSError, IndexError, ValueError):
        return None


def stop_launcher(pid: int, started: int) -> bool:
    """Stop the launcher ``pid`` if it still is the process that started at ``started``: SIGTERM
    (it stops what it started and exits), SIGKILL if it lingers; True if it was running."""
    if start_time(pid) != started or not alive(pid):
        return False
    stop_pid(pid, lambda: start_time(pid) == started)
    return True


def runs_node(argv: Sequence[bytes], node_paths: Collection[str]) -> str | None:
    """The node directory of ``node_paths`` that ``argv`` runs an agent for, or None.

    An agent's argv is ``PYTHON [-P] -m keynode --node-path NODE ...``, possibly after a wrapper
    (``ip netns exec NS``, which execs it); the one of `pk cluster` is ``-m keynode.cluster``.
    """
    args = list(argv)
    if not any(args[i:i + 2] == [b"-m", b"keynode"] for i in range(len(args) - 1)):
        return None
    for i, arg in enumerate(args):
        if arg == b"--node-path" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(b"--node-path="):
            value = arg[len(b"--node-path="):]
        else:
            continue
        path = os.fsdecode(value)
        return path if path in node_paths else None
    return None


def agent_processes(node_paths: Collection[str]) -> list[int]:
    """Every live process running an agent for one of ``node_paths`` (absolute), at any stage:
    the starter, the daemon it forks, before and after it took its lock. [] without /proc."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    me = os.getpid()
    found = []
    for name in names:
        if name.isdigit() and int(name) != me:
            argv = _argv(int(name))
            if argv is not None and runs_node(argv, node_paths) is not None and alive(int(name)):
                found.append(int(name))
    return sorted(found)


def stop_pid(pid: int, ours: Callable[[], bool] = lambda: True) -> None:
    """SIGTERM an agent (resumed first if paused), SIGKILL it if it lingers, until it is gone.

    ``ours`` is asked right before each signal whether ``pid`` is still the process meant (a
    pid found by its argv, not by a held lock); when it says no, nothing more is sent."""
    def send(sig: int) -> None:
        if ours():
            _signal(pid, sig)

    send(signal.SIGTERM)
    send(signal.SIGCONT)
    if not _wait_until(lambda: _gone(pid), STOP_TIMEOUT):  # the process, not only its lock
        send(signal.SIGKILL)
        _wait_until(lambda: _gone(pid), STOP_TIMEOUT)


def _stop_found(pid: int, node_paths: Collection[str], holder: bool) -> None:
    if holder:
        stop_pid(pid)
        return
    expected = runs_node(_argv(pid) or [], node_paths)
    stop_pid(pid, lambda: expected is not None and runs_node(_argv(pid) or [], node_paths) == expected)


def stop_nodes(entries: Collection[NodeEntry], workers: int = 4) -> list[int]:
    """Stop every process of these nodes' agents, running or still starting; the pids stopped.

    Each look finds the lock holders and (:func:`agent_processes`) every process whose argv runs
    an agent for one of the nodes, and stops them all; the looks go on until one finds nothing,
    because a starter stopped just after its fork leaves the daemon it forked (which the next
    look finds). Nothing else starts an agent of these nodes while this runs: call it once the
    launcher that starts them is dead or done. Raises ClusterError if processes remain after
    ``STOP_ROUNDS`` looks.
    """
    node_paths = {e.node_path for e in entries}

    def look() -> tuple[set[int], list[int]]:
        """The lock holders, and every process found (holders and agents by argv)."""
        holders = {pid for e in entries if (pid := pid_of(e)) is not None}
        return holders, sorted(holders | set(agent_processes(node_paths)))

    stopped: list[int] = []
    for _ in range(STOP_ROUNDS):
        holders, found = look()
        if not found:
            return stopped
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda pid: _stop_found(pid, node_paths, pid in holders), found))
        stopped += [pid for pid in found if pid not in stopped]
    _holders, left = look()
    if left:
        raise ClusterError(f"processes of the cluster's agents still run after {STOP_ROUNDS} attempts to stop them: "
                           f"pids {', '.join(map(str, left))}")
    return stopped


def stop_node(entry: NodeEntry) -> list[int]:
    """Stop the node's agent, running or still starting (:func:`stop_nodes`); the pids stopped."""
    return stop_nodes([entry])


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
