"""What `pk secrets import` reads: a .env file, a JSON object, or a directory tree (docs/cli.md).

Sans-I/O for the two file formats (bytes in, ``(path, value)`` items out); the directory reader
walks the tree itself without following links. Everything is bounded (input bytes, number of
secrets, nesting depth), and every failure is one :class:`InvalidInputError` that names the file
and the line, key or file at fault, never a value. Bad and duplicate names follow the policies of
``pk secrets env`` (``--env-invalid``, ``--env-duplicate``); anything else malformed is an error.

The .env grammar is the one ``pk secrets env --env-format dotenv`` writes, read back exactly,
plus what people write by hand (python-dotenv's):

- blank lines and ``#`` comments; an optional ``export`` before the name; ``NAME=VALUE``;
- ``'single quoted'``: literal up to the next ``'``, newlines included;
- ``"double quoted"``: newlines included; ``\\\\``, ``\\"``, ``\\'``, ``\\n``, ``\\r``, ``\\t``
  (and ``\\a \\b \\f \\v``) are escapes, any other backslash is kept;
- unquoted: up to the end of the line, surrounding blanks and a `` #comment`` removed.
- Nothing is expanded (``$NAME``, ``${NAME}`` are kept as written).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from polykey.errors import EnvNameError, InvalidInputError
from polykey.vaults.format import MAX_DEPTH, MAX_SECRET_BYTES, split_path

#: The largest input (a file, standard input, or all files of a tree together).
MAX_IMPORT_BYTES = 64 * 1024 * 1024
#: The most secrets one import may write.
MAX_IMPORT_ITEMS = 100_000
FORMATS = ("auto", "dotenv", "json", "dir")

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The common one-line forms (``NAME='v'``, ``NAME=v # c``), read exactly as the general scanner
#: below reads them, at a fraction of its cost; any other line goes to the scanner.
_SIMPLE_LINE = re.compile(
    r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*"
    r"(?:'([^'\n]*)'[ \t\r]*(?:#[^\n]*)?|([^'\"\s#][^\n]*?)?[ \t\r]*(?:[ \t]#[^\n]*)?)(?:\n|\Z)"
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v"}

#: One parsed entry: ``(secret path relative to the target directory, value, where)`` where
#: ``where`` names its origin for messages (``FILE:LINE``, ``FILE: key "a"."b"``, a file path).
Item = tuple[str, bytes, str]


def _warn(message: str) -> None:
    sys.stderr.write(f"pk: warning: {message}\n")
    sys.stderr.flush()


class Collector:
    """Applies the name policies while items arrive; all-or-nothing is the caller's (nothing is
    sent before the whole input parsed)."""

    def __init__(self, invalid: str = "error", duplicate: str = "error") -> None:
        self.invalid = invalid
        self.duplicate = duplicate
        self.items: dict[str, tuple[bytes, str]] = {}
        self.skipped = 0

    def bad_name(self, message: str, name: str) -> None:
        if self.invalid == "error":
            raise EnvNameError(message, name=name)
        if self.invalid == "warn":
            _warn(message + "; skipped")
        self.skipped += 1

    def add(self, path: str, value: bytes, where: str) -> None:
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidInputError(f"{where}: the value is larger than the {MAX_SECRET_BYTES}-byte limit for a secret")
        previous = self.items.get(path)
        if previous is not None:
            message = f"{where}: {path} is set more than once (first at {previous[1]})"
            if self.duplicate == "error":
                raise EnvNameError(message, name=path)
            if self.duplicate == "keep":
                self.skipped += 1
                return
            if self.duplicate == "warn":
                _warn(message + "; the last one wins")
            del self.items[path]  # the last one wins, in its own place
        elif len(self.items) >= MAX_IMPORT_ITEMS:
            raise InvalidInputError(f"{where}: more than {MAX_IMPORT_ITEMS:,} secrets in one import")
        self.items[path] = (value, where)

    def check_shape(self, prefix: tuple[str, ...]) -> None:
        """A path may not be both a secret and a directory of the import; the prefix depth fits."""
        dirs: dict[tuple[str, ...], str] = {}
        for path, (_v, where) in self.items.items():
            parts = tuple(path.split("/"))
            if len(prefix) + len(parts) > MAX_DEPTH:
                raise InvalidInputError(f"{where}: {path} is deeper than {MAX_DEPTH} levels below the vault root")
            for k in range(1, len(parts)):
                dirs.setdefault(parts[:k], where)
        for path, (_v, where) in self.items.items():
            if tuple(path.split("/")) in dirs:
                raise InvalidInputError(f"{where}: {path} is both a secret and a directory "
                                        f"(see {dirs[tuple(path.split('/'))]})")


def _valid_component(name: str) -> str | None:
    """Why ``name`` cannot be one path component, or None."""
    if "/" in name:
        return "it has a '/'"
    try:
        split_path(name)
    except InvalidInputError as e:
        return str(e)
    return None


# -- .env ---------------------------------------------------------------------------------


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InvalidInputError(f"{source}:{line}: not valid UTF-8") from None


def parse_dotenv(data: bytes, source: str, out: Collector) -> None:
    """Add every ``NAME=VALUE`` of a .env file to ``out``."""
    text = _decode(data, source)
    if text.startswith("\ufeff"):
        text = text[1:]
    pos, line, end = 0, 1, len(text)
    simple = _SIMPLE_LINE.match
    while pos < end:
        m = simple(text, pos)
        if m is not None:
            quoted = m.group(2)
            value = quoted if quoted is not None else (m.group(3) or "")
            out.add(m.group(1), value.encode("utf-8"), f"{source}:{line}")
            pos, line = m.end(), line + 1
            continue
        nl = text.find("\n", pos)
        stop = end if nl < 0 else nl
        raw = text[pos:stop]
        stripped = raw.strip()
        start_line = line
        if not stripped or stripped.startswith("#"):
            pos, line = stop + 1, line + 1
            continue
        off = len(raw) - len(raw.lstrip())
        export = re.match(r"export[ \t]+", raw[off:])
        if export:
            off += export.end()
        eq_at = raw.find("=", off)
        where = f"{source}:{start_line}"
        if eq_at < 0:
            raise InvalidInputError(f"{where}: expected NAME=VALUE")
        name = raw[off:eq_at].rstrip(" \t")
        value_start = pos + eq_at + 1
        value, pos, line = _dotenv_value(text, value_start, line, where)
        if not ENV_NAME.fullmatch(name):
            out.bad_name(f"{where}: {name!r} is not a valid variable name", name)
            continue
        out.add(name, value.encode("utf-8"), where)


def _dotenv_value(text: str, pos: int, line: int, where: str) -> tuple[str, int, int]:
    """``(value, position after its line, next line number)`` for the value starting at ``pos``."""
    end = len(text)
    start = pos
    while pos < end and text[pos] in " \t":
        pos += 1
    quote = text[pos] if pos < end and text[pos] in "'\"" else None
    if quote is None:
        nl = text.find("\n", pos)
        stop = end if nl < 0 else nl
        value = text[pos:stop]
        comment = re.search(r"[ \t]#", value)
        if comment:
            value = value[: comment.start()]
        if value.startswith("#") and pos > start:  # `NAME= #comment`
            value = ""
        return value.strip(" \t\r"), stop + 1, line + 1
    out: list[str] = []
    i = pos + 1
    while True:
        if i >= end:
            raise InvalidInputError(f"{where}: the {quote}quoted{quote} value is not closed")
        c = text[i]
        if c == quote:
            break
        if c == "\n":
            line += 1
        if quote == '"' and c == "\\" and i + 1 < end:
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
        out.append(c)
        i += 1
    tail_end = text.find("\n", i + 1)
    tail_stop = end if tail_end < 0 else tail_end
    tail = text[i + 1 : tail_stop].strip(" \t\r")
    if tail and not tail.startswith("#"):
        raise InvalidInputError(f"{where}: unexpected text after the closing quote")
    return "".join(out), tail_stop + 1, line + 1


# -- JSON ---------------------------------------------------------------------------------


def parse_json(data: bytes, source: str, out: Collector) -> None:
    """Add a JSON object's entries to ``out``: nested objects are directories, keys with ``/`` paths."""
    text = _decode(data, source)

    try:
        doc = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{source}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise InvalidInputError(f"{source}: nested too deeply") from None
    except ValueError as e:
        raise InvalidInputError(f"{source}: {e}") from None
    if not isinstance(doc, _Pairs):
        raise InvalidInputError(f"{source}: expected a JSON object of names to values")
    _json_object(doc, (), source, out)


