"""The agent protocol codec, fed scripted bytes (docs/spec/agent-protocol.md)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.agent_client import protocol
from polykey.errors import AgentProtocolError, SecretNotFoundError, from_wire


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_request_round_trip_with_bytes() -> None:
    data = protocol.encode_request(7, "secrets.set", {"vault": "app", "path": "a/b", "value": b"\x00\xffs3"})
    (body,) = protocol.AgentFrameDecoder().feed(data)
    req = protocol.decode_request(body)
    assert (req.id, req.method, req.params) == (7, "secrets.set", {"vault": "app", "path": "a/b", "value": b"\x00\xffs3"})


def test_response_kinds() -> None:
    dec = protocol.AgentFrameDecoder()
    stream = (
        protocol.encode_progress(3, {"done": 1})
        + protocol.encode_result(3, b"v")
        + protocol.encode_error(None, SecretNotFoundError("gone").to_wire())
    )
    bodies = dec.feed(stream)
    progress, result, error = (protocol.decode_response(b) for b in bodies)
    assert progress.kind == "progress" and not progress.final and progress.body == {"done": 1}
    assert result.kind == "result" and result.final and result.body == b"v"
    assert error.id is None and error.kind == "error"
    rebuilt = from_wire(error.body)
    assert type(rebuilt) is SecretNotFoundError and rebuilt.message == "gone"


def test_decoder_handles_any_split() -> None:
    data = b"".join(protocol.encode_request(i, "agent.ping") for i in range(1, 4))
    for size in (1, 2, 3, 5, 7, len(data)):
        dec = protocol.AgentFrameDecoder()
        bodies: list[bytes] = []
        for i in range(0, len(data), size):
            bodies += dec.feed(data[i : i + size])
        assert [protocol.decode_request(b).id for b in bodies] == [1, 2, 3]
        assert dec.pending == 0


def test_truncation_is_visible() -> None:
    dec = protocol.AgentFrameDecoder()
    assert dec.feed(protocol.encode_request(1, "agent.ping")[:-1]) == []
    assert dec.pending > 0


@pytest.mark.parametrize("header", [struct.pack(">I", protocol.MAX_FRAME + 1), struct.pack(">I", 0xFFFFFFFF), struct.pack(">I", 1)])
def test_bad_lengths_rejected(header: bytes) -> None:
    with pytest.raises(AgentProtocolError):
        protocol.AgentFrameDecoder().feed(header)


def test_oversized_message_not_encoded() -> None:
    with pytest.raises(AgentProtocolError):
        protocol.encode_frame({"x": "a" * (protocol.MAX_FRAME + 1)})


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",
        b"[1, 2]",
        b"not json",
        b'{"v":1,"id":1,"method":"agent.ping","params":{}} trailing',
        b'{"v":1,"id":1,"id":2,"method":"agent.ping","params":{}}',
        b'{"v":1,"id":1,"method":"agent.ping","params":{"x":NaN}}',
        b'{"v":2,"id":1,"method":"agent.ping","params":{}}',
        b'{"v":1,"id":0,"method":"agent.ping","params":{}}',
        b'{"v":1,"id":true,"method":"agent.ping","params":{}}',
        b'{"v":1,"id":1.5,"method":"agent.ping","params":{}}',
        b'{"v":1,"id":1,"method":"Agent Ping","params":{}}',
        b'{"v":1,"id":1,"method":"agent.ping","params":[]}',
        b'{"v":1,"id":1,"method":"agent.ping","params":{},"extra":1}',
        b'{"v":1,"id":1,"method":"agent.ping","params":{"v":{"$b":"!!"}}}',
        b'{"v":1,"id":1,"method":"agent.ping","params":{"v":{"$b":"YQ="}}}',
        b'{"v":1,"id":1,"method":"agent.ping","params":{"v":{"$b":"YQ==","x":1}}}',
    ],
)
def test_malformed_requests_rejected(body: bytes) -> None:
    with pytest.raises(AgentProtocolError):
        protocol.decode_request(body)


@pytest.mark.parametrize(
    "obj",
    [
        {"id": 1},
        {"id": 1, "result": 1, "error": {}},
        {"id": 1, "bogus": 1},
        {"id": None, "result": 1},
        {"id": 1, "error": {"type": 1, "message": "x"}},
    ],
)
def test_malformed_responses_rejected(obj: dict[str, object]) -> None:
    with pytest.raises(AgentProtocolError):
        protocol.decode_response(json.dumps(obj).encode())


def test_records_are_immutable_and_do_not_show_params() -> None:
    req = protocol.AgentRequest(1, "secrets.set", {"value": b"s3cret"})
    with pytest.raises(AttributeError):
        req.id = 2  # type: ignore[misc]
    assert "s3cret" not in repr(req)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "$b"), children, max_size=4),
    max_leaves=20,
)


@given(st.integers(1, protocol.MAX_ID), st.from_regex(r"[a-z]{1,8}\.[a-z_]{1,12}", fullmatch=True), st.dictionaries(st.text(max_size=8).filter(lambda k: k != "$b"), json_values, max_size=5))
def test_request_round_trip_property(request_id: int, method: str, params: dict[str, object]) -> None:
    data = protocol.encode_request(request_id, method, params)
    (body,) = protocol.AgentFrameDecoder().feed(data)
    req = protocol.decode_request(body)
    assert (req.id, req.method, req.params) == (request_id, method, params)
    assert protocol.encode_request(req.id, req.method, req.params) == data


@given(st.binary(max_size=200))
def test_garbage_never_crashes_the_decoder(data: bytes) -> None:
    dec = protocol.AgentFrameDecoder()
    try:
        for body in dec.feed(data):
            protocol.decode_request(body)
    except AgentProtocolError:
        pass


def test_errors_quote_peer_values_briefly() -> None:
    """A protocol error lands in agent.log: a peer cannot make it carry megabytes."""
    huge = "v" * 100_000
    with pytest.raises(AgentProtocolError) as info:
        protocol.decode_request(json.dumps({"v": huge, "id": 1, "method": "a.b", "params": {}}).encode())
    assert len(info.value.message) < 100 and "unsupported protocol version 'vvv" in info.value.message
    with pytest.raises(AgentProtocolError) as info:
        protocol.decode_response(json.dumps({"id": 1, huge: 1}).encode())
    assert len(info.value.message) < 100


# -- compact listings (spec section 6, secrets.list with compact) --------------------------

LISTING = [
    {"path": "a", "name": "a", "type": "dir"},
    {"path": "a/b", "name": "b", "type": "secret"},
    {"path": "a/c d/é", "name": "é", "type": "dir"},
    {"path": "z", "name": "z", "type": "secret"},
]


def test_compact_listing_round_trips_through_a_frame() -> None:
    answer = protocol.encode_listing(LISTING)
    assert answer == {"paths": "a/\na/b\na/c d/é/\nz"}
    (body,) = protocol.AgentFrameDecoder().feed(protocol.encode_result(1, answer))
    decoded = protocol.decode_response(body).body
    assert protocol.listing_rows(decoded) == LISTING
    assert protocol.listing_lines(decoded) == ["a/", "a/b", "a/c d/é/", "z"]
    assert protocol.listing_rows(protocol.encode_listing([])) == []


def test_rows_pass_through_and_an_ambiguous_listing_stays_in_rows() -> None:
    assert protocol.listing_lines(LISTING) is None and protocol.listing_rows(LISTING) == LISTING
    odd = [{"path": "a\nb", "name": "a\nb", "type": "secret"}]
    assert protocol.encode_listing(odd) is odd


@pytest.mark.parametrize("bad", [
    {"paths": 1}, {"paths": "a", "more": 1}, "a", {"paths": "a\n"}, {"paths": "\na"}, {"paths": "a\n\nb"},
    {"paths": "/a"}, {"paths": "a\n/b"}, {"paths": "a//b"},
])
def test_a_malformed_compact_listing_is_refused(bad: object) -> None:
    with pytest.raises(AgentProtocolError):
        protocol.listing_rows(bad)


def test_an_agent_without_compact_is_asked_again_in_rows() -> None:
    from polykey.errors import InvalidInputError

    calls: list[dict[str, object]] = []

    def old_agent(method: str, params: dict[str, object]) -> object:
        calls.append(params)
        if "compact" in params:
            raise from_wire(InvalidInputError("secrets.list: unknown parameter(s) compact").to_wire())
        return LISTING

    assert protocol.call_listing(old_agent, {"vault": "v"}) == LISTING
    assert calls == [{"vault": "v", "compact": True}, {"vault": "v"}]

    def failing(method: str, params: dict[str, object]) -> object:
        raise InvalidInputError("secrets.list: unknown parameter(s) bogus")

    with pytest.raises(InvalidInputError, match="bogus"):
        protocol.call_listing(failing, {"vault": "v"})
