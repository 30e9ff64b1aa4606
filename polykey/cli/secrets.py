"""``pk secrets``: read and write secrets, written ``VAULT:PATH``.

Values never come from argv: ``set`` reads stdin, a hidden prompt on a terminal,
or ``--from-file``. ``get`` writes the raw bytes (a newline is added only when
stdout is a terminal). ``edit`` uses a file in a fresh 0700 directory on tmpfs
(``/dev/shm``) where available, overwritten and removed afterwards.
"""

from __future__ import annotations

import copy
import getpass
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from polykey.agent_client import split_secret_path
from polykey.cli import hot
from polykey.cli.common import common_options, emit, settings
from polykey.cli.vaults import backend, short, utf8, when
from polykey.errors import InvalidInputError, SecretNotFoundError
from polykey.vaults.generate import CHARSETS, DEFAULT_CHARSET, DEFAULT_LENGTH



@click.group()
@common_options
def secrets() -> None:
    """Read and write secrets, written VAULT:PATH (e.g. myvault:db/password)."""


@click.command("set")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the value from this file (raw bytes).")
@common_options
def secrets_set(target: str, from_file: Path | None) -> None:
    """Create or replace a secret.

    The value is all of standard input, exactly as given (binary is fine; `echo` adds a newline,
    `printf` does not), or asked twice without echo when standard input is a terminal, or the bytes
    of --from-file. Never an argument. At most 16 MiB.
    """
    hot.secrets_set(settings(), target, str(from_file) if from_file is not None else None)


@click.command("get")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@click.option("--commit", default=None, metavar="COMMIT", callback=utf8, help="Read the value as of this commit.")
@common_options
def secrets_get(target: str, commit: str | None) -> None:
    """Print a secret's raw value (a newline is added only on a terminal)."""
    hot.secrets_get(settings(), target, commit)


def _alias(command: click.Command, of: str) -> click.Command:
    """The same command under a second name, listed as an alias in ``pk secrets --help``."""
    alias = copy.copy(command)
    alias.short_help = f"Alias of '{of}'."
    return alias


secrets.add_command(secrets_set, "set")
secrets.add_command(_alias(secrets_set, "set"), "write")
secrets.add_command(secrets_get, "get")
secrets.add_command(_alias(secrets_get, "get"), "cat")


@secrets.command("ls")
@click.argument("target", metavar="[VAULT[:DIR]]", required=False, callback=utf8)
@click.option("-r", "--recursive", is_flag=True, help="List every descendant.")
@click.option("--commit", default=None, metavar="COMMIT", callback=utf8, help="List as of this commit.")
@common_options
def secrets_ls(target: str | None, recursive: bool, commit: str | None) -> None:
    """List the secrets and directories in a vault directory (directories end with '/').

    Without VAULT, list the vaults (as `pk vaults list` does).
    """
    hot.secrets_ls(settings(), target, recursive, commit)


@secrets.command("rm")
@click.argument("targets", nargs=-1, required=True, metavar="VAULT:PATH...", callback=utf8)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and everything in them (asks first).")
@click.option("--yes", "-y", is_flag=True, help="Confirm -r without being asked (needed when there is no terminal).")
@common_options
def secrets_rm(targets: tuple[str, ...], recursive: bool, yes: bool) -> None:
    """Remove secrets (and directories with -r). One commit per path; nothing is removed if a
    path does not exist. With -r it asks first on a terminal; without one, --yes is required."""
    hot.secrets_rm(settings(), list(targets), recursive, yes)


def _same_vault(src: str, dst: str) -> tuple[str, str, str]:
    vault, src_path = split_secret_path(src)
    if ":" in dst:
        dvault, dst_path = split_secret_path(dst, need_path=False)
        if dvault != vault:
            raise InvalidInputError("moving or copying between vaults is not supported; get and set instead")
    else:
        dst_path = dst
    return vault, src_path, dst_path


@secrets.command("mv")
@click.argument("src", metavar="VAULT:SRC", callback=utf8)
@click.argument("dst", metavar="[VAULT:]DST", callback=utf8)
@common_options
def secrets_mv(src: str, dst: str) -> None:
    """Rename a secret or directory within a vault (into DST if it is a directory)."""
    s = settings()
    vault, src_path, dst_path = _same_vault(src, dst)
    with backend(s) as b:
        out = b.move(vault, src_path, dst_path)
    emit(s, f"Moved to {vault}:{out['path']}.", out)


@secrets.command("cp")
@click.argument("src", metavar="VAULT:SRC", callback=utf8)
@click.argument("dst", metavar="[VAULT:]DST", callback=utf8)
@common_options
def secrets_cp(src: str, dst: str) -> None:
    """Copy a secret or directory within a vault (into DST if it is a directory)."""
    s = settings()
    vault, src_path, dst_path = _same_vault(src, dst)
    with backend(s) as b:
        out = b.copy(vault, src_path, dst_path)
    emit(s, f"Copied to {vault}:{out['path']}.", out)


@secrets.command("mkdir")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@common_options
def secrets_mkdir(target: str) -> None:
    """Create a directory (and its parents)."""
    s = settings()
    vault, path = split_secret_path(target)
    with backend(s) as b:
        out = b.mkdir(vault, path, True)
    emit(s, f"Created directory {vault}:{out['path']}/.", out)


