"""Transport messages: frozen dataclasses and their strict msgpack codec.

docs/spec/transport.md section 5. Every message is one msgpack array
``[version, type, field...]``; the schema per type is fixed, the encoding must be
canonical (re-encoding what was decoded gives the same bytes), trailing bytes,
unknown versions, unknown types and out-of-range fields are rejected with
:class:`ProtocolViolationError` naming what was wrong (never the content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

import msgpack

from polykey.errors import (
    DiscoveryError,
    InvalidInputError,
    PolykeyError,
    ProtocolViolationError,
    SyncError,
    TransportError,
    from_wire,
)
from polykey.wire import packing
from polykey.wire.strict_msgpack import unpack

#: Version 2: an Error carries ``data`` (the ``{type, message, data}`` of every Polykey error).
PROTOCOL_VERSION = 2
MAX_ID = 2**32 - 1
MAX_NONCE = 2**64 - 1
MAX_METHOD = 64
MAX_ERROR_TYPE = 64
MAX_TEXT = 1024
MAX_DEPTH = 16
#: Arrays and maps in one message, all levels together (section 5).
MAX_CONTAINERS = 65536
METHOD_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")

T_REQUEST = 1
T_RESPONSE = 2
T_ERROR = 3
T_PING = 4
T_PONG = 5
T_CLOSE = 6

Body = dict[str, Any]


@dataclass(frozen=True)
class PeerRequest:
    """Ask the peer to run ``method`` on ``body``; answered by a PeerResponse or PeerError with ``id``."""

    id: int
    method: str
    body: Body


@dataclass(frozen=True)
class PeerResponse:
    id: int
    body: Body


@dataclass(frozen=True)
class PeerError:
    """The request ``id`` failed on the peer: ``type``, ``message`` and ``data`` are the error's
    ``{type, message, data}`` (:meth:`polykey.errors.PolykeyError.to_wire`)."""

    id: int
    type: str
    message: str
    data: Body


@dataclass(frozen=True)
class Ping:
    """Keepalive; the peer answers with a Pong carrying the same nonce."""

    nonce: int


@dataclass(frozen=True)
class Pong:
    nonce: int


@dataclass(frozen=True)
class Close:
    """The sender is closing the connection, for ``reason``."""

    reason: str


Message = Union[PeerRequest, PeerResponse, PeerError, Ping, Pong, Close]


def _fail(what: str) -> ProtocolViolationError:
    return ProtocolViolationError(f"malformed message: {what}")


def _check_value(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _fail("body nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise _fail("map key is not a string")
            _check_value(item, depth + 1)
        return
    raise _fail(f"unsupported value type {type(value).__name__}")


def check_body(body: object) -> Body:
    if not isinstance(body, dict):
        raise _fail("body is not a map")
    _check_value(body, 1)
    return body


def error_reply(request_id: int, error: PolykeyError) -> PeerError:
    """``error`` as the answer to request ``request_id``: its ``{type, message, data}``, the message
    cut to MAX_TEXT and ``data`` left out if it cannot travel (section 5)."""
    wire = error.to_wire()
    data = wire["data"]
    try:
        check_body(data)
    except ProtocolViolationError:
        data = {}
    return PeerError(request_id, wire["type"][:MAX_ERROR_TYPE], wire["message"][:MAX_TEXT], data)


#: The error classes a peer's answer may be rebuilt as: what can go wrong between two nodes.
#: Any other type (e.g. AgentLockedError, which would make `pk` try to unlock) is a PolykeyError.
PEER_ERROR_KINDS: tuple[type[PolykeyError], ...] = (TransportError, DiscoveryError, InvalidInputError, SyncError)


def rebuild_error(reply: PeerError) -> PolykeyError:
    """The PolykeyError subclass a peer answered with, if it is of :data:`PEER_ERROR_KINDS`
    (any other type, or an unknown one: PolykeyError)."""
    return from_wire({"type": reply.type, "message": reply.message, "data": reply.data}, PEER_ERROR_KINDS)


def _int(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{what} out of range")
    return v


def _text(v: object, hi: int, what: str) -> str:
    if not isinstance(v, str) or len(v) > hi:
        raise _fail(f"{what} is not a string of at most {hi} characters")
    return v


def _method(v: object) -> str:
    if not isinstance(v, str) or not METHOD_RE.match(v):
        raise _fail("method name")
    return v


def _fields(message: Message) -> list[Any]:
    if isinstance(message, PeerRequest):
        return [T_REQUEST, message.id, message.method, message.body]
    if isinstance(message, PeerResponse):
        return [T_RESPONSE, message.id, message.body]
    if isinstance(message, PeerError):
        return [T_ERROR, message.id, message.type, message.message, message.data]
    if isinstance(message, Ping):
        return [T_PING, message.nonce]
    if isinstance(message, Pong):
        return [T_PONG, message.nonce]
    if isinstance(message, Close):
        return [T_CLOSE, message.reason]
    raise TypeError(f"not a transport message: {type(message).__name__}")


def _validate(message: Message) -> Message:
    """Check field ranges (the same rules for what we send and what we accept)."""
    if isinstance(message, PeerRequest):
        _int(message.id, 1, MAX_ID, "request id")
        _method(message.method)
        check_body(message.body)
    elif isinstance(message, PeerResponse):
        _int(message.id, 1, MAX_ID, "request id")
        check_body(message.body)
    elif isinstance(message, PeerError):
        _int(message.id, 1, MAX_ID, "request id")
        _text(message.type, MAX_ERROR_TYPE, "error type")
        _text(message.message, MAX_TEXT, "error message")
        check_body(message.data)
    elif isinstance(message, (Ping, Pong)):
        _int(message.nonce, 0, MAX_NONCE, "nonce")
    else:
        _text(message.reason, MAX_TEXT, "close reason")
    return message


def encode(message: Message) -> bytes:
    """The canonical msgpack bytes of ``message`` (validated first)."""
    _validate(message)
    return msgpack.packb([PROTOCOL_VERSION, *_fields(message)], use_bin_type=True)  # type: ignore[no-any-return]


def encode_parts(message: Message) -> list[bytes]:
    """:func:`encode` as parts whose concatenation is those bytes, large ``bytes`` values
    not copied (:func:`polykey.wire.packing.pack_parts`)."""
    _validate(message)
    return packing.pack_parts([PROTOCOL_VERSION, *_fields(message)])


_ARITY = {T_REQUEST: 5, T_RESPONSE: 4, T_ERROR: 6, T_PING: 3, T_PONG: 3, T_CLOSE: 3}


def decode(data: bytes | bytearray) -> Message:
    """Decode one message strictly; :class:`ProtocolViolationError` on anything off-schema."""
    # the message array is one level above its body: MAX_DEPTH + 1 in all
    obj = unpack(data, error=_fail, max_depth=MAX_DEPTH + 1, max_containers=MAX_CONTAINERS)
    if not isinstance(obj, list) or len(obj) < 2:
        raise _fail("not an array [version, type, ...]")
    if obj[0] != PROTOCOL_VERSION or type(obj[0]) is not int:
        raise _fail("unknown protocol version")
    kind = obj[1]
    if type(kind) is not int or kind not in _ARITY:
        raise ProtocolViolationError("unknown message type")
    if len(obj) != _ARITY[kind]:
        raise _fail("wrong number of fields")
    f = obj[2:]
    message: Message
    if kind == T_REQUEST:
        message = PeerRequest(f[0], f[1], f[2])
    elif kind == T_RESPONSE:
        message = PeerResponse(f[0], f[1])
    elif kind == T_ERROR:
        message = PeerError(f[0], f[1], f[2], f[3])
    elif kind == T_PING:
        message = Ping(f[0])
    elif kind == T_PONG:
        message = Pong(f[0])
    else:
        message = Close(f[0])
    _validate(message)
    if not packing.matches(packing.pack_parts([PROTOCOL_VERSION, *_fields(message)]), data):
        raise _fail("non-canonical encoding")
    return message
