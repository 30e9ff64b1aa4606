"""Strict, bounded JSON for every JSON the node takes from outside (standard library only).

The agent protocol (docs/spec/agent-protocol.md section 2) and the node-local state files
decode through :func:`loads`: UTF-8, no ``NaN``/``Infinity`` and no number beyond a float's
range, no duplicate keys, no lone UTF-16 surrogate, at most ``max_depth`` levels of arrays and
objects. Depth is checked on the raw bytes before anything is built, so neither
``json.loads`` nor a walk over what it returns ever meets a thousand levels. Any failure is
raised as ``error(reason)``, the caller's own error type. Standard library only and cheap to
import: the ``pk`` fast path loads it (through :mod:`polykey.agent_client.protocol`). So its JSON is
the C accelerator ``_json`` that the ``json`` package is built on, driven directly (:func:`dumps`,
:func:`parse`: exactly what ``json.dumps``/``json.loads`` give), because ``import json`` pulls
in ``re`` (``json.decoder`` compiles patterns) and ``enum``; ``re`` is imported only for a body
that escapes a UTF-16 code unit; ``typing`` is for the type checker only.
"""

from __future__ import annotations

import itertools

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from re import Pattern
    from typing import Any, TypeAlias

    ErrorFactory: TypeAlias = Callable[[str], Exception]

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_STEP = [0] * 256
_STEP[ord("[")] = 1
_STEP[ord("]")] = -1
_LONE_SURROGATE: list[Pattern[bytes]] = []  # compiled on first use


def _lone_surrogate() -> Pattern[bytes]:
    if not _LONE_SURROGATE:
        import re

        _LONE_SURROGATE.append(re.compile(
            rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
            rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
        ))
    return _LONE_SURROGATE[0]


def check_raw(body: bytes | bytearray, max_depth: int, error: ErrorFactory) -> None:
    """Refuse, before parsing, JSON nested deeper than ``max_depth`` or escaping a lone surrogate.

    Exact for valid JSON and linear in its size: escaped backslashes and quotes are blanked,
    strings cut out at the remaining quotes, and the brackets outside them counted. A body with
    no more brackets than ``max_depth`` (nearly all of them) is not scanned at all.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth and b"\\u" not in body:
        return
    # two placeholder bytes for each escape, so no escape sequence is formed or joined by the cut
    text = body.replace(b"\\\\", b"__").replace(b'\\"', b"__") if b"\\" in body else body
    if b"\\u" in text and _lone_surrogate().search(text):
        raise error("JSON string holds a lone surrogate")
    marks = b"".join(text.split(b'"')[::2]).translate(_ONE_KIND, _NOT_BRACKETS)
    if len(marks) <= max_depth:
        return
    if b"[" * (max_depth + 1) in marks or max(itertools.accumulate(map(_STEP.__getitem__, marks))) > max_depth:
        raise error(f"JSON nested deeper than {max_depth} levels")


def loads(body: bytes | bytearray, *, max_depth: int, error: ErrorFactory, what: str = "input") -> Any:
    """One strict JSON value from UTF-8 ``body`` (module docstring); ``error(reason)`` otherwise."""

    def no_constant(name: str) -> Any:
        raise error(f"JSON constant {name} is not allowed")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise error("duplicate key in JSON object")
        return obj

    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise error("JSON number out of range")
        return value

    check_raw(body, max_depth, error)
    try:
        return parse(body.decode("utf-8"), parse_constant=no_constant, parse_float=finite,
                     object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error(f"{what} is not valid UTF-8 JSON") from None


# -- JSON without the json package ------------------------------------------------------

try:
    from _json import encode_basestring as _c_str
    from _json import encode_basestring_ascii as _c_ascii
    from _json import make_encoder as _c_encoder
    from _json import make_scanner as _c_scanner

    _ACCELERATED = True
except ImportError:  # an interpreter without the accelerator: the json package, at its usual cost
    _ACCELERATED = False

_JSON_SPACE = " \t\n\r"


def _not_serialisable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(
    obj: Any,
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    separators: tuple[str, str] = (", ", ": "),
    allow_nan: bool = True,
) -> str:
    """``json.dumps(obj, ...)`` with these options, character for character, without ``json``."""
    if not _ACCELERATED:
        import json

        return json.dumps(obj, sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=separators,
                          allow_nan=allow_nan)
    encode = _c_encoder({}, _not_serialisable, _c_ascii if ensure_ascii else _c_str, None, separators[1],
                        separators[0], sort_keys, False, allow_nan)
    return "".join(encode(obj, 0))


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads (those of a ``json.JSONDecoder``)."""

    strict = True
    object_hook = None
    parse_int = int

    def __init__(self, pairs: Callable[[list[tuple[str, Any]]], Any] | None, constant: Callable[[str], Any],
                 number: Callable[[str], Any]) -> None:
        self.object_pairs_hook = pairs
        self.parse_constant = constant
        self.parse_float = number


def parse(
    text: str,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_constant: Callable[[str], Any] | None = None,
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """``json.loads(text, ...)`` for a ``str``, without importing ``json`` unless ``text`` is
    malformed; ValueError (or RecursionError) on anything json.loads rejects."""
    if not _ACCELERATED:
        import json

        return json.loads(text, object_pairs_hook=object_pairs_hook, parse_constant=parse_constant,
                          parse_float=parse_float)
    scan = _c_scanner(_ScanContext(object_pairs_hook, parse_constant or float, parse_float or float))  # type: ignore[arg-type]
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        obj, end = scan(text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    if text[end:].strip(_JSON_SPACE):
        raise ValueError("Extra data")
    return obj