class _Pairs(list[tuple[str, object]]):
    """A JSON object as its ``(key, value)`` pairs: duplicates kept, in order (the duplicate policy
    decides), and told apart from a JSON array."""


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _json_object(pairs: _Pairs, prefix: tuple[str, ...], source: str, out: Collector) -> None:
    if len(prefix) >= MAX_DEPTH:
        raise InvalidInputError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    for key, value in pairs:
        where = f"{source}: key {'.'.join(json.dumps(p, ensure_ascii=False) for p in prefix + (key,))}"
        try:
            parts = split_path(key)
        except InvalidInputError as e:
            out.bad_name(f"{where}: not a valid secret name ({e})", key)
            continue
        path = prefix + parts
        if isinstance(value, _Pairs):
            _json_object(value, path, source, out)
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)):
            text = json.dumps(value)
        else:
            raise InvalidInputError(f"{where}: a value must be a string, number, boolean or object")
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{where}: the value is not valid UTF-8 text") from None
        out.add("/".join(path), encoded, where)


# -- directory trees --------------------------------------------------------------------------


def read_tree(root: Path, out: Collector, progress: Callable[[int], None] | None = None) -> None:
    """Add every regular file under ``root`` (its relative path, its bytes). Links and special files
    are errors; nothing is followed outside ``root``."""
    total = 0
    for rel, full, st in _walk(root, ()):
        where = str(full)
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file or directory"
            raise InvalidInputError(f"{where}: {kind}; only regular files and directories are imported")
        bad = next((why for why in map(_valid_component, rel) if why), None)
        if bad is not None:
            out.bad_name(f"{where}: not a valid secret name ({bad})", "/".join(rel))
            continue
        total += st.st_size
        if total > MAX_IMPORT_BYTES:
            raise InvalidInputError(f"{root}: the files hold more than the {MAX_IMPORT_BYTES // (1 << 20)} MiB import limit")
        if st.st_size > MAX_SECRET_BYTES:
            raise InvalidInputError(f"{where}: larger than the {MAX_SECRET_BYTES}-byte limit for a secret")
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise InvalidInputError(f"{where}: cannot read ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidInputError(f"{where}: changed while it was read")
            value = f.read(MAX_SECRET_BYTES + 1)
        out.add("/".join(rel), value, where)
        if progress is not None:
            progress(len(out.items))


def _walk(directory: Path, rel: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Path, os.stat_result]]:
    if len(rel) >= MAX_DEPTH:
        raise InvalidInputError(f"{directory}: nested deeper than {MAX_DEPTH} levels")
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise InvalidInputError(f"{directory}: cannot read ({e.strerror})") from None
    for entry in entries:
        try:
            name = os.fsdecode(entry.name)
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(entry.name).decode("utf-8", "backslashreplace")
            raise InvalidInputError(f"{directory / shown}: the file name is not valid UTF-8") from None
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            bad = _valid_component(name)
            if bad is not None:
                raise InvalidInputError(f"{entry.path}: not a valid directory name ({bad})")
            yield from _walk(Path(entry.path), rel + (name,))
        else:
            yield rel + (name,), Path(entry.path), st


# -- files and formats ------------------------------------------------------------------------


def read_limited(stream: object, what: str) -> bytes:
    """All of ``stream`` (a binary file), InvalidInputError beyond :data:`MAX_IMPORT_BYTES`."""
    data: bytes = stream.read(MAX_IMPORT_BYTES + 1)  # type: ignore[attr-defined]
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidInputError(f"{what} is larger than the {MAX_IMPORT_BYTES // (1 << 20)} MiB import limit")
    return data


def guess_format(name: str, data: bytes) -> str:
    """``json`` for a ``.json`` name or input starting with ``{``, else ``dotenv``."""
    if name.endswith(".json") or data.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"{"):
        return "json"
    return "dotenv"
