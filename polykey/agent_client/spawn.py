"""Starting the agent process (docs/spec/agent-protocol.md section 1).

The CLI never imports keynode: it runs ``sys.executable -m keynode``. The password
reaches the daemon over an inherited pipe (``--password-fd``), never argv, the
environment or a file; the daemon reports readiness or its startup error as one
JSON line on another inherited pipe (``--ready-fd``). Standard library only.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Sequence
from typing import Any

from polykey.agent_client import paths, protocol, strict_json
from polykey.errors import AgentRunningError, AgentUnavailableError, NodeNotFoundError, from_wire

START_TIMEOUT = 120.0  # Argon2id at the "moderate" profile takes seconds on a small machine
_READY_LIMIT = 64 * 1024


def proc_state(pid: int) -> str:
    """The kernel's one-letter process state (``T`` stopped, ``Z`` zombie), or ``?``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1].decode("ascii")
    except (OSError, IndexError):
        return "?"


def alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited process not yet reaped by its parent (a zombie) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return proc_state(pid) not in ("Z", "X")


def require_node(node_path: str) -> None:
    if not os.path.exists(paths.node_file(node_path, paths.KEY_FILE)):
        raise NodeNotFoundError(f"no node at {node_path}: run `pk bootstrap` first")


def daemon_argv(node_path: str, extra: Sequence[str] = ()) -> list[str]:
    """``-P``: the caller's current directory is not put on the daemon's ``sys.path`` (a ``keynode/``
    there would otherwise run inside the agent, next to the key)."""
    return [sys.executable, "-P", "-m", "keynode", "--node-path", os.path.abspath(node_path), *extra]


def daemon_env() -> dict[str, str]:
    """The daemon's environment: ours without ``PK_PASSWORD``. The password reaches it only over
    the pipe; left in its environment it would outlive ``pk agent lock`` (``/proc/PID/environ``)."""
    return {k: v for k, v in os.environ.items() if k != "PK_PASSWORD"}


def password_pipe(password: bytes) -> int:
    """A pipe already holding the password (and closed for writing); returns the read end."""
    r, w = os.pipe()
    try:
        view = memoryview(password)
        while view:
            view = view[os.write(w, view):]
    finally:
        os.close(w)
    return r


def start_agent(
    node_path: str, password: bytes, extra: Sequence[str] = (), timeout: float = START_TIMEOUT,
    wrap: Sequence[str] = (),
) -> dict[str, Any]:
    """Start a background agent for ``node_path`` and wait until it serves; returns its status.

    ``wrap`` is a command prefix the daemon runs under (the cluster launcher's
    ``ip netns exec NAME``); it must exec the daemon with the inherited descriptors.

    Raises the daemon's own startup error (WrongPasswordError, AgentRunningError, ...) rebuilt,
    or AgentUnavailableError when it died without saying why.
    """
    import subprocess

    require_node(node_path)
    log_path = paths.node_file(node_path, paths.LOG)
    pw_r = password_pipe(password)
    ready_r, ready_w = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        argv = [*wrap, *daemon_argv(node_path, ["--password-fd", str(pw_r), "--ready-fd", str(ready_w), *extra])]
        proc = subprocess.Popen(
            argv,
            pass_fds=(pw_r, ready_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,
            close_fds=True,
            env=daemon_env(),
        )
    finally:
        os.close(pw_r)
        os.close(ready_w)
        os.close(log_fd)
    try:
        message = _read_ready(ready_r, timeout)
    finally:
        os.close(ready_r)
    if message is None:
        # No report in time (or a garbled one): end this start, so that an agent that failed to
        # start never stays running. SIGTERM makes the waiting parent kill the daemon it forked.
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        if message is None:
            proc.kill()
    if message is None:
        raise AgentUnavailableError(f"the agent failed to start; see {log_path}")
    if "error" in message:
        raise from_wire(message["error"])
    status = message.get("status")
    return status if isinstance(status, dict) else {}


def _read_ready(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) <= _READY_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        obj = strict_json.loads(data.strip() or b"null", max_depth=protocol.MAX_DEPTH, error=AgentUnavailableError)
    except AgentUnavailableError:
        return None
    return obj if isinstance(obj, dict) else None


def lock_held(node_path: str) -> bool:
    """True while some agent holds ``agent.lock`` (it may still be starting)."""
    import fcntl

    try:
        fd = os.open(paths.node_file(node_path, paths.LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_started(node_path: str, password: bytes, extra: Sequence[str] = ()) -> dict[str, Any] | None:
    """Start an agent unless one is already running.

    A concurrent start that won the race may still be unlocking its key: wait (bounded) until
    its socket answers or it gives up (releases the lock).
    """
    from polykey.agent_client.client import connect

    try:
        return start_agent(node_path, password, extra)
    except AgentRunningError:
        pass
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            connect(node_path).close()
            return None
        except AgentUnavailableError:
            if not lock_held(node_path):
                raise
        time.sleep(0.02)
    raise AgentUnavailableError(f"the agent for {node_path} did not become ready")


__all__ = ["start_agent", "ensure_started", "require_node", "daemon_argv", "daemon_env", "alive", "proc_state"]
