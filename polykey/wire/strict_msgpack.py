"""Bounded, strict msgpack decoding for every msgpack the node takes from outside (sans-I/O).

Transport messages (docs/spec/transport.md section 5) and DHT datagrams (docs/spec/discovery.md
section 4) both decode through :func:`unpack`: no extension types, string map keys only, valid
UTF-8, every string and byte string within the input, at most ``max_containers`` arrays and maps
(counted while decoding, so a message of a million empty arrays is refused before it is built)
and at most ``max_depth`` levels of nesting. Any failure is raised as ``error(reason)``, the
caller's own error type; never msgpack's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from polykey.errors import PolykeyError

ErrorFactory = Callable[[str], PolykeyError]


class _Count:
    """The list and map hooks of one decode: count containers, refuse past the limit."""

    __slots__ = ("left", "error")

    def __init__(self, limit: int, error: ErrorFactory) -> None:
        self.left = limit
        self.error = error

    def container(self, value: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise self.error("too many arrays and maps")
        return value


def _depth_ok(value: Any, depth: int, max_depth: int) -> bool:
    if isinstance(value, list):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return True
    if depth >= max_depth:
        return False
    return all(_depth_ok(item, depth + 1, max_depth) for item in items)


def unpack(
    data: bytes | bytearray,
    *,
    error: ErrorFactory,
    max_depth: int,
    max_containers: int,
    max_array_len: int | None = None,
    max_map_len: int | None = None,
) -> Any:
    """Decode exactly one msgpack value from ``data`` within the bounds (module docstring)."""
    count = _Count(max_containers, error)

    def no_ext(code: int, payload: bytes) -> Any:
        raise error("msgpack extension types are not allowed")

    size = len(data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            timestamp=0,
            ext_hook=no_ext,
            list_hook=count.container,
            object_hook=count.container,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size if max_array_len is None else max_array_len,
            max_map_len=size // 2 if max_map_len is None else max_map_len,
            max_ext_len=0,
        )
    except PolykeyError:
        raise
    except Exception:  # msgpack raises ValueError, ExtraData, StackError, FormatError, ...
        raise error("not a single valid msgpack value") from None
    if not _depth_ok(obj, 0, max_depth):
        raise error(f"nested too deeply (more than {max_depth} levels)")
    return obj
