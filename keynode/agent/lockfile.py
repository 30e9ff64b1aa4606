"""One agent per node directory: the ``agent.lock`` flock and the ``agent.json`` status file.

The lock is an advisory ``flock`` held for the agent's whole life; the kernel drops it when
the process dies, however it dies, so a lock file left by a killed agent is stale by
construction and the next agent simply takes it. The file is never unlinked (unlinking a
flock file races with a starter that has it open).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from polykey import fsutil
from polykey.agent_client import paths
from polykey.errors import AgentRunningError


class AgentLock:
    """The exclusive lock on ``<node>/agent.lock``; holds the owner's pid for humans."""

    def __init__(self, node_path: Path) -> None:
        self.path = Path(paths.node_file(node_path, paths.LOCK))
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise AgentRunningError(
                f"an agent is already running for {self.path.parent}" + (f" (pid {holder})" if holder else ""),
                pid=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None


def holder_pid(node_path: Path) -> int | None:
    """The pid of the agent holding ``node_path``'s lock, or None when no agent holds it.

    The lock being held is what proves the pid current (a stale file's pid may be anyone's
    now). An agent writes its pid right after taking the lock; in that instant the file is
    read again (briefly) rather than a pid guessed.
    """
    try:
        fd = os.open(paths.node_file(node_path, paths.LOCK), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        for _ in range(PID_READ_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                if text.isdigit() and int(text) > 0:
                    return int(text)
                time.sleep(0.002)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return None
    finally:
        os.close(fd)


PID_READ_TRIES = 500  # x 2 ms: how long a held lock may show no pid before it counts as none


class StatusFile:
    """``<node>/agent.json``: written atomically on every state change, removed at a clean stop."""

    def __init__(self, node_path: Path) -> None:
        self.path = Path(paths.node_file(node_path, paths.STATUS))

    def write(self, status: dict[str, Any]) -> None:
        fsutil.atomic_write(self.path, (json.dumps(status, sort_keys=True) + "\n").encode("utf-8"))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
