"""The everyday commands' work, without click: ``secrets get|set|ls|rm``, ``vaults list``, ``agent status``.

Both routes into ``pk`` run these same functions: the click commands after click parsed the
arguments, and the fast dispatcher (:mod:`polykey.cli.fast`), which parses them itself and never
imports click. So both print the same bytes and fail with the same messages and exit codes
(``secrets env``, ``run`` and ``inject`` live in :mod:`polykey.cli.hot_env`).

Only C modules of the standard library and the light agent client are imported here; errors come
from :mod:`polykey.errors`, imported only when one is raised (docs/performance.md "Fast path").
"""

from __future__ import annotations

import sys

from polykey.agent_client import LazyError, is_error, paths, protocol, split_secret_path
from polykey.agent_client.strict_json import dumps
from polykey.agent_client.session import AgentSession

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    from polykey.errors import InvalidInputError
else:
    InvalidInputError = LazyError("InvalidInputError")

#: polykey.vaults.format.MAX_SECRET_BYTES (that module loads the crypto libraries; a test pins both).
MAX_SECRET_BYTES = 16 * 1024 * 1024


def as_path_text(text: str) -> str:
    """``str(pathlib.PurePosixPath(text))`` without importing pathlib (the click route prints paths
    after click made them ``Path`` objects; the fast path must print them the same)."""
    if not text:
        return "."
    lead = "//" if text.startswith("//") and not text.startswith("///") else "/" if text.startswith("/") else ""
    parts = [p for p in text.split("/") if p and p != "."]
    return (lead + "/".join(parts)) or "."


def show_progress(progress: Any) -> None:
    """Long operations report ``{"elapsed": s}`` about once a second: shown on a terminal."""
    if isinstance(progress, dict) and isinstance(progress.get("elapsed"), (int, float)):
        sys.stderr.write(f"pk: still working ({progress['elapsed']:.0f} s)\n")
        sys.stderr.flush()


#: The choices of the options (one definition: click's ``Choice`` and the fast parser read these).
FORMATS = ("human", "json")
ENV_FORMATS = ("unix", "json", "dotenv")
ENV_INVALID = ("error", "warn", "ignore")
ENV_DUPLICATE = ("keep", "overwrite", "warn", "error")


class Options:
    """The common options (docs/cli.md): node path, password file, output format.

    The one model of them, for both routes: the click commands (:func:`polykey.cli.common.settings`)
    and the fast path (:mod:`polykey.cli.fast`). A path given (or the default) is kept as text the
    way click's ``Path`` prints it; ``--format`` falls back to ``PK_FORMAT``, then ``human``.
    """

    __slots__ = ("node_path", "password_file", "format")

    def __init__(self, node_path: str | PathLike[str] | None, password_file: str | PathLike[str] | None,
                 fmt: str | None) -> None:
        self.node_path = as_path_text(paths.fspath(node_path) if node_path else paths.default_node_path())
        self.password_file = as_path_text(paths.fspath(password_file)) if password_file is not None else None
        fmt = fmt or paths.getenv("PK_FORMAT") or "human"
        if fmt not in FORMATS:
            raise InvalidInputError("PK_FORMAT must be 'human' or 'json'")
        self.format = fmt

    @property
    def json(self) -> bool:
        return self.format == "json"

    def session(self, *, autostart: bool = True) -> AgentSession:
        """A session with the node's agent, started on demand (progress shown on a terminal)."""
        shown = show_progress if sys.stderr.isatty() else None
        if self.password_file is None:  # the password source is built only if needed
            return AgentSession(self.node_path, autostart=autostart, on_progress=shown)
        from polykey.agent_client.passwords import PasswordSource

        return AgentSession(self.node_path, PasswordSource(self.password_file), autostart=autostart, on_progress=shown)


# -- output --------------------------------------------------------------------------


