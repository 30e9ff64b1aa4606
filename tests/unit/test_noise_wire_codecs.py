"""Frames and transport messages: hypothesis round-trips and strict rejection."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import ProtocolViolationError
from polykey.wire import messages as m
from polykey.wire import packing
from polykey.wire.frames import NoiseFrameDecoder, encode_frame

bodies_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=10), bodies_values, max_size=5)
ids = st.integers(1, m.MAX_ID)
methods = st.from_regex(m.METHOD_RE, fullmatch=True)
texts = st.text(max_size=50)
nonces = st.integers(0, m.MAX_NONCE)
any_message = st.one_of(
    st.builds(m.PeerRequest, ids, methods, bodies),
    st.builds(m.PeerResponse, ids, bodies),
    st.builds(m.PeerError, ids, st.text(max_size=m.MAX_ERROR_TYPE), texts, bodies),
    st.builds(m.Ping, nonces),
    st.builds(m.Pong, nonces),
    st.builds(m.Close, texts),
)


def chunked(stream: bytes, data: st.DataObject, max_cuts: int) -> list[bytes]:
    """``stream`` cut at up to ``max_cuts`` places that hypothesis picks."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=max_cuts)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=8), st.data())
def test_framer_round_trips_under_any_chunking(bodies: list[bytes], data: st.DataObject) -> None:
    dec = NoiseFrameDecoder()
    out: list[bytes] = []
    for chunk in chunked(b"".join(encode_frame(b) for b in bodies), data, 6):
        out += dec.add_and_parse(chunk)
    assert out == bodies
    assert dec.buffered == 0


@given(st.integers(0, 65535))
def test_framer_refuses_lengths_outside_its_bounds_from_the_header(n: int) -> None:
    dec = NoiseFrameDecoder(min_size=16, max_size=1000)
    header = n.to_bytes(2, "big")
    if 16 <= n <= 1000:
        assert dec.add_and_parse(header) == []
        assert dec.buffered == 2
    else:
        with pytest.raises(ProtocolViolationError, match="frame length"):
            dec.add_and_parse(header)


def test_encode_frame_bounds() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"")
    with pytest.raises(ValueError):
        encode_frame(b"x" * 65536)
    assert encode_frame(b"ab") == b"\x00\x02ab"


@given(any_message)
@settings(max_examples=300)
def test_messages_round_trip_byte_for_byte(msg: m.Message) -> None:
    data = m.encode(msg)
    assert m.decode(data) == msg
    assert m.encode(m.decode(data)) == data


