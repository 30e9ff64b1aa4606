"""Secrets for programs, without click: ``pk secrets env``, ``pk run``, ``pk inject`` (docs/automation.md).

Shared by the click commands (:mod:`polykey.cli.automation`) and the fast dispatcher
(:mod:`polykey.cli.fast`), like :mod:`polykey.cli.hot`. No ``re`` here: names, references and
templates are scanned by hand, with exactly the rules of the patterns documented beside them.
"""

from __future__ import annotations

import sys

from polykey.agent_client import LazyError, is_error, parse_reference, split_secret_path
from polykey.agent_client.strict_json import dumps
from polykey.cli.hot import Options, print_json, value_json

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from typing import Any

    from polykey.errors import CommandNotFoundError, EnvNameError, InvalidInputError
else:
    CommandNotFoundError = LazyError("CommandNotFoundError")
    EnvNameError = LazyError("EnvNameError")
    InvalidInputError = LazyError("InvalidInputError")

TEMPLATE_LIMIT = 16 * 1024 * 1024
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def is_env_name(name: str) -> bool:
    """``[A-Za-z_][A-Za-z0-9_]*``, the whole string."""
    return bool(name) and name[0] in _NAME_START and all(c in _NAME_CHARS for c in name)


def _warn(message: str) -> None:
    sys.stderr.write(f"pk: warning: {message}\n")
    sys.stderr.flush()


# -- pk secrets env --------------------------------------------------------------------


def parse_env_target(text: str) -> tuple[str, str, str | None]:
    """``vault:path[=NAME]`` or ``vault[:dir]`` -> ``(vault, path, NAME or None)``."""
    spec, name = text, None
    if "=" in text:
        spec, _, name = text.rpartition("=")
        if not name:
            raise InvalidInputError(f"{text!r}: the variable name after '=' is empty")
    vault, path = split_secret_path(spec, need_path=False)
    return vault, path, name


def collect_env(
    opts: Options, targets: list[str], invalid: str = "error", duplicate: str = "overwrite"
) -> dict[str, bytes]:
    """The variables ``targets`` name, resolved through the agent, after the name policies."""
    if not targets:
        raise InvalidInputError("name at least one VAULT:PATH[=NAME] or VAULT[:DIR]")
    parsed = [parse_env_target(t) for t in targets]
    with opts.session() as s:
        try:
            resolved = s.call("secrets.resolve", {"refs": [{"vault": v, "path": p} for v, p, _ in parsed]})
        except Exception as e:
            if not is_error(e, "PolykeyError"):
                raise
            # The agent says which ref failed (data "ref"); with one target it can only be that one.
            at = e.data.get("ref", 0 if len(parsed) == 1 and is_error(e, "VaultError") else None)  # type: ignore[attr-defined]
            if isinstance(at, int) and not isinstance(at, bool) and 0 <= at < len(parsed):
                vault, path, _ = parsed[at]
                raise e.within(f"{vault}:{path}" if path else vault) from None  # type: ignore[attr-defined]
            raise
    env: dict[str, bytes] = {}
    for (vault, path, name), ref in zip(parsed, resolved):
        items: list[dict[str, Any]] = ref["secrets"]
        if name is not None and not (len(items) == 1 and items[0]["path"].strip("/") == path.strip("/")):
            raise InvalidInputError(f"{vault}:{path} is a directory; '=NAME' names a single secret")
        for item in items:
            var = name if name is not None else item["path"].rstrip("/").rsplit("/", 1)[-1]
            where = f"{vault}:{item['path']}"
            if not is_env_name(var):
                message = f"{where}: {var!r} is not a valid environment variable name (rename it with =NAME)"
                if invalid == "error":
                    raise EnvNameError(message, name=var)
                if invalid == "warn":
                    _warn(message + "; skipped")
                continue
            if var in env:
                message = f"{where}: {var} is set more than once"
                if duplicate == "error":
                    raise EnvNameError(message, name=var)
                if duplicate == "keep":
                    continue
                if duplicate == "warn":
                    _warn(message + "; the last one wins")
            env[var] = item["value"]
    return env


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


#: Why a value has no dotenv form (docs/automation.md "Output formats"); never names the value.
DOTENV_UNSAFE = (
    "this value cannot be written as dotenv that both sh and python-dotenv read back exactly (it holds "
    "a carriage return or '${', ends in a backslash, or holds a single quote or two backslashes in a row "
    "together with a '$', a backtick, or a backslash or double quote right after a non-ASCII character); "
    "use --env-format unix or json, or run the command after --"
)


