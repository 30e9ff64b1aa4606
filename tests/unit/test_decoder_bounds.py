"""Every decoder of outside bytes bounds depth and size and fails with its own error (issue 8 item 1)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keynode.failures import describe
from keynode.memory import RequestBudget
from polykey.agent_client import protocol
from polykey.errors import AgentProtocolError, DatagramError, ProtocolViolationError, SecretNotFoundError
from polykey.wire import dhtmsg
from polykey.wire import messages as m
from polykey.wire.strict_msgpack import unpack

from ..conftest import until


def _request_with(params_json: bytes) -> bytes:
    return b'{"v":1,"id":1,"method":"secrets.get","params":' + params_json + b"}"


@pytest.mark.parametrize("depth", [protocol.MAX_DEPTH, 600, 100_000])
def test_agent_json_deeper_than_the_limit_is_a_protocol_error(depth: int) -> None:
    inner = b"[" * depth + b"]" * depth
    with pytest.raises(AgentProtocolError, match="nested deeper than 32"):
        protocol.decode_request(_request_with(b'{"vault":' + inner + b"}"))
    objects = b"{\"a\":" * (depth + 1) + b"1" + b"}" * (depth + 1)
    with pytest.raises(AgentProtocolError, match="nested deeper than 32"):
        protocol.loads_object(objects)


def test_agent_json_at_the_limit_and_brackets_in_strings_are_fine() -> None:
    at_limit = b'{"a":' + b"[" * (protocol.MAX_DEPTH - 1) + b"]" * (protocol.MAX_DEPTH - 1) + b"}"
    assert protocol.loads_object(at_limit)
    tricky = json.dumps({"s": "[[[[{{{{" * 50 + '\\"[[[', "t": ["\\\\", "[" * 100]}).encode()
    assert protocol.loads_object(tricky)["t"][1] == "[" * 100


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=40))
def test_the_depth_scan_agrees_with_the_parsed_depth(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    body = json.dumps({"x": value}, ensure_ascii=False).encode()
    if depth({"x": value}) <= protocol.MAX_DEPTH:
        assert protocol.loads_object(body) == {"x": value}
    else:
        with pytest.raises(AgentProtocolError, match="nested deeper"):
            protocol.loads_object(body)


@pytest.mark.parametrize(
    "params",
    [b'{"vault":1e999}', b'{"vault":-1e999}', b'{"vault":"\\ud800"}', b'{"vault":"\\udc00"}',
     b'{"vault":"\\ud800\\\\\\udc00"}', b'{"vault":' + b"1" * 5000 + b"}", b'{"vault":"\xff"}'],
)
def test_agent_json_huge_numbers_and_bad_text_are_protocol_errors(params: bytes) -> None:
    with pytest.raises(AgentProtocolError):
        protocol.decode_request(_request_with(params))


def test_a_surrogate_pair_is_text() -> None:
    assert protocol.decode_request(_request_with(b'{"vault":"\\ud83d\\ude00"}')).params == {"vault": "\U0001f600"}


def test_msgpack_decoders_refuse_deep_nesting_and_too_many_containers() -> None:
    with pytest.raises(ProtocolViolationError, match="too deeply"):
        m.decode(b"\x95\x02\x01\x01\xa4echo" + b"\x81\xa1a" * 600 + b"\xc0")
    many = b"\x94\x02\x02\x01\x81\xa1a\xdd" + (m.MAX_CONTAINERS + 1).to_bytes(4, "big") + b"\x90" * (m.MAX_CONTAINERS + 1)
    with pytest.raises(ProtocolViolationError, match="too many arrays and maps"):
        m.decode(many)
    for kind in (b"\x00", b"\x01"):
        with pytest.raises(DatagramError):
            dhtmsg.decode_datagram(kind + b"\x01" * 20 + b"\x91" * 1000 + b"\xc0")
        with pytest.raises(DatagramError, match="too deeply"):
            dhtmsg.decode_datagram(kind + b"\x01" * 20 + b"\x91\x91\x91\xc0")


def test_strict_msgpack_raises_only_the_callers_error() -> None:
    for data in (b"\xc1", b"\xd4\x01\x00", b"\xa3\xff\xfe\xfd", b"\x80\x00", b"\xdb\xff\xff\xff\xff", b"\x81\x01\x02"):
        with pytest.raises(SecretNotFoundError):
            unpack(data, error=SecretNotFoundError, max_depth=4, max_containers=4)
    assert unpack(msgpack.packb({"a": [1, b"x"]}), error=SecretNotFoundError, max_depth=2, max_containers=2) == {"a": [1, b"x"]}


def test_failure_lines_are_bounded_and_never_quote_the_exception_text() -> None:
    try:
        raise ValueError("SECRET " * 100)
    except ValueError as e:
        line = describe(e)
    assert "SECRET" not in line and line.startswith("ValueError at test_decoder_bounds.py:")
    assert describe(SecretNotFoundError("no secret\n" * 50)).count("\n") == 0
    assert len(describe(SecretNotFoundError("x" * 1000))) == 200


def test_the_request_budget_charges_whole_frames_and_trims_after_release() -> None:
    trims: list[int] = []
    budget = RequestBudget(100, trim=lambda: trims.append(1))
    assert budget.reserve(60) and not budget.reserve(41) and budget.reserve(40)
    budget.release(60)
    assert budget.used == 40 and budget.reserve(60)
    big = RequestBudget(64 << 20, trim=lambda: trims.append(1))
    assert big.reserve(24 << 20)
    big.release(24 << 20)
    assert trims == [1]
    assert big.reserve(24 << 20)
    big.release(24 << 20, trim=False)  # a peer message that arrived whole: its memory is reused
    assert trims == [1] and big.used == 0


def test_the_agent_socket_answers_busy_past_its_budget(tmp_path: Any) -> None:
    from keynode.agent.server import SocketServer

    async def main() -> None:
        async def dispatch(ctx: Any, params: dict[str, Any]) -> Any:
            return {"pong": True}

        async with asyncio.TaskGroup() as tg:
            server = SocketServer(tmp_path / "s.sock", dispatch, tg, request_budget=1000)
            async with server:
                r1, w1 = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
                w1.write(protocol.HEADER.pack(900) + b"{")  # holds 900 of the 1000 bytes
                await w1.drain()
                await until(lambda: server.budget.used == 900)
                r2, w2 = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
                w2.write(protocol.encode_request(1, "agent.ping", {"pad": "x" * 200}))
                await w2.drain()
                header = await r2.readexactly(4)
                reply = protocol.decode_response(await r2.readexactly(protocol.frame_length(header)))
                assert reply.id is None and reply.body["data"] == {"busy": True}
                w1.close()
                w3_r, w3 = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
                await until(lambda: server.budget.used == 0)  # the first connection's charge released
                w3.write(protocol.encode_request(1, "agent.ping", {"pad": "x" * 200}))
                header = await w3_r.readexactly(4)
                assert protocol.decode_response(await w3_r.readexactly(protocol.frame_length(header))).body == {"pong": True}
                w2.close()
                w3.close()

    asyncio.run(main())


def test_a_partial_frame_is_freed_with_its_connection_without_a_garbage_collection(tmp_path: Any) -> None:
    """The partial buffer must not outlive its connection through a reference cycle (an exception
    traceback holding the frame that holds the buffer) until some later full collection."""
    import gc
    import tracemalloc

    from keynode.agent.server import SocketServer

    async def main() -> int:
        async def dispatch(ctx: Any, params: dict[str, Any]) -> Any:
            return {}

        async with asyncio.TaskGroup() as tg:
            server = SocketServer(tmp_path / "s.sock", dispatch, tg)
            async with server:
                baseline = tracemalloc.get_traced_memory()[0]
                for _ in range(3):
                    r, w = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
                    w.write(protocol.HEADER.pack(20 << 20) + b"x" * (16 << 20))  # 16 MiB of a 20 MiB frame
                    await w.drain()
                    await until(lambda: len(server._connections) == 1)
                    w.close()
                    await w.wait_closed()
                    del r, w
                    await until(lambda: not server._connections)
                return tracemalloc.get_traced_memory()[0] - baseline

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        grown = asyncio.run(main())
    finally:
        tracemalloc.stop()
        gc.enable()
    assert grown < 2 << 20, f"{grown >> 20} MiB still held after the connections closed"


def test_the_agent_limits_its_malloc_heaps() -> None:
    """keynode/__main__.py calls limit_arenas before any thread starts; glibc takes it (in a child
    process, so this test process keeps its own allocator settings)."""
    code = "from keynode.memory import limit_arenas; raise SystemExit(0 if limit_arenas() else 1)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
