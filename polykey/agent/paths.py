"""Where the agent's files live inside the node directory (docs/spec/agent-protocol.md section 1).

    <node path>/        0700
      agent.sock        0600  the Unix socket
      agent.lock        0600  flock()ed by the one running agent (holds its pid)
      agent.json        0600  status file: pid, socket, nodeId, state, startedAt
      agent.log         0600  the agent's log (never a secret value)

Plain ``str`` paths and ``os.path``: this module is on the ``pk`` fast path.
"""

from __future__ import annotations

import os

SOCKET = "agent.sock"
LOCK = "agent.lock"
STATUS = "agent.json"
LOG = "agent.log"
KEY_FILE = os.path.join("keys", "node.key")

#: sun_path is 108 bytes on Linux; longer socket paths are reached through /proc/self/fd.
_SUN_PATH_MAX = 107


def node_file(node_path: str | os.PathLike[str], name: str) -> str:
    return os.path.join(os.fspath(node_path), name)


def socket_path(node_path: str | os.PathLike[str]) -> str:
    return node_file(node_path, SOCKET)


class UnixAddress:
    """A connectable/bindable address for a socket path of any length.

    Paths longer than sun_path allows are reached as ``/proc/self/fd/N/agent.sock`` through
    an ``O_PATH`` descriptor of the directory, held open until :meth:`close`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            self.address = path
            return
        directory, name = os.path.split(os.path.abspath(path))
        self._fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.address = f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> UnixAddress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_node_path() -> str:
    """``$PK_NODE_PATH``, else the user's data dir (the one rule; ``polykey.keys.store`` uses it too).

    Linux: ``$XDG_DATA_HOME/polykey``, or ``~/.local/share/polykey`` when ``XDG_DATA_HOME`` is
    unset, empty or relative (the XDG Base Directory spec says a relative path is invalid and is
    ignored). macOS: ``~/Library/Application Support/polykey``.
    """
    env = os.environ.get("PK_NODE_PATH")
    if env:
        return env
    import sys

    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "polykey")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    return os.path.join(xdg if os.path.isabs(xdg) else os.path.join(home, ".local", "share"), "polykey")
