"""The click-free fast path for the everyday commands.

:func:`dispatch` recognises exactly the argument shapes it fully understands and runs the same
functions as the click commands (:mod:`polykey.cli.hot`, :mod:`polykey.cli.hot_env`), through the
same error mapping (:func:`polykey.cli.errors.run_guarded`). Anything else -- ``--help``,
``--version``, an unknown, repeated-where-click-would-object or malformed option, a missing or
extra argument, an option where click would not accept it, a path option click would refuse, a
value to be typed at a terminal -- returns ``None`` and the click application handles it, so both
routes give identical output, errors and exit codes (tests/e2e/test_fast_path_parity.py).

Grammar accepted (the common options may appear before the group and after the leaf command, as
click accepts them; ``--opt=value`` or ``--opt value``; options and arguments in any order)::

    pk [COMMON] secrets (get|cat) [--commit C] VAULT:PATH
    pk [COMMON] secrets (set|write) [--from-file F] VAULT:PATH      (stdin not a terminal)
    pk [COMMON] secrets ls [-r|--recursive] [--commit C] [VAULT[:DIR]]
    pk [COMMON] secrets rm [-r|--recursive] [-y|--yes] VAULT:PATH...
    pk [COMMON] secrets env [ENVOPT]... TARGET... [-- CMD ARGS...]
    pk [COMMON] run --env-file F... -- CMD ARGS...
    pk [COMMON] inject [-i|--in-file F] [-o|--out-file F]
    pk [COMMON] vaults list
    pk [COMMON] vaults pull VAULT [NODEID]
    pk [COMMON] agent status

Set ``PK_NO_FAST_PATH=1`` to send every command to click (the parity tests compare both routes).
"""

from __future__ import annotations

import posix
import sys

from polykey.cli import hot  # every fast command runs through it (and click's route loads it too)
from polykey.cli.hot import Options

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from collections.abc import Callable

#: option -> (key, kind): "value" (last one wins), "multi" (repeatable), "flag" (no value)
_COMMON = {"--node-path": ("node_path", "value"), "--password-file": ("password_file", "value"),
           "--format": ("format", "value")}
#: option key -> its choices (the same tuples click's ``Choice`` offers)
_CHOICES = {"format": hot.FORMATS, "env_format": hot.ENV_FORMATS, "invalid": hot.ENV_INVALID,
            "duplicate": hot.ENV_DUPLICATE}
#: option key -> (file_okay, dir_okay, allow_dash) of its click.Path type
_PATHS = {
    "node_path": (False, True, False),
    "password_file": (True, False, False),
    "from_file": (True, False, False),
    "env_files": (True, False, False),
    "in_file": (True, False, True),
    "out_file": (True, False, False),
}


class _Fallback(Exception):
    """This command line is for click."""


class _Command:
    """One fast command: its own options, how many arguments, whether ``--`` passes a command."""

    __slots__ = ("options", "min_args", "max_args", "passthrough")

    def __init__(self, options: dict[str, tuple[str, str]], min_args: int, max_args: int | None,
                 passthrough: bool = False) -> None:
        self.options = {**_COMMON, **options}
        self.min_args = min_args
        self.max_args = max_args
        self.passthrough = passthrough


_COMMIT = {"--commit": ("commit", "value")}
_GET = _Command(_COMMIT, 1, 1)
_SET = _Command({"--from-file": ("from_file", "value")}, 1, 1)
_ENV = _Command({"--env-format": ("env_format", "value"), "--env-invalid": ("invalid", "value"),
                 "--env-duplicate": ("duplicate", "value")}, 1, None, passthrough=True)
COMMANDS: dict[tuple[str, ...], _Command] = {
    ("secrets", "get"): _GET,
    ("secrets", "cat"): _GET,
    ("secrets", "set"): _SET,
    ("secrets", "write"): _SET,
    ("secrets", "ls"): _Command({**_COMMIT, "-r": ("recursive", "flag"), "--recursive": ("recursive", "flag")}, 0, 1),
    ("secrets", "rm"): _Command({"-r": ("recursive", "flag"), "--recursive": ("recursive", "flag"),
                                 "-y": ("yes", "flag"), "--yes": ("yes", "flag")}, 1, None),
    ("secrets", "env"): _ENV,
    ("run",): _Command({"--env-file": ("env_files", "multi")}, 0, 0, passthrough=True),
    ("inject",): _Command({"-i": ("in_file", "value"), "--in-file": ("in_file", "value"),
                           "-o": ("out_file", "value"), "--out-file": ("out_file", "value")}, 0, 0),
    ("vaults", "list"): _Command({}, 0, 0),
    ("vaults", "pull"): _Command({}, 1, 2),
    ("agent", "status"): _Command({}, 0, 0),
}
_GROUPS = {"secrets", "vaults", "agent"}


def _options(tokens: list[str], known: dict[str, tuple[str, str]], values: dict[str, object]) -> list[str]:
    """Take the options of ``tokens`` into ``values``; the positionals are returned. _Fallback on
    anything click might treat otherwise."""
    positionals: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
            if name not in known:
                raise _Fallback
            key, kind = known[name]
            if kind == "flag":
                if eq:
                    raise _Fallback
                values[key] = True
            else:
                if not eq:
                    i += 1
                    if i >= len(tokens):
                        raise _Fallback
                    value = tokens[i]
                if not value or (key in _CHOICES and value not in _CHOICES[key]):
                    raise _Fallback
                if key in _PATHS:
                    _check_path(value, *_PATHS[key])
                if kind == "multi":
                    values.setdefault(key, [])
                    values[key].append(value)  # type: ignore[attr-defined]
                else:
                    values[key] = value
        else:
            positionals.append(token)
        i += 1
    return positionals