def _escape_after_non_ascii(value: str) -> bool:
    """A ``\\`` or ``"`` right after a non-ASCII character (the pattern ``[^\\x00-\\x7f][\\\\"]``):
    in double quotes its escaping backslash would follow a byte >= 0x80, which bash in a Big5,
    GBK, GB18030 or Shift_JIS locale reads as the lead byte of a two-byte character whose second
    byte is that backslash, so the next ``"`` would end the string and the rest of the value
    would run as commands."""
    return any(c in '\\"' and value[i - 1] > "\x7f" for i, c in enumerate(value) if i)


def _dotenv_quote(name: str, value: str) -> str:
    """A dotenv value that ``sh`` (``set -a; . FILE``) and python-dotenv both read back as ``value``.

    Single quotes when they can carry it: literal in sh; python-dotenv reads them literally too
    except ``\\\\`` and ``\\'`` (and expands ``${NAME}``). Otherwise double quotes with ``\\`` and
    ``"`` escaped, which both read the same way, if there is no ``$`` or backtick (sh expands them
    there, python-dotenv would keep a backslash before them). A carriage return does not survive
    python-dotenv's universal-newline file reading, and a final backslash would escape the closing
    quote for older python-dotenv releases. Every backslash written follows an ASCII byte, which
    no legacy multibyte charset takes as the start of a character (see _escape_after_non_ascii).
    Anything else is an error, never an unsafe line.
    """
    if "\r" not in value and "${" not in value and not value.endswith("\\"):
        if "'" not in value and "\\\\" not in value:
            return "'" + value + "'"
        if "$" not in value and "`" not in value and not _escape_after_non_ascii(value):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise InvalidInputError(f"{name}: {DOTENV_UNSAFE}")


