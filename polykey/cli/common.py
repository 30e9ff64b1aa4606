"""Options every ``pk`` command accepts, password sources and output formatting.

The common options (``--node-path``, ``--password-file``, ``--format``) are
accepted on the root command and after any subcommand, as Polykey's CLI does
(``pk keys public --node-path P``); the one nearest the end wins, then the
environment (``PK_NODE_PATH``, ``PK_PASSWORD``, ``PK_FORMAT``), then the default.
A password is never taken from argv. The options' model is :class:`polykey.cli.hot.Options`,
shared with the click-free fast path; :func:`emit` is the one way every command prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from polykey import crypto
from polykey.agent_client import passwords
from polykey.cli.hot import FORMATS, Options, emit
from polykey.errors import InvalidInputError

F = TypeVar("F", bound=Callable[..., Any])

_META = "pk.common"


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def common_options(f: F) -> F:
    """Add ``--node-path``, ``--password-file`` and ``--format`` to a command."""
    options = [
        click.option(
            "--node-path",
            type=click.Path(file_okay=False, path_type=Path),
            expose_value=False,
            callback=_store,
            help="Node directory [env PK_NODE_PATH; default: the user data dir].",
        ),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_store,
            help="Read the node password from this file [or env PK_PASSWORD].",
        ),
        click.option(
            "--format",
            "format_",
            type=click.Choice(FORMATS),
            expose_value=False,
            callback=_store,
            help="Output format [env PK_FORMAT; default human].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def kdf_option(f: F) -> F:
    """``--kdf-profile`` for commands that write a key file."""
    return click.option(
        "--kdf-profile",
        type=click.Choice(sorted(crypto.KDF_PROFILES)),
        default=None,
        help="Argon2id cost for the key file [env PK_KDF_PROFILE; default moderate; 'min' is for tests only].",
    )(f)


def kdf_limits(profile: str | None) -> crypto.KdfLimits:
    name = profile or os.environ.get("PK_KDF_PROFILE") or crypto.DEFAULT_KDF_PROFILE
    if name not in crypto.KDF_PROFILES:
        raise InvalidInputError(f"unknown KDF profile {name!r} (choose from {', '.join(sorted(crypto.KDF_PROFILES))})")
    return crypto.KDF_PROFILES[name]


def settings() -> Options:
    """The effective common options for the running command (the one model, shared with the fast path)."""
    given: dict[str, Any] = click.get_current_context().meta.get(_META, {})
    return Options(given.get("node_path"), given.get("password_file"), given.get("format_"))


# -- passwords (one implementation, shared with the click-free fast path) ------------------


def read_secret_file(path: Path, what: str = "password file") -> bytes:
    """A password (or recovery code) from a file: at most 4 KiB, one trailing newline stripped."""
    return passwords.read_password_file(str(path), what)


prompt_password = passwords.prompt_password


def node_password(s: Options, *, confirm: bool = False, prompt: str = "Node password: ") -> bytes:
    """The node password from --password-file, PK_PASSWORD, or a terminal prompt."""
    return passwords.PasswordSource(s.password_file, prompt=prompt, confirm=confirm).get()


__all__ = ["Options", "common_options", "emit", "kdf_limits", "kdf_option", "node_password", "prompt_password",
           "read_secret_file", "settings"]
