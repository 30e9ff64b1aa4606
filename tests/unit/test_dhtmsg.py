"""DHT datagram codec (polykey/wire/dhtmsg.py): allow-list, shapes, sizes, canonical msgpack."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import DatagramError
from polykey.ids import NodeId
from polykey.wire import dhtmsg as M

A = NodeId(bytes(range(32)))
B = NodeId(bytes(range(1, 33)))
MID = bytes(20)
KEY = bytes(range(20))


def raw(kind: int, obj: object, msg_id: bytes = MID) -> bytes:
    return bytes([kind]) + msg_id + msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "body",
    [M.Ping(A), M.Store(A, KEY, b"x" * 1024), M.FindNode(A, KEY), M.FindValue(B, KEY)],
)
def test_request_round_trip(body: M.RequestBody) -> None:
    req = M.DhtRequest(MID, body)
    data = M.encode_request(req)
    assert data[0] == M.REQUEST and data[1:21] == MID
    assert M.decode_datagram(data) == req


@pytest.mark.parametrize(
    "method,reply",
    [
        (M.PING, M.Pong(A)),
        (M.STORE, M.Stored(True)),
        (M.FIND_NODE, M.Nodes((M.Contact(A, "127.0.0.1", 1), M.Contact(B, "::1", 65535)))),
        (M.FIND_VALUE, M.Nodes(())),
        (M.FIND_VALUE, M.Value(b"record")),
    ],
)
def test_reply_round_trip(method: str, reply: M.Reply) -> None:
    msg = M.decode_datagram(M.encode_reply(MID, reply))
    assert isinstance(msg, M.DhtResponse)
    assert M.decode_reply(method, msg.payload) == reply


def test_rpcudp_compatible_framing() -> None:
    # rpcudp frames a call as 0x00 || 20-byte id || msgpack([name, args]).
    assert M.encode_request(M.DhtRequest(MID, M.Ping(A))) == raw(0, ["ping", [A.raw]])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 21,
        raw(2, ["ping", [A.raw]]),  # unknown kind
        raw(0, ["stun", []]),  # upstream's rpc_stun: not allowed
        raw(0, ["save_state", ["/tmp/x"]]),
        raw(0, ["__init__", []]),
        raw(0, [b"ping", [A.raw]]),
        raw(0, ["ping", [A.raw[:31]]]),  # short node id
        raw(0, ["ping", [A.raw, A.raw]]),  # extra argument
        raw(0, ["ping", A.raw]),
        raw(0, ["ping"]),
        raw(0, {"ping": [A.raw]}),
        raw(0, ["find_node", [A.raw, KEY + b"\x00"]]),  # 21-byte key
        raw(0, ["find_node", [A.raw, "k" * 20]]),
        raw(0, ["store", [A.raw, KEY, b""]]),
        raw(0, ["store", [A.raw, KEY, b"x" * 1025]]),  # over the record cap
        raw(0, ["store", [A.raw, KEY, 5]]),
        raw(0, ["ping", [A.raw]]) + b"\x00",  # trailing byte
        b"\x00" + MID + b"\x92\xa4ping\x91\xd9\x20" + b"a" * 32,  # non-canonical str8 for a short str
        b"\x00" + MID + b"\xdc\x00\x02\xa4ping\x91\xc4\x20" + A.raw,  # array16 for 2 items
        b"\x00" + MID + b"\x91" * 1500 + b"\xc0",  # deep nesting
        b"\x00" + MID + b"\xdd\xff\xff\xff\xff",  # huge array header
        b"\x00" + MID + b"\xc7\x01\x05a",  # ext type
        b"\x00" + MID + b"\xc1",  # never-used byte
        b"\x00" + MID + b"\x92\xa4ping\x91\xc4\x20" + A.raw[:10],  # truncated
        raw(0, ["ping", [A.raw]]) + b"\x00" * 2048,  # over the datagram cap
    ],
)
def test_bad_datagrams_rejected(data: bytes) -> None:
    with pytest.raises(DatagramError):
        M.decode_datagram(data)


@pytest.mark.parametrize(
    "method,payload",
    [
        (M.PING, b"short"),
        (M.PING, True),
        (M.STORE, 1),
        (M.STORE, None),
        (M.FIND_NODE, {"value": b"x"}),  # values only answer find_value
        (M.FIND_NODE, [[A.raw, "127.0.0.1"]]),
        (M.FIND_NODE, [[A.raw, "localhost", 1]]),  # contacts are IP literals
        (M.FIND_NODE, [[A.raw, "127.0.0.1", 0]]),
        (M.FIND_NODE, [[A.raw, "127.0.0.1", True]]),
        (M.FIND_NODE, [[A.raw, "127.0.0.1", 1]] * (M.MAX_CONTACTS + 1)),
        (M.FIND_VALUE, {"value": b""}),
        (M.FIND_VALUE, {"value": b"x", "extra": 1}),
        (M.FIND_VALUE, {"value": b"x" * 1025}),
        ("stun", b""),
    ],
)
def test_bad_replies_rejected(method: str, payload: object) -> None:
    with pytest.raises(DatagramError):
        M.decode_reply(method, payload)


def test_encoders_refuse_oversize() -> None:
    contacts = tuple(M.Contact(A, "1111:2222:3333:4444:5555:6666:7777:8888", 65535) for _ in range(40))
    data = M.encode_reply(MID, M.Nodes(contacts))  # truncated to MAX_CONTACTS, still fits
    assert len(data) <= M.MAX_DATAGRAM
    with pytest.raises(DatagramError):
        M.encode_request(M.DhtRequest(b"short", M.Ping(A)))


@settings(max_examples=300, deadline=None)
def decode_everything(data: bytes) -> None:
    """Decode a datagram and, if it is a response, its payload as the reply to every method:
    any failure must be a DatagramError."""
    try:
        msg = M.decode_datagram(data)
    except DatagramError:
        return
    if isinstance(msg, M.DhtResponse):
        for method in M.METHODS:
            try:
                M.decode_reply(method, msg.payload)
            except DatagramError:
                pass


@given(st.binary(max_size=2100))
def test_random_bytes_never_escape(data: bytes) -> None:
    decode_everything(data)


_objs = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 1]), _objs)
def test_structured_junk_never_escapes(kind: int, obj: object) -> None:
    decode_everything(raw(kind, obj))
