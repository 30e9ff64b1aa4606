"""Corpora of hostile input for the live-node tests: agent frames, transport messages, DHT datagrams.

Each corpus holds deep nesting, huge numbers, invalid UTF-8 and, for every field of every
message kind, a value of every type the encoding has. The tests feed them to a live node and
then check that it still serves, that its log has one line per failure and no traceback, and
that :data:`MARKER` (carried inside the hostile values) never reaches the log.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import msgpack

from keynode.methods.vaults import METHODS as VAULT_METHODS

MARKER = "hostile-marker-7f3a"
DEEP = 600  # the depth that killed the agent (issue 8 item 1)

#: A value of every JSON type, and the edge values of each.
JSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**53, 2**64, -(2**63), 10**30, 1e308, -1e308,
    "", MARKER, "\u0000", "x" * 5000, [], [MARKER], {}, {"$b": "AA=="}, {"$b": MARKER}, {"$b": 1},
    {MARKER: MARKER},
]
#: Agent methods whose parameters are fed every type (never ones that stop or lock the agent).
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    **{method: spec.params for method, spec in VAULT_METHODS.items()},
    "agent.unlock": ("password",),
    "agent.ping": (),
    "agent.status": (),
    "secrets.resolve": ("refs",),
    "nodes.add": ("nodeId", "host", "port"),
    "nodes.find": ("nodeId",),
    "nodes.ping": ("nodeId",),
}


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"v": 1, "id": 1, "method": "agent.ping", "params": {}}
    base.update(fields)
    return base


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _nested(depth: int, leaf: str = "1") -> list[bytes]:
    """Raw JSON nested ``depth`` levels as arrays, as objects and alternating."""
    return [
        b"[" * depth + leaf.encode() + b"]" * depth,
        b'{"a":' * depth + leaf.encode() + b"}" * depth,
        b'[{"a":' * (depth // 2) + leaf.encode() + b"}]" * (depth // 2),
        b'{"$b":' * depth + b'"AA=="' + b"}" * depth,
    ]


def agent_frames() -> Iterator[bytes]:
    """Whole frames (header included) for the agent socket."""
    for deep in _nested(DEEP):
        for field in ("v", "id", "method"):
            yield _frame(b'{"v":1,"id":1,"method":"agent.ping","params":{}}'.replace(f'"{field}":'.encode(), f'"{field}":'.encode() + deep + b',"_":', 1))
        yield _frame(b'{"v":1,"id":1,"method":"secrets.get","params":{"vault":' + deep + b',"path":"x"}}')
        yield _frame(b'{"v":1,"id":1,"method":"secrets.resolve","params":{"refs":' + deep + b"}}")
        yield _frame(deep)
    for big in (b"1" * 5000, b"1e99999", b"-1e99999", b"1" + b"0" * 400 + b".5", b"NaN", b"Infinity", b"-0"):
        yield _frame(b'{"v":1,"id":' + big + b',"method":"agent.ping","params":{}}')
        yield _frame(b'{"v":1,"id":1,"method":"vaults.log","params":{"vault":"x","limit":' + big + b"}}")
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\\ud800", b"\\udc00x", b"\x00"):
        yield _frame(b'{"v":1,"id":1,"method":"secrets.get","params":{"vault":"' + bad + b'","path":"' + bad + b'"}}')
        yield _frame(b'{"v":1,"id":1,"method":"agent.ping","params":{"' + bad + b'":1}}')
    yield _frame(b'{"v":1,"id":1,"method":"agent.ping","params":{},"params":{}}')
    yield _frame(b'{"v":1,"id":1,"method":"agent.ping","params":{}} trailing')
    yield _frame(b" " * 100)
    for field in ("v", "id", "method", "params"):
        for value in JSON_VALUES:
            if field == "v" and MARKER in json.dumps(value):
                continue  # an unsupported version is quoted (40 characters at most) in the log line
            yield _frame(_dumps(_request(**{field: value})))
    for method, params in METHOD_PARAMS.items():
        for name in params:
            for value in JSON_VALUES:
                yield _frame(_dumps(_request(method=method, params={name: value})))
        yield _frame(_dumps(_request(method=method, params={MARKER: 1})))


# -- msgpack (transport messages and DHT datagrams) ------------------------------------

#: A value of every msgpack type, and the edge values of each.
MSGPACK_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.5, float("inf"), float("nan"),
    "", MARKER, b"", MARKER.encode(), b"\x00" * 40, [], [MARKER], {}, {MARKER: MARKER}, {1: 2},
]


def _raw_nested(depth: int) -> list[bytes]:
    """msgpack nested ``depth`` levels (fixarray and fixmap headers), ending in nil."""
    return [b"\x91" * depth + b"\xc0", b"\x81\xa1a" * depth + b"\xc0", b"\xdc\x00\x01" * depth + b"\xc0"]


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def transport_messages() -> Iterator[bytes]:
    """Message plaintexts for an established transport session (each closes its connection)."""
    shapes: list[list[Any]] = [
        [2, 1, 1, "echo", {}], [2, 2, 1, {}], [2, 3, 1, "T", "m", {}], [2, 4, 1], [2, 5, 1], [2, 6, "r"],
    ]
    for deep in _raw_nested(DEEP):
        yield deep
        yield b"\x95\x02\x01\x01\xa4echo" + deep  # a request whose body is deep
        yield b"\x95\x02\x01\x01\xa4echo\x81\xa1b" + deep
    yield b"\x95\x02\x01\x01\xa4echo\xdf\xff\xff\xff\xff"  # a map announcing 2^32-1 entries
    yield b"\x95\x02\x01\x01\xa4echo\xdd\xff\xff\xff\xff"  # an array announcing 2^32-1 items
    yield b"\x95\x02\x01\x01\xa4echo\xdb\xff\xff\xff\xff"  # a string announcing 4 GiB
    yield b"\x95\x02\x01\x01\xa4echo\x81\xa1s\xa3\xff\xfe\xfd"  # invalid UTF-8 in a string
    yield b"\x95\x02\x01\x01\xa4e\xed\xa0\x80\x80"  # invalid UTF-8 in the method
    yield b"\x95\x02\x01\x01\xa4echo\x80trailing"
    yield b"\xc1"  # the never-used msgpack byte
    yield b"\x95\x02\x01\x01\xa4echo\xc7\x01\x05x"  # an extension type
    for shape in shapes:
        for i in range(len(shape)):
            for value in MSGPACK_VALUES:
                if shape[1] == 6 and i == 2 and value == MARKER:
                    continue  # a Close reason is the peer's own words: quoted (100 characters at most) in the log
                yield _pack([*shape[:i], value, *shape[i + 1 :]])


def dht_datagrams(msg_id: bytes = b"\x01" * 20) -> Iterator[bytes]:
    """Whole DHT datagrams (request and response kinds)."""
    node = b"\x02" * 32
    key = b"\x03" * 20
    shapes: list[list[Any]] = [
        ["ping", [node]], ["store", [node, key, b"v"]], ["find_node", [node, key]], ["find_value", [node, key]],
    ]
    for kind in (b"\x00", b"\x01"):
        for deep in _raw_nested(1500):
            yield kind + msg_id + deep[:2000]
        yield kind + msg_id + b"\xdd\xff\xff\xff\xff"
        yield kind + msg_id + b"\xa3\xff\xfe\xfd"
        yield kind + msg_id + b"\xc1"
        yield kind + msg_id
        yield kind + msg_id + b"\x90" + b"junk"
    yield b"\x07" + msg_id + b"\xc0"
    yield b"\x00" * 3000
    for shape in shapes:
        yield b"\x00" + msg_id + _pack(shape)
        for i, arg in enumerate(shape[1]):
            for value in MSGPACK_VALUES:
                args = [*shape[1][:i], value, *shape[1][i + 1 :]]
                yield b"\x00" + msg_id + _pack([shape[0], args])
        for value in MSGPACK_VALUES:
            yield b"\x00" + msg_id + _pack([value, shape[1]])
            yield b"\x00" + msg_id + _pack([shape[0], value])
