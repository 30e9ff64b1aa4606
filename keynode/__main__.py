"""``python -m keynode``: the Polykey agent daemon (docs/spec/agent-protocol.md section 1).

Normally started by ``pk agent start`` or on demand by any ``pk`` command. Runs in the
background unless ``--foreground`` (systemd, containers). The password comes from
``--password-fd N`` (an inherited pipe: how ``pk`` hands it over), ``--password-file``,
``PK_PASSWORD`` or a terminal prompt; never from argv.

Startup reports one JSON line on ``--ready-fd`` (``{"status": {...}}`` or
``{"error": {type, message, data}}``); without it, a human line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from keynode import __version__
from keynode.agent.hardening import harden_process
from keynode.memory import limit_arenas
from polykey.agent_client import paths
from polykey.agent_client.passwords import PASSWORD_FILE_LIMIT, PasswordSource
from polykey.crypto import memory
from polykey.errors import InvalidInputError, PolykeyError
from polykey.keys.store import NodeDir

log = logging.getLogger("keynode")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keynode", description="The Polykey agent daemon.")
    p.add_argument("--version", "-V", action="version", version=f"keynode {__version__}")
    p.add_argument("--node-path", type=Path, help="node directory [env PK_NODE_PATH]")
    p.add_argument("--foreground", action="store_true", help="do not detach (systemd, containers)")
    p.add_argument("--password-fd", type=int, help="read the password from this inherited descriptor")
    p.add_argument("--password-file", help="read the password from this file [or env PK_PASSWORD]")
    p.add_argument("--ready-fd", type=int, help="report readiness as one JSON line on this descriptor")
    p.add_argument("--idle-lock", type=float, metavar="SECONDS", help="lock after this long without use")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    from keynode.agent.runner import PARSER_EXTENSIONS

    for extend in PARSER_EXTENSIONS:
        extend(p)
    return p


_CORE_OPTIONS = frozenset({"node_path", "foreground", "password_fd", "password_file", "ready_fd", "idle_lock", "log_level"})


def read_fd_password(fd: int) -> bytearray:
    """The password on an inherited descriptor, read straight into one wipeable buffer."""
    buf = memory.secret_buffer(bytes(PASSWORD_FILE_LIMIT + 1))
    total = 0
    with os.fdopen(fd, "rb", buffering=0, closefd=True) as f:
        with memoryview(buf) as view:
            while total <= PASSWORD_FILE_LIMIT:
                n = f.readinto(view[total:])
                if not n:
                    break
                total += n
    if not total or total > PASSWORD_FILE_LIMIT:
        memory.wipe(buf)
        raise InvalidInputError("the password on --password-fd is empty or too long")
    with memoryview(buf) as view:
        password = memory.secret_buffer(view[:total])
    memory.wipe(buf)
    return password


class Reporter:
    """Where startup success or failure goes: the ready fd as JSON, else a line on stderr."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def _send(self, obj: dict[str, Any], human: str) -> None:
        if self.fd is None:
            print(f"keynode: {human}", file=sys.stderr, flush=True)
            return
        try:
            os.write(self.fd, (json.dumps(obj) + "\n").encode("utf-8"))
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None

    def ready(self, status: dict[str, Any]) -> None:
        self._send({"status": status}, f"agent {status['nodeId']} serving on {status['socket']} (pid {status['pid']})")
        _sd_notify(b"READY=1")

    def failed(self, error: PolykeyError) -> None:
        self._send({"error": error.to_wire()}, error.message)


def _sd_notify(message: bytes) -> None:
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message, address)
    except OSError:
        pass


def _daemonize(reporter: Reporter) -> None:
    """Fork into the background. The parent waits for the child's report and exits with it."""
    relay_to = reporter.fd
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)

        def abandon(signum: int, frame: object) -> None:
            # The starter gave up on this start (spawn.start_agent timed out): a start nobody
            # waits for any more must not leave an agent running.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os._exit(69)

        signal.signal(signal.SIGTERM, abandon)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        try:
            message = json.loads(data.decode("utf-8") or "null")
        except ValueError:
            message = None
        if relay_to is not None:
            os.write(relay_to, data)
        elif isinstance(message, dict) and "status" in message:
            print(f"keynode: agent started (pid {message['status']['pid']})", file=sys.stderr)
        code = 0
        if not isinstance(message, dict) or "status" not in message:
            code = 69
            if isinstance(message, dict) and isinstance(message.get("error"), dict):
                from polykey.errors import from_wire

                err = from_wire(message["error"])
                code = err.exit_code
                if relay_to is None:
                    print(f"keynode: {err.message}", file=sys.stderr)
        os._exit(code)
    os.close(r)
    if relay_to is not None:
        os.close(relay_to)
    reporter.fd = w
    os.setsid()
    os.chdir("/")  # hold no directory of the starting shell
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


LOG_MAX_BYTES = 8 << 20  # agent.log is rotated past this size...
LOG_BACKUPS = 2  # ...keeping agent.log.1 and agent.log.2: at most 24 MiB of log per node


def _setup_logging(node_path: Path, level: str, foreground: bool) -> None:
    log_path = paths.node_file(node_path, paths.LOG)
    # umask 077 (set in main) makes this file and every rotated one 0600; chmod fixes an older file
    handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    os.chmod(log_path, 0o600)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        root.addHandler(console)
    elif handler.stream is not None:
        os.dup2(handler.stream.fileno(), 2)  # stray tracebacks land in the log too (the current file)
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    reporter = Reporter(ns.ready_fd)
    daemonized = False
    os.umask(0o077)
    harden_process()  # before any secret is read: no core dump, no ptrace or /proc/PID/mem by others
    try:
        node_path = (ns.node_path or Path(paths.default_node_path())).absolute()
        if ns.password_fd is not None:
            password = read_fd_password(ns.password_fd)
        else:
            given = PasswordSource(ns.password_file).get()
            password = memory.secret_buffer(given)
            memory.wipe(given)
        NodeDir(node_path).read_keyfile()  # NodeNotFoundError before detaching
        if not ns.foreground:
            _daemonize(reporter)
            daemonized = True
        _setup_logging(node_path, ns.log_level, ns.foreground)
        limit_arenas()  # before any thread: docs/architecture.md "Agent memory"
        from keynode.agent.runner import run_agent

        extra = {k: v for k, v in vars(ns).items() if k not in _CORE_OPTIONS}
        return run_agent(node_path, password, reporter, idle_lock=ns.idle_lock, extra=extra)
    except PolykeyError as e:
        reporter.failed(e)
        if daemonized:
            # A background start that failed (e.g. lost the race for the agent lock) leaves at
            # once: nobody waits for it, and a lingering loser looks like a second agent.
            logging.shutdown()
            os._exit(e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sys.exit(main())