@given(any_message, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_rejected(msg: m.Message, tail: bytes) -> None:
    with pytest.raises(ProtocolViolationError):
        m.decode(m.encode(msg) + tail)


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_random_bytes_decode_or_raise_protocol_violation_only(data: bytes) -> None:
    try:
        msg = m.decode(data)
    except ProtocolViolationError:
        return
    assert m.encode(msg) == data


@pytest.mark.parametrize(
    "obj,why",
    [
        ([1, m.T_PING, 1], "version"),
        ([3, m.T_PING, 1], "version"),
        ([2, 99, 1], "unknown message type"),
        ([2, m.T_PING], "fields"),
        ([2, m.T_PING, 1, 2], "fields"),
        ([2, m.T_PING, -1], "nonce"),
        ([2, m.T_PING, True], "nonce"),
        ([2, m.T_REQUEST, 0, "ping", {}], "request id"),
        ([2, m.T_REQUEST, 2**32, "ping", {}], "request id"),
        ([2, m.T_REQUEST, 1, "Ping", {}], "method"),
        ([2, m.T_REQUEST, 1, "x" * 65, {}], "method"),
        ([2, m.T_REQUEST, 1, "ping", []], "body"),
        ([2, m.T_RESPONSE, 1, {"a": {"b": {}}} ], None),
        ([2, m.T_ERROR, 1, "E" * 65, "", {}], "error type"),
        ([2, m.T_ERROR, 1, "E", "", []], "body"),
        ([2, m.T_ERROR, 1, "E", ""], "fields"),
        ([2, m.T_CLOSE, "x" * 1025], "close reason"),
        ({"v": 1}, "array"),
    ],
)
def test_schema_violations(obj: Any, why: str | None) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    if why is None:
        m.decode(data)
        return
    with pytest.raises(ProtocolViolationError, match=why):
        m.decode(data)


def test_non_canonical_and_foreign_encodings_are_rejected() -> None:
    canonical = m.encode(m.Ping(5))
    assert canonical == b"\x93\x02\x04\x05"
    for bad in (
        b"\x93\x02\x04\xcc\x05",  # 5 as uint8 instead of fixint
        b"\xdc\x00\x03\x01\x04\x05",  # array16 header
        b"\x93\x02\x06\xd9\x01x",  # str8 for a 1-char string
        msgpack.packb([2, m.T_RESPONSE, 1, {"a": 1.5}], use_single_float=True),
        msgpack.packb([2, m.T_RESPONSE, 1, {1: 2}], use_bin_type=True),  # int key
        b"\x96\x02\x03\x01\xc7\x01\x05x\xa0\x80",  # ext type
    ):
        with pytest.raises(ProtocolViolationError):
            m.decode(bad)


def test_deep_nesting_is_rejected() -> None:
    deep: Any = {}
    for _ in range(m.MAX_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(ProtocolViolationError, match="deeply"):
        m.decode(msgpack.packb([2, m.T_RESPONSE, 1, deep]))
    with pytest.raises(ProtocolViolationError):
        m.decode(b"\x91" * 100_000)


# -- the bulk path: frames as views, large bytes packed without a copy ----------------------

big_bytes = st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(packing.BIG - 2, packing.BIG + 70_000))
bulk_values = st.recursive(
    bodies_values | big_bytes,
    lambda children: st.lists(children, max_size=20) | st.dictionaries(st.text(max_size=8), children, max_size=20),
    max_leaves=12,
)


@given(bulk_values)
@settings(max_examples=150)
def test_pack_parts_is_packb_in_pieces_with_large_bytes_not_copied(value: Any) -> None:
    parts = packing.pack_parts(value)
    expected = msgpack.packb(value, use_bin_type=True)
    assert b"".join(parts) == expected
    assert packing.matches(parts, expected) and packing.matches(parts, bytearray(expected))
    # every large bytes value is a part of its own, the very object (no copy was made)
    def large(v: Any) -> list[bytes]:
        if isinstance(v, bytes):
            return [v] if len(v) >= packing.BIG else []
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else []
        return [b for item in items for b in large(item)]
    ids = {id(p) for p in parts}
    assert all(id(b) in ids for b in large(value))


@given(bulk_values, st.data())
@settings(max_examples=100)
def test_matches_refuses_any_other_bytes(value: Any, data: st.DataObject) -> None:
    parts = packing.pack_parts(value)
    expected = msgpack.packb(value, use_bin_type=True)
    assert not packing.matches(parts, expected[:-1])
    assert not packing.matches(parts, expected + b"\x00")
    pos = data.draw(st.integers(0, len(expected) - 1))
    flipped = bytearray(expected)
    flipped[pos] ^= 1
    assert not packing.matches(parts, flipped)


def test_a_large_blob_in_a_non_canonical_bin_header_is_rejected() -> None:
    blob = b"x" * (packing.BIG + 1)  # canonical: bin16
    canonical = m.encode(m.PeerResponse(1, {"b": blob}))
    assert m.decode(canonical) == m.PeerResponse(1, {"b": blob})
    bin32 = canonical.replace(b"\xc5" + len(blob).to_bytes(2, "big"), b"\xc6" + len(blob).to_bytes(4, "big"))
    assert bin32 != canonical
    with pytest.raises(ProtocolViolationError, match="non-canonical"):
        m.decode(bin32)


@given(st.lists(st.binary(min_size=1, max_size=70_000), max_size=6), st.integers(0, 3), st.data())
@settings(max_examples=100)
def test_framer_views_match_the_copying_framer_under_any_chunking(
    bodies: list[bytes], limited: int, data: st.DataObject
) -> None:
    """add_and_parse_views gives the same frames as add_and_parse, also after frames were
    left buffered by a parse with a limit (the handshake's way), and copies only the
    frames cut by a read boundary."""
    dec = NoiseFrameDecoder()
    out: list[bytes] = []
    for chunk in chunked(b"".join(encode_frame(b) for b in bodies), data, 8):
        if limited and len(out) < limited:
            out += dec.add_and_parse(chunk, limit=1)
        else:
            out += [bytes(v) for v in dec.add_and_parse_views(chunk)]
    out += [bytes(v) for v in dec.add_and_parse_views(b"")]
    assert out == bodies
    assert dec.buffered == 0


def test_framer_views_refer_to_the_data_they_came_in() -> None:
    stream = encode_frame(b"a" * 100) + encode_frame(b"b" * 50) + encode_frame(b"c" * 30)[:10]
    dec = NoiseFrameDecoder()
    views = dec.add_and_parse_views(stream)
    assert [bytes(v) for v in views] == [b"a" * 100, b"b" * 50]
    assert all(v.obj is stream for v in views)  # no copy
    assert dec.buffered == 10
    (last,) = dec.add_and_parse_views(encode_frame(b"c" * 30)[10:])
    assert bytes(last) == b"c" * 30


@given(st.integers(0, 65535), st.integers(0, 1))
def test_framer_views_refuse_lengths_outside_bounds_from_the_header(n: int, split: int) -> None:
    dec = NoiseFrameDecoder(min_size=16, max_size=1000)
    header = n.to_bytes(2, "big")
    parts = [header[:1], header[1:]] if split else [header]
    if 16 <= n <= 1000:
        for p in parts:
            assert dec.add_and_parse_views(p) == []
        assert dec.buffered == 2
    else:
        with pytest.raises(ProtocolViolationError, match="frame length"):
            for p in parts:
                dec.add_and_parse_views(p)


@pytest.mark.parametrize(
    "value",
    [
        [*range(5000), b"x" * packing.BIG, *range(5000), [b"y" * packing.BIG, *range(3000)]],
        {**{f"k{i}": i for i in range(5000)}, "big": b"x" * packing.BIG, **{f"m{i}": [i] for i in range(5000)}},
    ],
    ids=["list", "map"],
)
def test_pack_parts_packs_each_run_of_small_items_in_one_call(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    """The canonical check of every received message runs pack_parts: a peer's thousands of
    small items next to one large blob must not cost one Python-level packb each."""
    calls: list[object] = []
    pack = packing._pack
    monkeypatch.setattr(packing, "_pack", lambda v: calls.append(v) or pack(v))
    assert b"".join(packing.pack_parts(value)) == msgpack.packb(value, use_bin_type=True)
    assert len(calls) <= 6
