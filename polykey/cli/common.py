"""Options every ``pk`` command accepts, password sources and output formatting.

The common options (``--node-path``, ``--password-file``, ``--format``) are
accepted on the root command and after any subcommand, as Polykey's CLI does
(``pk keys public --node-path P``); the one nearest the end wins, then the
environment (``PK_NODE_PATH``, ``PK_PASSWORD``, ``PK_FORMAT``), then the default.
A password is never taken from argv.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from polykey import crypto
from polykey.agent_client import passwords
from polykey.cli import hot
from polykey.errors import InvalidInputError
from polykey.keys.store import NodeDir, default_node_path

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
            type=click.Choice(["human", "json"]),
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


@dataclass(frozen=True)
class Settings:
    node_path: Path
    password_file: Path | None
    format: str

    @property
    def json(self) -> bool:
        return self.format == "json"

    @property
    def node(self) -> NodeDir:
        return NodeDir(self.node_path)


def hot_options(s: Settings) -> hot.Options:
    """The same settings for the functions shared with the click-free fast path."""
    return hot.Options(str(s.node_path), str(s.password_file) if s.password_file is not None else None, s.format)


def settings() -> Settings:
    """The effective common options for the running command."""
    ctx = click.get_current_context()
    given: dict[str, Any] = ctx.meta.get(_META, {})
    node_path = given.get("node_path") or default_node_path()
    fmt = given.get("format_") or os.environ.get("PK_FORMAT") or "human"
    if fmt not in ("human", "json"):
        raise InvalidInputError("PK_FORMAT must be 'human' or 'json'")
    return Settings(node_path=Path(node_path), password_file=given.get("password_file"), format=fmt)


# -- passwords (one implementation, shared with the click-free fast path) ------------------


def read_secret_file(path: Path, what: str = "password file") -> bytes:
    """A password (or recovery code) from a file: at most 4 KiB, one trailing newline stripped."""
    return passwords.read_password_file(str(path), what)


prompt_password = passwords.prompt_password


def node_password(s: Settings, *, confirm: bool = False, prompt: str = "Node password: ") -> bytes:
    """The node password from --password-file, PK_PASSWORD, or a terminal prompt."""
    source = passwords.PasswordSource(
        str(s.password_file) if s.password_file is not None else None, prompt=prompt, confirm=confirm
    )
    return source.get()


# -- output ----------------------------------------------------------------------


def emit(s: Settings, human: str, data: Any) -> None:
    """Print ``data`` as one JSON document with --format json, else ``human`` (the one way every
    command prints, shared with the fast path)."""
    hot.emit(hot_options(s), human, data)
