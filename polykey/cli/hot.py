"""The hot machine commands, without click: ``pk secrets get`` and ``pk secrets env``.

Both routes into ``pk`` run these same functions: the click commands
(``polykey.cli.secrets``, ``polykey.cli.automation``) after click parsed the
arguments, and the fast dispatcher (``polykey.cli.fast``) which parses them
itself and never imports click. Only the standard library and ``polykey.agent``
are imported here (docs/performance.md "Fast path").
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from polykey.agent.paths import default_node_path
from polykey.agent.session import Session
from polykey.errors import CommandNotFoundError, EnvNameError, InvalidInputError, PolykeyError, VaultError

ENV_FORMATS = ("unix", "json", "dotenv")
ENV_INVALID = ("error", "warn", "ignore")
ENV_DUPLICATE = ("keep", "overwrite", "warn", "error")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def as_path_text(text: str) -> str:
    """``str(pathlib.PurePosixPath(text))`` without importing pathlib (the click route prints paths
    after click made them ``Path`` objects; the fast path must print them the same)."""
    if not text:
        return "."
    lead = "//" if text.startswith("//") and not text.startswith("///") else "/" if text.startswith("/") else ""
    parts = [p for p in text.split("/") if p and p != "."]
    return (lead + "/".join(parts)) or "."


class Options:
    """The common options (docs/cli.md): node path, password file, output format."""

    __slots__ = ("node_path", "password_file", "format")

    def __init__(self, node_path: str | None, password_file: str | None, fmt: str | None) -> None:
        self.node_path = as_path_text(str(node_path) if node_path else default_node_path())
        self.password_file = as_path_text(str(password_file)) if password_file is not None else None
        fmt = fmt or os.environ.get("PK_FORMAT") or "human"
        if fmt not in ("human", "json"):
            raise InvalidInputError("PK_FORMAT must be 'human' or 'json'")
        self.format = fmt

    @property
    def json(self) -> bool:
        return self.format == "json"

    def session(self) -> Session:
        if self.password_file is None:
            return Session(self.node_path)  # the password source is built only if needed
        from polykey.agent.passwords import PasswordSource

        return Session(self.node_path, PasswordSource(self.password_file))


def split_secret_path(text: str, *, need_path: bool = True) -> tuple[str, str]:
    """``VAULT:PATH`` -> ``(vault, path)`` (the same rule as ``polykey.cli.vaults``)."""
    vault, sep, path = text.partition(":")
    if not vault:
        raise InvalidInputError(f"{text!r} must be written VAULT:PATH")
    if not sep or not path.strip("/"):
        if need_path:
            raise InvalidInputError(f"{text!r} must be written VAULT:PATH (e.g. myvault:db/password)")
        path = ""
    return vault, path


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
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


# -- pk secrets get ----------------------------------------------------------------------


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
        _print_json({"path": path.strip("/"), **value_json(value)})
    else:
        write_value(value)


# -- pk vaults list, pk secrets ls ----------------------------------------------------


def _hint(message: str) -> None:
    """What there is and what to do next, on stderr (stdout stays the listing, empty here)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def show_vaults(opts: Options, rows: list[dict[str, Any]]) -> None:
    """``pk vaults list`` (and ``pk secrets ls`` without a vault): name, VaultId, role, and
    ``DAMAGED: reason`` after a vault whose repository cannot be read."""
    if opts.json:
        _print_json(rows)
    elif not rows:
        _hint("No vaults yet: pk vaults create NAME")
    else:
        def line(r: dict[str, Any]) -> str:
            damaged = f"\tDAMAGED: {r.get('reason')}" if r.get("state") == "damaged" else ""
            return f"{r['name']}\t{r['vaultId']}\t{r['role'] or '-'}{damaged}\n"

        sys.stdout.write("".join(line(r) for r in rows))
        sys.stdout.flush()


def show_secrets(opts: Options, vault: str, path: str, commit: str | None, rows: list[dict[str, Any]]) -> None:
    """``pk secrets ls VAULT[:DIR]``: entries relative to DIR, directories ending with '/'."""
    if opts.json:
        _print_json(rows)
        return
    base = path.strip("/")
    if not rows:
        where = f"{vault}:{base}/" if base else f"Vault {vault}"
        if commit is not None:
            _hint(f"{where} was empty at commit {commit}")
        else:
            _hint(f"{where} is empty: add a secret with pk secrets set {vault}:{base + '/' if base else ''}NAME")
        return

    def shown(r: dict[str, Any]) -> str:
        full = str(r["path"])
        name = full[len(base) + 1 :] if base and full.startswith(base + "/") else full
        return name + ("/" if r["type"] == "dir" else "")

    sys.stdout.write("".join(shown(r) + "\n" for r in rows))
    sys.stdout.flush()


