"""DHT datagrams: strict codec for the four Kademlia RPCs (docs/spec/discovery.md section 4).

Sans-I/O. Framing keeps rpcudp's layout so the kademlia package's routing and
crawling code can sit on top::

    kind (1: 0x00 request, 0x01 response) | msg_id (20 random bytes) | msgpack body

A request body is ``[method, [args...]]`` with ``method`` in the allow-list
:data:`METHODS`; a response body depends on the method it answers. Every
datagram is at most :data:`MAX_DATAGRAM` bytes, decoded with size limits, and
must be canonical msgpack (re-encoding gives the same bytes). Anything else
raises :class:`DatagramError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack

from polykey.errors import DatagramError, PolykeyError
from polykey.ids import NodeId
from polykey.wire.records import DHT_KEY_BYTES, MAX_RECORD_BYTES, check_host, check_port
from polykey.wire.strict_msgpack import unpack

REQUEST: Final = 0x00
RESPONSE: Final = 0x01
MSG_ID_BYTES: Final = 20
MAX_DATAGRAM: Final = 2048
MAX_CONTACTS: Final = 20
#: Nesting of a datagram body: a node list is an array of 3-item arrays.
MAX_DEPTH: Final = 2

PING: Final = "ping"
STORE: Final = "store"
FIND_NODE: Final = "find_node"
FIND_VALUE: Final = "find_value"
METHODS: Final = frozenset({PING, STORE, FIND_NODE, FIND_VALUE})


@dataclass(frozen=True)
class Contact:
    """A node as routing tables exchange it: NodeId and a UDP endpoint (IP literal)."""

    node_id: NodeId
    host: str
    port: int


@dataclass(frozen=True)
class Ping:
    sender: NodeId


@dataclass(frozen=True)
class Store:
    sender: NodeId
    key: bytes
    value: bytes


@dataclass(frozen=True)
class FindNode:
    sender: NodeId
    key: bytes


@dataclass(frozen=True)
class FindValue:
    sender: NodeId
    key: bytes


RequestBody = Ping | Store | FindNode | FindValue


@dataclass(frozen=True)
class DhtRequest:
    msg_id: bytes
    body: RequestBody

    @property
    def method(self) -> str:
        return _METHOD_OF[type(self.body)]


@dataclass(frozen=True)
class DhtResponse:
    """A response whose payload is checked against the request's method by :func:`decode_reply`."""

    msg_id: bytes
    payload: object


@dataclass(frozen=True)
class Pong:
    node_id: NodeId


@dataclass(frozen=True)
class Stored:
    ok: bool


@dataclass(frozen=True)
class Nodes:
    contacts: tuple[Contact, ...]


@dataclass(frozen=True)
class Value:
    value: bytes


Reply = Pong | Stored | Nodes | Value

_METHOD_OF: dict[type, str] = {Ping: PING, Store: STORE, FindNode: FIND_NODE, FindValue: FIND_VALUE}


def _unpack(body: bytes) -> Any:
    obj = unpack(
        body,
        error=DatagramError,
        max_depth=MAX_DEPTH,
        max_containers=MAX_CONTACTS + 2,
        max_array_len=MAX_CONTACTS * 3,
        max_map_len=4,
    )
    try:
        canonical = _pack(obj)
    except Exception:
        raise DatagramError("malformed msgpack") from None
    if canonical != body:
        raise DatagramError("non-canonical msgpack")
    return obj


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _node_id(value: object) -> NodeId:
    if not isinstance(value, bytes) or len(value) != NodeId.SIZE:
        raise DatagramError("bad node id")
    return NodeId(value)


