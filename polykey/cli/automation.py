"""Secrets for programs: ``pk secrets env``, ``pk run --env-file``, ``pk inject`` (docs/automation.md).

``pk secrets env`` is one of the hot commands: its work is in :mod:`polykey.cli.hot`,
shared with the click-free fast path. References are written ``pk://VAULT/PATH``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
import click

from polykey import fsutil
from polykey.cli import hot
from polykey.cli.common import common_options, emit, hot_options, settings
from polykey.errors import EnvNameError, InvalidInputError, SecretReferenceError, VaultError

_REF = re.compile(r"pk://([^/\s{}]+)/([^\s{}]+)")
_TEMPLATE = re.compile(r"\{\{\s*(pk://[^\s{}]*)\s*\}\}")
_TEMPLATE_LIMIT = 16 * 1024 * 1024
_EXEC_META = "pk.exec"


class _PassThroughCommand(click.Command):
    """A command whose arguments after the first ``--`` are a command line to run, kept apart."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- CMD [ARGS]...]"]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[_EXEC_META] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _exec_args() -> list[str] | None:
    value = click.get_current_context().meta.get(_EXEC_META)
    return list(value) if value is not None else None


@click.command("env", cls=_PassThroughCommand)
@click.argument("targets", nargs=-1, required=True, metavar="VAULT:PATH[=NAME]|VAULT[:DIR]...")
@click.option("--env-format", type=click.Choice(hot.ENV_FORMATS), default=None,
              help="Output without a command: unix (export lines, default), json or dotenv.")
@click.option("--env-invalid", "invalid", type=click.Choice(hot.ENV_INVALID), default="error", show_default=True,
              help="A secret name that is not a valid variable name: fail, warn and skip, or skip.")
@click.option("--env-duplicate", "duplicate", type=click.Choice(hot.ENV_DUPLICATE), default="overwrite",
              show_default=True, help="A variable named twice: keep the first, the last, the last with a warning, or fail.")
@common_options
def secrets_env(targets: tuple[str, ...], env_format: str | None, invalid: str, duplicate: str) -> None:
    """Secrets as environment variables: run `-- CMD ARGS...` with them, or print them.

    A secret becomes a variable named after its last path component, or NAME with
    VAULT:PATH=NAME; VAULT:DIR (or a whole VAULT) adds every secret below it. With a
    command, pk becomes that command: the exit code and signals are CMD's. Values are
    exactly as stored: no newline is added.
    """
    s = settings()
    hot.secrets_env(hot_options(s), list(targets), _exec_args(), env_format, invalid, duplicate)


# -- references -----------------------------------------------------------------------


def parse_reference(text: str, where: str) -> tuple[str, str]:
    """``pk://VAULT/PATH`` -> ``(vault, path)``; SecretReferenceError otherwise."""
    m = _REF.fullmatch(text)
    if not m or not m.group(2).strip("/"):
        raise SecretReferenceError(f"{where}: malformed reference (write pk://VAULT/PATH)")
    return m.group(1), m.group(2)


