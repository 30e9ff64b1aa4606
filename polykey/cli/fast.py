"""The click-free fast path for ``pk secrets get|cat`` and ``pk secrets env``.

:func:`dispatch` recognises exactly the argument shapes it fully understands and
runs the same functions as the click commands (:mod:`polykey.cli.hot`), through
the same error mapping (:func:`polykey.cli.errors.run_guarded`). Anything else --
``--help``, ``--version``, an unknown or malformed option, a missing or extra
argument, an option where click would not accept it -- returns ``None`` and the
click application handles it, so both routes give identical results and errors.

Grammar accepted (the common options may appear before ``secrets`` and after the
leaf command, as click accepts them; ``--opt=value`` or ``--opt value``)::

    pk [COMMON] secrets (get|cat) [COMMON|--commit C]... VAULT:PATH [COMMON|--commit C]...
    pk [COMMON] secrets env [COMMON|ENVOPT]... TARGET... [-- CMD ARGS...]

Set ``PK_NO_FAST_PATH=1`` to send every command to click (used by the tests that
compare both routes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_COMMON = {"--node-path": "node_path", "--password-file": "password_file", "--format": "format"}
_COMMON_CHOICES = {"format": ("human", "json")}
_GET_OPTS = {"--commit": "commit"}
_ENV_OPTS = {"--env-format": "env_format", "--env-invalid": "invalid", "--env-duplicate": "duplicate"}
_ENV_CHOICES = {
    "env_format": ("unix", "json", "dotenv"),
    "invalid": ("error", "warn", "ignore"),
    "duplicate": ("keep", "overwrite", "warn", "error"),
}


class _Fallback(Exception):
    """This command line is for click."""


def _options(tokens: list[str], known: Mapping[str, str], choices: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, str], list[str]]:
    """Split ``tokens`` into options (last one wins) and positionals; _Fallback on anything odd."""
    values: dict[str, str] = {}
    positionals: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            if name not in known:
                raise _Fallback
            if not eq:
                i += 1
                if i >= len(tokens):
                    raise _Fallback
                value = tokens[i]
            if not value:
                raise _Fallback
            key = known[name]
            if key in choices and value not in choices[key]:
                raise _Fallback
            values[key] = value
        else:
            positionals.append(token)
        i += 1
    return values, positionals


def _parse(argv: list[str]) -> tuple[str, dict[str, str], list[str], list[str] | None]:
    if "secrets" not in argv:
        raise _Fallback
    at = argv.index("secrets")
    root, _ = _options(argv[:at], _COMMON, _COMMON_CHOICES)
    if _ != [] or at + 1 >= len(argv):
        raise _Fallback
    leaf = argv[at + 1]
    rest = argv[at + 2 :]
    command: list[str] | None = None
    if leaf in ("get", "cat"):
        opts, positionals = _options(rest, {**_COMMON, **_GET_OPTS}, _COMMON_CHOICES)
        if len(positionals) != 1:
            raise _Fallback
        kind = "get"
    elif leaf == "env":
        if "--" in rest:
            cut = rest.index("--")
            rest, command = rest[:cut], rest[cut + 1 :]
        opts, positionals = _options(rest, {**_COMMON, **_ENV_OPTS}, {**_COMMON_CHOICES, **_ENV_CHOICES})
        if not positionals:
            raise _Fallback
        kind = "env"
    else:
        raise _Fallback
    return kind, {**root, **opts}, positionals, command


def _utf8(tokens: list[str]) -> bool:
    """False if an argument holds bytes that are not UTF-8 (decoded by Python as surrogates)."""
    try:
        for token in tokens:
            token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dispatch(argv: list[str]) -> int | None:
    """Run a hot command without click and return its exit code, or ``None`` to use click."""
    if os.environ.get("PK_NO_FAST_PATH"):
        return None
    if not _utf8(argv[: argv.index("--")] if "--" in argv else argv):
        return None  # click words the error (the child command's own arguments may be anything)
    try:
        kind, opts, positionals, command = _parse(argv)
    except _Fallback:
        return None
    from polykey.cli import hot
    from polykey.cli.errors import run_guarded

    def invoke() -> None:
        common = hot.Options(opts.get("node_path"), opts.get("password_file"), opts.get("format"))
        if kind == "get":
            hot.secrets_get(common, positionals[0], opts.get("commit"))
        else:
            hot.secrets_env(
                common,
                positionals,
                command,
                opts.get("env_format"),
                opts.get("invalid", "error"),
                opts.get("duplicate", "overwrite"),
            )

    return run_guarded(invoke)
