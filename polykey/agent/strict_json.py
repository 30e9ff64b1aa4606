"""Strict, bounded JSON for every JSON the node takes from outside (standard library only).

The agent protocol (docs/spec/agent-protocol.md section 2) and the node-local state files
decode through :func:`loads`: UTF-8, no ``NaN``/``Infinity`` and no number beyond a float's
range, no duplicate keys, no lone UTF-16 surrogate, at most ``max_depth`` levels of arrays and
objects. Depth is checked on the raw bytes before anything is built, so neither
``json.loads`` nor a walk over what it returns ever meets a thousand levels. Any failure is
raised as ``error(reason)``, the caller's own error type. Standard library only and cheap to
import: the ``pk`` fast path loads it (through :mod:`polykey.agent.protocol`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

ErrorFactory = Callable[[str], Exception]

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_STEP = [0] * 256
_STEP[ord("[")] = 1
_STEP[ord("]")] = -1
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


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
    if b"\\u" in text and _LONE_SURROGATE.search(text):
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
        return json.loads(body.decode("utf-8"), parse_constant=no_constant, parse_float=finite,
                          object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error(f"{what} is not valid UTF-8 JSON") from None