def _key(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != DHT_KEY_BYTES:
        raise DatagramError("bad DHT key")
    return value


def _contact(value: object) -> Contact:
    if not isinstance(value, list) or len(value) != 3:
        raise DatagramError("bad contact")
    raw_id, host, port = value
    try:
        return Contact(_node_id(raw_id), check_host(host, allow_names=False), check_port(port))
    except PolykeyError as exc:
        raise DatagramError(f"bad contact: {exc.message}") from None


def _request_body(method: object, args: object) -> RequestBody:
    if not isinstance(method, str) or method not in METHODS:
        raise DatagramError("method not allowed")
    if not isinstance(args, list):
        raise DatagramError("bad arguments")
    if method == PING and len(args) == 1:
        return Ping(_node_id(args[0]))
    if method == STORE and len(args) == 3:
        value = args[2]
        if not isinstance(value, bytes) or not 0 < len(value) <= MAX_RECORD_BYTES:
            raise DatagramError("bad value")
        return Store(_node_id(args[0]), _key(args[1]), value)
    if method == FIND_NODE and len(args) == 2:
        return FindNode(_node_id(args[0]), _key(args[1]))
    if method == FIND_VALUE and len(args) == 2:
        return FindValue(_node_id(args[0]), _key(args[1]))
    raise DatagramError("bad arguments")


def decode_datagram(data: bytes) -> DhtRequest | DhtResponse:
    """Parse one datagram; requests are fully validated, responses only framed."""
    if len(data) > MAX_DATAGRAM:
        raise DatagramError("datagram too large")
    if len(data) < 1 + MSG_ID_BYTES + 1:
        raise DatagramError("datagram too small")
    kind, msg_id = data[0], bytes(data[1 : 1 + MSG_ID_BYTES])
    if kind not in (REQUEST, RESPONSE):
        raise DatagramError("unknown datagram kind")
    obj = _unpack(bytes(data[1 + MSG_ID_BYTES :]))
    if kind == RESPONSE:
        return DhtResponse(msg_id, obj)
    if not isinstance(obj, list) or len(obj) != 2:
        raise DatagramError("a request is [method, args]")
    return DhtRequest(msg_id, _request_body(obj[0], obj[1]))


def decode_reply(method: str, payload: object) -> Reply:
    """Check a response payload against the method it answers."""
    if method == PING:
        return Pong(_node_id(payload))
    if method == STORE:
        if not isinstance(payload, bool):
            raise DatagramError("bad store reply")
        return Stored(payload)
    if method in (FIND_NODE, FIND_VALUE):
        if method == FIND_VALUE and isinstance(payload, dict):
            value = payload.get("value")
            if len(payload) != 1 or not isinstance(value, bytes) or not 0 < len(value) <= MAX_RECORD_BYTES:
                raise DatagramError("bad value reply")
            return Value(value)
        if not isinstance(payload, list) or len(payload) > MAX_CONTACTS:
            raise DatagramError("bad node list")
        return Nodes(tuple(_contact(c) for c in payload))
    raise DatagramError("method not allowed")


def _check_size(data: bytes) -> bytes:
    if len(data) > MAX_DATAGRAM:
        raise DatagramError("datagram too large")
    return data


def _check_msg_id(msg_id: bytes) -> bytes:
    if len(msg_id) != MSG_ID_BYTES:
        raise DatagramError("message id must be 20 bytes")
    return msg_id


def encode_request(request: DhtRequest) -> bytes:
    body = request.body
    args: list[object]
    if isinstance(body, Ping):
        args = [body.sender.raw]
    elif isinstance(body, Store):
        args = [body.sender.raw, body.key, body.value]
    else:
        args = [body.sender.raw, body.key]
    payload = _pack([request.method, args])
    return _check_size(bytes([REQUEST]) + _check_msg_id(request.msg_id) + payload)


def encode_reply(msg_id: bytes, reply: Reply) -> bytes:
    payload: object
    if isinstance(reply, Pong):
        payload = reply.node_id.raw
    elif isinstance(reply, Stored):
        payload = reply.ok
    elif isinstance(reply, Value):
        payload = {"value": reply.value}
    else:
        payload = [[c.node_id.raw, c.host, c.port] for c in reply.contacts[:MAX_CONTACTS]]
    return _check_size(bytes([RESPONSE]) + _check_msg_id(msg_id) + _pack(payload))