@secrets.command("stat")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@common_options
def secrets_stat(target: str) -> None:
    """Size, creation and modification time, last author and revision count of a secret."""
    s = settings()
    vault, path = split_secret_path(target)
    with backend(s) as b:
        out = b.stat(vault, path)
    lines = [
        f"path:      {vault}:{out['path']}",
        f"type:      {out['type']}",
        f"size:      {out['size']} bytes" if out["type"] == "secret" else f"entries:   {out['entries']}",
        f"created:   {when(out['created'])}",
        f"modified:  {when(out['modified'])}",
        f"author:    {out['author'] or '-'}",
        f"revisions: {out['revisions']}",
    ]
    emit(s, "\n".join(lines), out)


@secrets.command("history")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Show at most N revisions.")
@common_options
def secrets_history(target: str, limit: int | None) -> None:
    """The revisions of one secret, newest first (commit, time, author, action, size)."""
    s = settings()
    vault, path = split_secret_path(target)
    with backend(s) as b:
        rows = b.history(vault, path, limit)
    lines = [
        f"{r['commit'][:12]}  {when(r['time'])}  {short(r['author'])}  {r['action']}"
        + (f"  {r['size']} bytes" if r["size"] is not None else "")
        for r in rows
    ]
    emit(s, "\n".join(lines), rows)


@secrets.command("revert")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@click.argument("commit", callback=utf8)
@common_options
def secrets_revert(target: str, commit: str) -> None:
    """Write the secret's value as of COMMIT back as a new commit."""
    s = settings()
    vault, path = split_secret_path(target)
    with backend(s) as b:
        out = b.revert(vault, path, commit)
    emit(s, f"Reverted {vault}:{out['path']} to its value at {out['revertedTo'][:12]}.", out)


@secrets.command("generate")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@click.option("--length", type=click.IntRange(1, 4096), default=DEFAULT_LENGTH, show_default=True,
              help="Number of characters.")
@click.option("--charset", default=DEFAULT_CHARSET, show_default=True, callback=utf8,
              help=f"One of {', '.join(sorted(CHARSETS))}, or the literal characters to draw from.")
@click.option("--reveal", is_flag=True, help="Also print the generated value.")
@click.option("--force", "-f", is_flag=True,
              help="Replace an existing secret without asking (needed when there is no terminal).")
@click.option("--yes", "-y", is_flag=True, help="The same as --force.")
@common_options
def secrets_generate(target: str, length: int, charset: str, reveal: bool, force: bool, yes: bool) -> None:
    """Store a random password; it is not printed unless --reveal is given.

    Over an existing secret it asks first on a terminal; without one, --force is required (as in
    gopass). The old value stays in the secret's history.
    """
    from polykey.cli import confirm
    from polykey.errors import SecretExistsError

    s = settings()
    vault, path = split_secret_path(target)
    with backend(s) as b:
        try:
            out = b.generate(vault, path, length, charset, reveal, force or yes)
        except SecretExistsError:
            confirm.confirm(False, f"replace the existing secret {target}",
                            f"Replace the existing secret {target} with a random one?", flag="--force")
            out = b.generate(vault, path, length, charset, reveal, True)
    if reveal and not s.json:
        hot.write_value(out["value"].encode("utf-8"))
        return
    where, what = f"{vault}:{out['path']}", f"a random secret of {length} characters"
    human = f"Stored {what} at {where}" if out["created"] else f"Replaced {where} with {what}"
    emit(s, human + " (not shown).", out)


def _private_tmpdir() -> Path:
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix="pk-edit-", dir=base))  # mkdtemp makes it 0700


def _scrub(directory: Path) -> None:
    for f in directory.iterdir():
        try:
            size = f.stat().st_size
            with open(f, "r+b") as fh:
                fh.write(b"\0" * size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _unwind_on_termination() -> Iterator[None]:
    """SIGTERM, or SIGHUP (the terminal closed), while the editor runs: unwind first, so the clear
    copy is scrubbed and removed, then die of the same signal."""

    def unwind(signum: int, _frame: FrameType | None) -> None:
        raise _Signalled(signum)

    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, unwind) for sig in caught}
    try:
        yield
    except _Signalled as e:
        for sig in caught:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), e.signum)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@secrets.command("edit")
@click.argument("target", metavar="VAULT:PATH", callback=utf8)
@common_options
def secrets_edit(target: str) -> None:
    """Edit a secret in $VISUAL / $EDITOR (created if missing). Nothing is written if unchanged."""
    s = settings()
    vault, path = split_secret_path(target)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        command = shlex.split(editor)
    except ValueError:
        raise InvalidInputError(f"cannot parse the editor command {editor!r}") from None
    if not command:
        raise InvalidInputError("the editor command ($VISUAL / $EDITOR) is empty")
    with _unwind_on_termination(), backend(s) as b:
        try:
            old: bytes | None = b.get_secret(vault, path)
        except SecretNotFoundError:
            old = None
        directory = _private_tmpdir()
        try:
            file = directory / "secret"
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(old or b"")
            try:
                code = subprocess.call([*command, str(file)])
            except OSError as e:
                raise InvalidInputError(f"cannot run the editor {editor!r}: {e.strerror}") from None
            if code != 0:
                raise InvalidInputError(f"the editor exited with status {code}; nothing was saved")
            with open(file, "rb") as f:
                new = hot.read_limited(f, "the edited file")
        finally:
            _scrub(directory)
        if new == (old if old is not None else b""):  # a new secret left empty is not created
            emit(s, "Unchanged; nothing written.", {"path": path.strip("/"), "changed": False})
            return
        out = b.set_secret(vault, path, new)
    emit(s, f"Saved {vault}:{out['path']}.", {**out, "changed": True})


__all__ = ["secrets"]