# -- pk secrets env --------------------------------------------------------------------


def _warn(message: str) -> None:
    sys.stderr.write(f"pk: warning: {message}\n")
    sys.stderr.flush()


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
        except PolykeyError as e:
            # The agent says which ref failed (data "ref"); with one target it can only be that one.
            at = e.data.get("ref", 0 if len(parsed) == 1 and isinstance(e, VaultError) else None)
            if isinstance(at, int) and not isinstance(at, bool) and 0 <= at < len(parsed):
                vault, path, _ = parsed[at]
                raise e.within(f"{vault}:{path}" if path else vault) from None
            raise
    env: dict[str, bytes] = {}
    for (vault, path, name), ref in zip(parsed, resolved):
        items: list[dict[str, Any]] = ref["secrets"]
        if name is not None and not (len(items) == 1 and items[0]["path"].strip("/") == path.strip("/")):
            raise InvalidInputError(f"{vault}:{path} is a directory; '=NAME' names a single secret")
        for item in items:
            var = name if name is not None else item["path"].rstrip("/").rsplit("/", 1)[-1]
            where = f"{vault}:{item['path']}"
            if not _ENV_NAME.fullmatch(var):
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
#: A ``\\`` or ``"`` right after a non-ASCII character: in double quotes its escaping backslash
#: would follow a byte >= 0x80, which bash in a Big5, GBK, GB18030 or Shift_JIS locale reads as the
#: lead byte of a two-byte character whose second byte is that backslash, so the next ``"``
#: would end the string and the rest of the value would run as commands.
_ESCAPE_AFTER_NON_ASCII = re.compile(r'[^\x00-\x7f][\\"]')


def _dotenv_quote(name: str, value: str) -> str:
    """A dotenv value that ``sh`` (``set -a; . FILE``) and python-dotenv both read back as ``value``.

    Single quotes when they can carry it: literal in sh; python-dotenv reads them literally too
    except ``\\\\`` and ``\\'`` (and expands ``${NAME}``). Otherwise double quotes with ``\\`` and
    ``"`` escaped, which both read the same way, if there is no ``$`` or backtick (sh expands them
    there, python-dotenv would keep a backslash before them). A carriage return does not survive
    python-dotenv's universal-newline file reading, and a final backslash would escape the closing
    quote for older python-dotenv releases. Every backslash written follows an ASCII byte, which
    no legacy multibyte charset takes as the start of a character (see _ESCAPE_AFTER_NON_ASCII).
    Anything else is an error, never an unsafe line.
    """
    if "\r" not in value and "${" not in value and not value.endswith("\\"):
        if "'" not in value and "\\\\" not in value:
            return "'" + value + "'"
        if "$" not in value and "`" not in value and not _ESCAPE_AFTER_NON_ASCII.search(value):
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
        return json.dumps(_text_values(env)) + "\n"
    for name, value in env.items():
        if b"\0" in value:
            raise InvalidInputError(f"{name}: the value contains a NUL byte and cannot be an environment variable")
    text = _text_values(env)
    if env_format == "dotenv":
        return "".join(f"{k}={_dotenv_quote(k, v)}\n" for k, v in text.items())
    return "".join(f"export {k}={_sh_quote(v)}\n" for k, v in text.items())


def exec_with_env(command: list[str], env: dict[str, bytes]) -> None:
    """Replace this process by ``command`` with ``env`` added: the exit code and signals are the command's.

    The node password (``PK_PASSWORD``) is not passed on: the command gets the secrets it was
    given, not the key to every secret of the node.
    """
    if not command:
        raise InvalidInputError("no command given after --")
    merged = dict(os.environb)
    merged.pop(b"PK_PASSWORD", None)
    for name, value in env.items():
        if b"\0" in value:
            raise InvalidInputError(f"{name}: the value contains a NUL byte and cannot be an environment variable")
        merged[name.encode("utf-8")] = value
    sys.stdout.flush()
    sys.stderr.flush()
    import signal

    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: give
    # the command the defaults a shell would (as subprocess's restore_signals does), so that
    # e.g. `yes | head -1` in it ends quietly by SIGPIPE.
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
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
