"""Where the agent's files live inside the node directory (docs/spec/agent-protocol.md section 1).

    <node path>/        0700
      agent.sock        0600  the Unix socket
      agent.lock        0600  flock()ed by the one running agent (holds its pid)
      agent.json        0600  status file: pid, socket, nodeId, state, startedAt
      agent.log         0600  the agent's log (never a secret value)

Plain ``str`` paths and the ``posix`` C module: this module is on the ``pk`` fast path, which
runs without ``site`` and so without ``os`` loaded (``import os`` would cost more than the whole
request; docs/performance.md "Fast path"). Where ``os`` is loaded already it is used, so a program
that changed ``os.environ`` is seen.
"""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from os import PathLike

SOCKET = "agent.sock"
LOCK = "agent.lock"
STATUS = "agent.json"
LOG = "agent.log"
KEY_FILE = "keys/node.key"

#: sun_path is 108 bytes on Linux; longer socket paths are reached through /proc/self/fd.
_SUN_PATH_MAX = 107


def fspath(path: str | PathLike[str]) -> str:
    """``os.fspath`` for text paths (a ``PathLike`` means its maker already loaded ``os``)."""
    if isinstance(path, str):
        return path
    import os

    return os.fspath(path)


def join(path: str, *names: str) -> str:
    """``os.path.join`` for ``str`` on POSIX."""
    for name in names:
        if name.startswith("/"):
            path = name
        elif not path or path.endswith("/"):
            path += name
        else:
            path += "/" + name
    return path


def getenv(name: str) -> str | None:
    """``os.environ.get(name)``, from ``posix.environ`` while ``os`` is not loaded."""
    os = sys.modules.get("os")
    if os is not None:
        value: str | None = os.environ.get(name)
        return value
    raw = posix.environ.get(name.encode())
    return None if raw is None else raw.decode(sys.getfilesystemencoding(), "surrogateescape")


def node_file(node_path: str | PathLike[str], name: str) -> str:
    return join(fspath(node_path), name)


def socket_path(node_path: str | PathLike[str]) -> str:
    return node_file(node_path, SOCKET)


class UnixAddress:
    """A connectable/bindable address for a socket path of any length.

    Paths longer than sun_path allows are reached as ``/proc/self/fd/N/agent.sock`` through
    an ``O_PATH`` descriptor of the directory, held open until :meth:`close`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        if len(path.encode(sys.getfilesystemencoding(), "surrogateescape")) <= _SUN_PATH_MAX:
            self.address = path
            return
        import os

        directory, name = os.path.split(os.path.abspath(path))
        self._fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.address = f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            posix.close(self._fd)
            self._fd = None

    def __enter__(self) -> UnixAddress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_node_path() -> str:
    """``$PK_NODE_PATH``, else the user's data dir (the one rule: ``pk``, ``polykey.Client`` and ``keynode`` use it).

    Linux: ``$XDG_DATA_HOME/polykey``, or ``~/.local/share/polykey`` when ``XDG_DATA_HOME`` is
    unset, empty or relative (the XDG Base Directory spec says a relative path is invalid and is
    ignored). macOS: ``~/Library/Application Support/polykey``.
    """
    env = getenv("PK_NODE_PATH")
    if env:
        return env
    home = getenv("HOME")
    if not home:
        import os

        home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return join(home, "Library", "Application Support", "polykey")
    xdg = getenv("XDG_DATA_HOME") or ""
    return join(xdg if xdg.startswith("/") else join(home, ".local", "share"), "polykey")