def print_json(data: Any) -> None:
    sys.stdout.write(dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def emit(opts: Options, human: str, data: Any) -> None:
    """Print ``data`` as one JSON document with --format json, else ``human`` (nothing if empty)."""
    if opts.json:
        print_json(data)
    elif human:
        sys.stdout.write(human + "\n")
        sys.stdout.flush()


def value_json(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        import binascii

        return {"valueBase64": binascii.b2a_base64(value, newline=False).decode("ascii")}


def write_value(value: bytes) -> None:
    """The raw value on stdout; a newline only when stdout is a terminal."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


# -- pk secrets get / set -------------------------------------------------------------


def secrets_get(opts: Options, target: str, commit: str | None) -> None:
    vault, path = split_secret_path(target)
    params: dict[str, Any] = {"vault": vault, "path": path}
    if commit is not None:
        params["commit"] = commit
    with opts.session() as s:
        value = s.call("secrets.get", params)
    if not isinstance(value, bytes):
        raise InvalidInputError("the agent answered secrets.get without a value")
    if opts.json:
        print_json({"path": path.strip("/"), **value_json(value)})
    else:
        write_value(value)


def read_limited(stream: Any, what: str) -> bytes:
    data: bytes = stream.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise InvalidInputError(f"{what} is larger than the {MAX_SECRET_BYTES}-byte limit for a secret")
    return data


def read_value(from_file: str | None) -> bytes:
    """The new secret value: --from-file, else a hidden prompt on a terminal, else all of stdin."""
    if from_file is not None:
        try:
            with open(from_file, "rb") as f:
                return read_limited(f, f"file {from_file}")
        except OSError as e:
            raise InvalidInputError(f"cannot read {from_file}: {e.strerror}") from None
    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise InvalidInputError("no value: standard input is closed; pipe the value in or use --from-file")
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Secret value: ")
        if getpass.getpass("Repeat to confirm: ") != first:
            raise InvalidInputError("the two values do not match")
        return first.encode("utf-8")
    return read_limited(sys.stdin.buffer, "standard input")


def secrets_set(opts: Options, target: str, from_file: str | None) -> None:
    vault, path = split_secret_path(target)
    value = read_value(from_file)
    with opts.session() as s:
        out = s.call("secrets.set", {"vault": vault, "path": path, "value": value})
    verb = "Created" if out["created"] else "Updated"
    emit(opts, f"{verb} {vault}:{out['path']} ({len(value)} bytes).", out)


# -- pk secrets ls / rm ---------------------------------------------------------------


def _hint(message: str) -> None:
    """What there is and what to do next, on stderr (stdout stays the listing, empty here)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def show_vaults(opts: Options, rows: list[dict[str, Any]]) -> None:
    """``pk vaults list`` (and ``pk secrets ls`` without a vault): name, VaultId, role, and
    ``DAMAGED: reason`` after a vault whose repository cannot be read."""
    if opts.json:
        print_json(rows)
    elif not rows:
        _hint("No vaults yet: pk vaults create NAME")
    else:
        def line(r: dict[str, Any]) -> str:
            damaged = f"\tDAMAGED: {r.get('reason')}" if r.get("state") == "damaged" else ""
            return f"{r['name']}\t{r['vaultId']}\t{r['role'] or '-'}{damaged}\n"

        sys.stdout.write("".join(line(r) for r in rows))
        sys.stdout.flush()


def show_secrets(opts: Options, vault: str, path: str, commit: str | None, listing: Any) -> None:
    """``pk secrets ls VAULT[:DIR]``: entries relative to DIR, directories ending with '/'.
    ``listing``: the agent's ``secrets.list`` answer, compact or in rows (spec s.6)."""
    if opts.json:
        print_json(protocol.listing_rows(listing))
        return
    lines = protocol.listing_lines(listing)
    if lines is None:
        lines = [r["path"] + "/" if r["type"] == "dir" else r["path"] for r in listing]
    base = path.strip("/")
    if not lines:
        where = f"{vault}:{base}/" if base else f"Vault {vault}"
        if commit is not None:
            _hint(f"{where} was empty at commit {commit}")
        else:
            _hint(f"{where} is empty: add a secret with pk secrets set {vault}:{base + '/' if base else ''}NAME")
        return
    if base:
        cut = len(base) + 1
        prefix = base + "/"
        lines = [line[cut:] if line.startswith(prefix) else line for line in lines]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def secrets_ls(opts: Options, target: str | None, recursive: bool, commit: str | None) -> None:
    """``pk secrets ls [VAULT[:DIR]]``; without VAULT, the vaults (as ``pk vaults list``)."""
    if target is None:
        if recursive or commit is not None:
            raise InvalidInputError("-r and --commit need a VAULT[:DIR] to list")
        vaults_list(opts)
        return
    vault, path = split_secret_path(target, need_path=False)
    with opts.session() as s:
        listing = protocol.call_listing(s.call, {"vault": vault, "path": path, "recursive": recursive, "commit": commit})
    show_secrets(opts, vault, path, commit, listing)


def secrets_rm(opts: Options, targets: list[str], recursive: bool, yes: bool = False) -> None:
    """One commit per path; nothing is removed if a path does not exist (like ``git rm``). With -r
    it asks first on a terminal; without one, ``yes`` is required (polykey.cli.confirm)."""
    parsed = [split_secret_path(t) for t in targets]
    confirmation = None
    if recursive:  # the confirmation rules load the error table: only for -r
        from polykey.cli import confirm

        confirmation = confirm.RemoveConfirmation(targets, recursive, yes)
    asks = confirmation is not None and confirmation.needed
    results = []
    with opts.session() as s:
        for vault, path in parsed if len(parsed) > 1 or asks else []:  # a typo removes nothing
            s.call("secrets.list", {"vault": vault, "path": path})  # (and asks nothing)
        if confirmation is not None:
            confirmation.ask()
        for vault, path in parsed:
            out = s.call("secrets.remove", {"vault": vault, "path": path, "recursive": recursive})
            results.append({"vault": vault, "path": path.strip("/"), **out})
    total = sum(r["removed"] for r in results)
    # One JSON shape for any number of paths: the totals, the last commit, and each path's result.
    data = {"removed": total, "commit": results[-1]["commit"], "results": results}
    emit(opts, f"Removed {total} secret{'s' if total != 1 else ''}.", data)


# -- pk vaults list / pk agent status -----------------------------------------------------


def vaults_list(opts: Options) -> None:
    with opts.session() as s:
        rows = s.call("vaults.list")
    show_vaults(opts, rows)


def running_status(opts: Options) -> dict[str, Any] | None:
    """The running agent's status, or None when none runs (never starts one; a busy agent is
    retried, as every client does: docs/spec/agent-protocol.md section 3 "Limits")."""
    try:
        with opts.session(autostart=False) as c:
            status = c.call("agent.status")
    except Exception as e:
        if not is_error(e, "AgentUnavailableError"):
            raise
        return None
    return status if isinstance(status, dict) else {}


def describe_status(status: dict[str, Any]) -> str:
    lines = [
        f"Agent: {status.get('state')}",
        f"NodeId: {status.get('nodeId')}",
        f"PID: {status.get('pid')}",
        f"Socket: {status.get('socket')}",
    ]
    if "uptime" in status:
        lines.append(f"Uptime: {status['uptime']:.0f} s")
    peer = status.get("peer")
    if isinstance(peer, dict) and "error" in peer:
        lines.append(f"Peer listener: not running ({peer['error']})")
    elif isinstance(peer, dict):
        host = str(peer.get("host"))
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"Peer listener: {shown}:{peer.get('port')} (TCP and UDP)")
    elif "peer" in status:
        lines.append("Peer listener: stopped while locked")
    if status.get("idleLock"):
        lines.append(f"Idle lock: {status['idleLock']:g} s")
    if "openVaults" in status:
        lines.append("Open vaults: " + (", ".join(status["openVaults"]) or "(none)"))
    return "\n".join(lines)


def agent_status(opts: Options) -> None:
    status = running_status(opts)
    if status is None:
        emit(opts, "Agent: not running", {"state": "stopped"})
        return
    emit(opts, describe_status(status), status)