def resolve_references(opts: hot.Options, refs: dict[tuple[str, str], str]) -> dict[tuple[str, str], bytes]:
    """The value of each ``(vault, path)``; ``refs`` maps each to where it was first written
    (``FILE line N``), which an error about it names with the reference."""
    values: dict[tuple[str, str], bytes] = {}
    if not refs:
        return values
    with opts.session() as session:
        for (vault, path), where in refs.items():
            try:
                values[(vault, path)] = session.call("secrets.get", {"vault": vault, "path": path})
            except VaultError as e:
                raise e.within(f"{where}: pk://{vault}/{path}") from None
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def env_file_entries(text: str, name: str) -> list[tuple[str, str | tuple[str, str], str]]:
    """``NAME=value`` / ``NAME=pk://vault/path`` lines (``#`` comments, ``export`` prefix allowed):
    ``(NAME, value or (vault, path), "FILE line N")``."""
    entries: list[tuple[str, str | tuple[str, str], str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        var, eq, value = line.partition("=")
        var = var.strip()
        where = f"{name} line {number}"
        if not eq:
            raise InvalidInputError(f"{where}: expected NAME=VALUE")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            # not the text itself: a mistyped line may be a literal value, a secret
            raise EnvNameError(f"{where}: the text before '=' is not a valid environment variable name")
        value = _unquote(value.strip())
        entries.append((var, parse_reference(value, where) if value.startswith("pk://") else value, where))
    return entries


def parse_env_file(text: str, name: str) -> list[tuple[str, str | tuple[str, str]]]:
    """:func:`env_file_entries` without the line of each entry."""
    return [(var, value) for var, value, _ in env_file_entries(text, name)]


@click.command("run", cls=_PassThroughCommand)
@click.option("--env-file", "env_files", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              required=True, help="NAME=pk://VAULT/PATH (or NAME=value) lines; may be repeated.")
@common_options
def run_command(env_files: tuple[Path, ...]) -> None:
    """Run `-- CMD ARGS...` with variables from env files whose values may be pk:// references.

    pk becomes the command: its exit code and signals pass through. Values are exactly as stored.
    """
    s = settings()
    command = _exec_args()
    if not command:
        raise InvalidInputError("give the command to run after --")
    entries: list[tuple[str, str | tuple[str, str], str]] = []
    for path in env_files:
        try:
            text = fsutil.read_limited(path, _TEMPLATE_LIMIT).decode("utf-8")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"cannot read env file {path}: {getattr(e, 'strerror', None) or e}") from None
        entries.extend(env_file_entries(text, str(path)))
    refs: dict[tuple[str, str], str] = {}
    for _, value, where in entries:
        if isinstance(value, tuple):
            refs.setdefault(value, where)
    values = resolve_references(hot_options(s), refs)
    env: dict[str, bytes] = {}
    for var, value, _ in entries:
        env[var] = values[value] if isinstance(value, tuple) else value.encode("utf-8")
    hot.exec_with_env(command, env)


@click.command("inject")
@click.option("-i", "--in-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=Path("-"),
              help="Template to read (default stdin).")
@click.option("-o", "--out-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (created or replaced with mode 0600) instead of stdout.")
@common_options
def inject_command(in_file: Path, out_file: Path | None) -> None:
    """Replace every {{ pk://VAULT/PATH }} in a template with the secret's value."""
    s = settings()
    if str(in_file) == "-":
        template = sys.stdin.buffer.read(_TEMPLATE_LIMIT + 1)
        name = "stdin"
    else:
        try:
            template = fsutil.read_limited(in_file, _TEMPLATE_LIMIT)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read template {in_file}: {getattr(e, 'strerror', None) or e}") from None
        name = str(in_file)
    if len(template) > _TEMPLATE_LIMIT:
        raise InvalidInputError(f"template {name} is larger than {_TEMPLATE_LIMIT} bytes")
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"template {name} is not UTF-8 text") from None
    refs: list[tuple[str, str]] = []
    first: dict[tuple[str, str], str] = {}
    for m in _TEMPLATE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        where = f"{name} line {line}"
        refs.append(parse_reference(m.group(1), where))
        first.setdefault(refs[-1], where)
    values = resolve_references(hot_options(s), first)
    out = bytearray()
    pos = 0
    for m, ref in zip(_TEMPLATE.finditer(text), refs):
        out += text[pos : m.start()].encode("utf-8") + values[ref]
        pos = m.end()
    out += text[pos:].encode("utf-8")
    if out_file is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(out))
        sys.stdout.buffer.flush()
        return
    fsutil.atomic_write(out_file, bytes(out), mode=0o600)
    if s.json:
        emit(s, "", {"file": str(out_file), "references": len(refs)})
    else:
        click.echo(f"Wrote {out_file} ({len(refs)} secret(s), mode 0600).", err=True)
