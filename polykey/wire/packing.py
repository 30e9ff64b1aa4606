"""Canonical msgpack in parts, so that large ``bytes`` values are referenced, not copied.

The transport's messages (docs/spec/transport.md section 5) are ``msgpack.packb(value,
use_bin_type=True)``. For a message carrying a large blob (a vault pack, say), building that
one byte string copies the blob, and checking on receipt that the encoding was canonical
(re-encoding what was decoded) copies it again. :func:`pack_parts` gives the same bytes as a
list of parts whose concatenation *is* ``packb(value)``, in which every ``bytes`` value of at
least :data:`BIG` bytes is a part of its own, the very object in ``value``; :func:`matches`
compares such a list with received bytes without building the whole.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: ``bytes`` values at least this long become parts of their own
BIG = 32 * 1024


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _container_header(n: int, fix: int, code16: int) -> bytes:
    """msgpack's shortest array (fix 0x90, 0xdc) or map (fix 0x80, 0xde) header."""
    if n < 16:
        return bytes([fix | n])
    if n < 1 << 16:
        return bytes([code16]) + n.to_bytes(2, "big")
    return bytes([code16 + 1]) + n.to_bytes(4, "big")


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


#: the types whose value may hold a large ``bytes`` (the others are packed with their neighbours)
_CARRIERS = frozenset({bytes, list, dict})


def _split(value: Any) -> list[bytes] | None:
    """The parts of ``value``'s encoding, or None if it holds no large ``bytes`` (then the
    caller packs it whole, in C)."""
    kind = type(value)
    if kind is bytes:
        return [_bin_header(len(value)), value] if len(value) >= BIG else None
    if kind is list:
        subs = [_split(item) if type(item) in _CARRIERS else None for item in value]
        if all(s is None for s in subs):
            return None
        parts = [_container_header(len(value), 0x90, 0xDC)]
        for start, end, sub in _runs(subs):
            parts.extend(sub if sub is not None else [_pack_items(value[start:end], 0x90, 0xDC)])
        return parts
    if kind is dict:
        items = list(value.items())
        subs = [_split(item) if type(item) in _CARRIERS else None for _, item in items]
        if all(s is None for s in subs):
            return None
        parts = [_container_header(len(value), 0x80, 0xDE)]
        for start, end, sub in _runs(subs):
            if sub is None:
                parts.append(_pack_items(dict(items[start:end]), 0x80, 0xDE))
            else:
                parts.append(_pack(items[start][0]))
                parts.extend(sub)
        return parts
    return None


def _runs(subs: list[list[bytes] | None]) -> list[tuple[int, int, list[bytes] | None]]:
    """``subs`` as ``(start, end, sub)``: each item with parts of its own alone, each run of
    items without (``sub`` None) together, so that a run is packed by one C call (a peer's
    list of a million small items next to one large blob costs no million Python calls)."""
    out: list[tuple[int, int, list[bytes] | None]] = []
    start = 0
    for i, sub in enumerate(subs):
        if sub is not None:
            if start < i:
                out.append((start, i, None))
            out.append((i, i + 1, sub))
            start = i + 1
    if start < len(subs):
        out.append((start, len(subs), None))
    return out


def _pack_items(container: list[Any] | dict[Any, Any], fix: int, code16: int) -> bytes:
    """The encodings of the items of ``container``, back to back: the container packed in C,
    without its header."""
    return _pack(container)[len(_container_header(len(container), fix, code16)) :]


def pack_parts(value: Any) -> list[bytes]:
    """``packb(value, use_bin_type=True)`` as parts: large ``bytes`` values stand alone (the
    same objects), the small pieces between them are joined."""
    split = _split(value)
    if split is None:
        return [_pack(value)]
    out: list[bytes] = []
    small: list[bytes] = []
    for part in split:
        if len(part) >= BIG:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(part)
        else:
            small.append(part)
    if small:
        out.append(b"".join(small))
    return out


def matches(parts: list[bytes], data: bytes | bytearray) -> bool:
    """Whether the concatenation of ``parts`` equals ``data`` (compared in place)."""
    pos = 0
    for part in parts:
        if not data.startswith(part, pos):
            return False
        pos += len(part)
    return pos == len(data)