def _check_path(value: str, file_okay: bool, dir_okay: bool, allow_dash: bool) -> None:
    """What ``click.Path`` refuses (an existing file where a directory is wanted, a directory where
    a file is, an unreadable one) is for click to word."""
    if allow_dash and value == "-":
        return
    try:
        st = posix.stat(value)
    except (OSError, ValueError):
        return  # click accepts a path that does not exist (yet)
    kind = st.st_mode & 0o170000
    if (not file_okay and kind == 0o100000) or (not dir_okay and kind == 0o040000) or not posix.access(value, 4):
        raise _Fallback


def parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, object], list[str], list[str] | None]:
    """``(command, options, arguments, command line after --)``; _Fallback for click."""
    at = 0
    while at < len(argv) and argv[at].startswith("-") and argv[at] != "-":  # the root's options
        at += 1 if "=" in argv[at] else 2
    if at >= len(argv):
        raise _Fallback
    values: dict[str, object] = {}
    if _options(argv[:at], _COMMON, values):
        raise _Fallback
    name: tuple[str, ...] = (argv[at],)
    if argv[at] in _GROUPS:
        if at + 1 >= len(argv):
            raise _Fallback
        name = (argv[at], argv[at + 1])
    command = COMMANDS.get(name)
    if command is None:
        raise _Fallback
    rest = argv[at + len(name):]
    after: list[str] | None = None
    if command.passthrough and "--" in rest:
        cut = rest.index("--")
        rest, after = rest[:cut], rest[cut + 1:]
    positionals = _options(rest, command.options, values)
    if len(positionals) < command.min_args or (command.max_args is not None and len(positionals) > command.max_args):
        raise _Fallback
    return name, values, positionals, after


def _utf8(tokens: list[str]) -> bool:
    """False if an argument holds bytes that are not UTF-8 (decoded by Python as surrogates)."""
    try:
        for token in tokens:
            token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path(values: dict[str, object], key: str) -> str | None:
    """A path option as the click route has it: ``str(pathlib.Path(value))``."""
    value = values.get(key)
    return hot.as_path_text(value) if isinstance(value, str) else None


def _runner(name: tuple[str, ...], values: dict[str, object], args: list[str],
            after: list[str] | None) -> Callable[[Options], None]:
    """The command body for a parsed command line (_Fallback for the shapes left to click)."""
    def text(key: str) -> str | None:
        value = values.get(key)
        return value if isinstance(value, str) else None

    if name[0] == "secrets" and name[1] in ("get", "cat"):
        return lambda o: hot.secrets_get(o, args[0], text("commit"))
    if name[0] == "secrets" and name[1] in ("set", "write"):
        if "from_file" not in values and (sys.stdin is None or sys.stdin.isatty()):
            raise _Fallback  # a prompt on the terminal, or no stdin at all: click's
        return lambda o: hot.secrets_set(o, args[0], _path(values, "from_file"))
    if name == ("secrets", "ls"):
        return lambda o: hot.secrets_ls(o, args[0] if args else None, bool(values.get("recursive")), text("commit"))
    if name == ("secrets", "rm"):
        return lambda o: hot.secrets_rm(o, args, bool(values.get("recursive")), bool(values.get("yes")))
    if name == ("vaults", "list"):
        return hot.vaults_list
    if name == ("vaults", "pull"):
        from polykey.cli import hot_sync

        node = args[1] if len(args) > 1 else None
        if node is not None and not hot_sync.looks_like_node_id(node):
            raise _Fallback  # click words the error about a malformed NodeId
        return lambda o: hot_sync.vaults_pull(o, args[0], node)
    if name == ("agent", "status"):
        return hot.agent_status
    from polykey.cli import hot_env

    if name == ("secrets", "env"):
        return lambda o: hot_env.secrets_env(o, args, after, text("env_format"), text("invalid") or "error",
                                             text("duplicate") or "overwrite")
    if name == ("run",):
        env_files = values.get("env_files")
        if not isinstance(env_files, list):
            raise _Fallback  # --env-file is required: click says so
        return lambda o: hot_env.run_with_env_files(o, [hot.as_path_text(f) for f in env_files], after)
    return lambda o: hot_env.inject(o, _path(values, "in_file") or "-", _path(values, "out_file"))


def dispatch(argv: list[str]) -> int | None:
    """Run an everyday command without click and return its exit code, or ``None`` to use click."""
    from polykey.agent_client.paths import getenv

    if getenv("PK_NO_FAST_PATH"):
        return None
    if not _utf8(argv[: argv.index("--")] if "--" in argv else argv):
        return None  # click words the error (the child command's own arguments may be anything)
    try:
        name, values, args, after = parse(argv)
        body = _runner(name, values, args, after)
    except _Fallback:
        return None
    try:
        fmt = values.get("format")
        body(Options(_path(values, "node_path"), _path(values, "password_file"), fmt if isinstance(fmt, str) else None))
    except BaseException as e:  # noqa: BLE001 - mapped exactly as on the click route
        from polykey.cli.errors import run_guarded

        def again() -> None:
            raise e

        return run_guarded(again)
    return 0