def _text_values(env: dict[str, bytes]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{name}: the value is not UTF-8 text and cannot be printed; run a command with it instead") from None
    return out


def format_env(env: dict[str, bytes], env_format: str) -> str:
    if env_format == "json":
        return dumps(_text_values(env)) + "\n"
    for name, value in env.items():
        if b"\0" in value:
            raise InvalidInputError(f"{name}: the value contains a NUL byte and cannot be an environment variable")
    text = _text_values(env)
    if env_format == "dotenv":
        return "".join(f"{k}={_dotenv_quote(k, v)}\n" for k, v in text.items())
    return "".join(f"export {k}={_sh_quote(v)}\n" for k, v in text.items())


def exec_with_env(command: list[str] | None, env: dict[str, bytes]) -> None:
    """Replace this process by ``command`` with ``env`` added: the exit code and signals are the command's.

    The node password (``PK_PASSWORD``) is not passed on: the command gets the secrets it was
    given, not the key to every secret of the node.
    """
    if not command:
        raise InvalidInputError("no command given after --")
    import os

    merged = dict(os.environb)
    merged.pop(b"PK_PASSWORD", None)
    for name, value in env.items():
        if b"\0" in value:
            raise InvalidInputError(f"{name}: the value contains a NUL byte and cannot be an environment variable")
        merged[name.encode("utf-8")] = value
    sys.stdout.flush()
    sys.stderr.flush()
    import _signal  # type: ignore[import-not-found]  # not signal.py, which builds its enums

    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: give
    # the command the defaults a shell would (as subprocess's restore_signals does), so that
    # e.g. `yes | head -1` in it ends quietly by SIGPIPE.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    try:
        os.execvpe(command[0], command, merged)
    except FileNotFoundError:
        raise CommandNotFoundError(f"command not found: {command[0]}") from None
    except PermissionError:
        raise CommandNotFoundError(f"command not executable: {command[0]}") from None
    except OSError as e:
        raise CommandNotFoundError(f"cannot run {command[0]}: {e.strerror}") from None


def secrets_env(
    opts: Options,
    targets: list[str],
    command: list[str] | None,
    env_format: str | None = None,
    invalid: str = "error",
    duplicate: str = "overwrite",
) -> None:
    env = collect_env(opts, targets, invalid, duplicate)
    if command is not None:
        exec_with_env(command, env)
        return
    chosen = env_format or ("json" if opts.json else "unix")
    sys.stdout.write(format_env(env, chosen))
    sys.stdout.flush()


# -- references: pk://VAULT/PATH (parsed by polykey.agent_client.parse_reference) ------------


def resolve_references(opts: Options, refs: dict[tuple[str, str], str]) -> dict[tuple[str, str], bytes]:
    """The value of each ``(vault, path)``; ``refs`` maps each to where it was first written
    (``FILE line N``), which an error about it names with the reference."""
    values: dict[tuple[str, str], bytes] = {}
    if not refs:
        return values
    with opts.session() as session:
        for (vault, path), where in refs.items():
            try:
                values[(vault, path)] = session.call("secrets.get", {"vault": vault, "path": path})
            except Exception as e:
                if not is_error(e, "VaultError"):
                    raise
                raise e.within(f"{where}: pk://{vault}/{path}") from None  # type: ignore[attr-defined]
    return values


# -- pk run --env-file ----------------------------------------------------------------------


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
        if not is_env_name(var):
            # not the text itself: a mistyped line may be a literal value, a secret
            raise EnvNameError(f"{where}: the text before '=' is not a valid environment variable name")
        value = _unquote(value.strip())
        entries.append((var, parse_reference(value, where) if value.startswith("pk://") else value, where))
    return entries


def parse_env_file(text: str, name: str) -> list[tuple[str, str | tuple[str, str]]]:
    """:func:`env_file_entries` without the line of each entry."""
    return [(var, value) for var, value, _ in env_file_entries(text, name)]


def _read_file(path: str) -> bytes:
    """At most TEMPLATE_LIMIT bytes of ``path`` (``polykey.fsutil.read_limited``, which loads pathlib)."""
    with open(path, "rb") as f:
        data: bytes = f.read(TEMPLATE_LIMIT + 1)
    if len(data) > TEMPLATE_LIMIT:
        raise ValueError(f"{path} is larger than {TEMPLATE_LIMIT} bytes")
    return data


def run_with_env_files(opts: Options, env_files: list[str], command: list[str] | None) -> None:
    if not command:
        raise InvalidInputError("give the command to run after --")
    entries: list[tuple[str, str | tuple[str, str], str]] = []
    for path in env_files:
        try:
            text = _read_file(path).decode("utf-8")
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read env file {path}: {getattr(e, 'strerror', None) or e}") from None
        entries.extend(env_file_entries(text, path))
    refs: dict[tuple[str, str], str] = {}
    for _, value, where in entries:
        if isinstance(value, tuple):
            refs.setdefault(value, where)
    values = resolve_references(opts, refs)
    env: dict[str, bytes] = {}
    for var, value, _ in entries:
        env[var] = values[value] if isinstance(value, tuple) else value.encode("utf-8")
    exec_with_env(command, env)


# -- pk inject --------------------------------------------------------------------------------


def template_references(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, reference)`` of every ``{{ pk://... }}`` in ``text``, left to right.

    Exactly what ``re.finditer(r"\\{\\{\\s*(pk://[^\\s{}]*)\\s*\\}\\}", text)`` finds: at each
    ``{{`` (trying the next position when one fails), optional whitespace, ``pk://`` and
    characters that are neither whitespace nor braces, optional whitespace, ``}}``."""
    found = []
    n = len(text)
    i = text.find("{{")
    while i >= 0:
        j = i + 2
        while j < n and text[j].isspace():
            j += 1
        if text.startswith("pk://", j):
            k = j + 5
            while k < n and not (text[k].isspace() or text[k] in "{}"):
                k += 1
            end = k
            while end < n and text[end].isspace():
                end += 1
            if text.startswith("}}", end):
                found.append((i, end + 2, text[j:k]))
                i = text.find("{{", end + 2)
                continue
        i = text.find("{{", i + 1)
    return found


def inject(opts: Options, in_file: str, out_file: str | None) -> None:
    if in_file == "-":
        template = sys.stdin.buffer.read(TEMPLATE_LIMIT + 1)
        name = "stdin"
    else:
        try:
            template = _read_file(in_file)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read template {in_file}: {getattr(e, 'strerror', None) or e}") from None
        name = in_file
    if len(template) > TEMPLATE_LIMIT:
        raise InvalidInputError(f"template {name} is larger than {TEMPLATE_LIMIT} bytes")
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"template {name} is not UTF-8 text") from None
    found = template_references(text)
    refs: list[tuple[str, str]] = []
    first: dict[tuple[str, str], str] = {}
    for start, _, written in found:
        where = f"{name} line {text.count(chr(10), 0, start) + 1}"
        refs.append(parse_reference(written, where))
        first.setdefault(refs[-1], where)
    values = resolve_references(opts, first)
    out = bytearray()
    pos = 0
    for (start, end, _), key in zip(found, refs):
        out += text[pos:start].encode("utf-8") + values[key]
        pos = end
    out += text[pos:].encode("utf-8")
    if out_file is None and opts.json:  # one JSON object, as every command (docs/cli.md "Output formats")
        print_json({"references": len(refs), **value_json(bytes(out))})
        return
    if out_file is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(out))
        sys.stdout.buffer.flush()
        return
    from pathlib import Path

    from polykey import fsutil

    fsutil.atomic_write(Path(out_file), bytes(out), mode=0o600)
    if opts.json:
        print_json({"file": out_file, "references": len(refs)})
    else:
        sys.stderr.write(f"Wrote {out_file} ({len(refs)} secret(s), mode 0600).\n")
        sys.stderr.flush()
