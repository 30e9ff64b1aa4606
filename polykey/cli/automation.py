"""Secrets for programs: ``pk secrets env``, ``pk run --env-file``, ``pk inject`` (docs/automation.md).

These are everyday commands: their work is in :mod:`polykey.cli.hot_env`, shared with the
click-free fast path. References are written ``pk://VAULT/PATH``.
"""

from __future__ import annotations

from pathlib import Path

import click

from polykey.cli import hot, hot_env
from polykey.cli.common import common_options, settings

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
    hot_env.secrets_env(s, list(targets), _exec_args(), env_format, invalid, duplicate)


@click.command("run", cls=_PassThroughCommand)
@click.option("--env-file", "env_files", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              required=True, help="NAME=pk://VAULT/PATH (or NAME=value) lines; may be repeated.")
@common_options
def run_command(env_files: tuple[Path, ...]) -> None:
    """Run `-- CMD ARGS...` with variables from env files whose values may be pk:// references.

    pk becomes the command: its exit code and signals pass through. Values are exactly as stored.
    """
    s = settings()
    hot_env.run_with_env_files(s, [str(p) for p in env_files], _exec_args())


@click.command("inject")
@click.option("-i", "--in-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=Path("-"),
              help="Template to read (default stdin).")
@click.option("-o", "--out-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (created or replaced with mode 0600) instead of stdout.")
@common_options
def inject_command(in_file: Path, out_file: Path | None) -> None:
    """Replace every {{ pk://VAULT/PATH }} in a template with the secret's value."""
    s = settings()
    hot_env.inject(s, str(in_file), str(out_file) if out_file is not None else None)
