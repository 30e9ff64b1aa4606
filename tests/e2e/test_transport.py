"""Two (or three) real Transports on 127.0.0.1 in one process: what a caller sees."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from keynode.peers.transport import Channel, Transport, TransportLimits
from polykey.errors import (
    ConnectionClosedError,
    InvalidInputError,
    MessageTooLargeError,
    PeerIdentityMismatchError,
    PeerBusyError,
    PeerUnreachableError,
    PolykeyError,
    RequestTimeoutError,
    UnknownPeerMethodError,
)
from keynode.handlers import PeerContext
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair

A = KeyPair.from_seed(b"\x01" * 32)
B = KeyPair.from_seed(b"\x02" * 32)
C = KeyPair.from_seed(b"\x03" * 32)
WAIT = 10.0


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await coro

    asyncio.run(bounded())


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition that the protocol makes true eventually."""
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.02)


async def echo(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
    return {"peer": str(ctx.caller.node_id), "body": body}


def test_mutual_authentication_and_request_response() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            tb.register("echo", echo)
            ta.register("echo", echo)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            assert ch.peer == B.node_id
            # B's handler sees A's proven NodeId
            assert await ch.request("echo", {"x": [1, b"\x00", None]}) == {
                "peer": str(A.node_id), "body": {"x": [1, b"\x00", None]},
            }
            # B talks back to A over the same connection
            back = await tb.connect(A.node_id, "127.0.0.1", 1)  # port unused: reused
            assert (await back.request("echo", {}))["peer"] == str(B.node_id)
            assert await ch.ping() > 0
            (ca,) = ta.connections()
            (cb,) = tb.connections()
            assert ca["peer"] == str(B.node_id) and cb["peer"] == str(A.node_id)
            assert ca["address"] == f"127.0.0.1:{tb.port}" and ca["direction"] == "outbound"
            assert cb["direction"] == "inbound"
            assert ca["bytes_sent"] == cb["bytes_received"] > 0
            assert ca["age"] >= 0

    run(go())


def test_connect_reuses_the_connection_and_concurrent_dials_share_one() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            chans = await asyncio.gather(*(ta.connect(B.node_id, "127.0.0.1", tb.port) for _ in range(5)))
            assert len(ta.connections()) == 1 and len(tb.connections()) == 1
            assert len({c._conn for c in chans}) == 1
            assert ta.channel(B.node_id) is not None and ta.channel(C.node_id) is None

    run(go())


def test_dialling_an_expected_node_that_proves_another_identity_fails() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            with pytest.raises(PeerIdentityMismatchError) as e:
                await ta.connect(C.node_id, "127.0.0.1", tb.port)
            assert str(B.node_id) in e.value.message and e.value.exit_code == 68
            assert ta.connections() == []
            await until(lambda: tb.stats()["handshaking"] == 0)
            assert tb.connections() == []
            # B keeps serving the right dial
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            await ch.ping()

    run(go())


def test_unreachable_peer() -> None:
    async def outer() -> None:
        async with Transport(B) as tb:
            port = tb.port
        async with Transport(A) as ta:
            with pytest.raises(PeerUnreachableError):
                await ta.connect(B.node_id, "127.0.0.1", port)

    run(outer())


def test_requests_are_multiplexed_out_of_order() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            async def slow(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
                await asyncio.sleep(0.01 * (20 - body["i"]))
                return {"i": body["i"]}

            tb.register("slow", slow)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            results = await asyncio.gather(*(ch.request("slow", {"i": i}) for i in range(20)))
            assert [r["i"] for r in results] == list(range(20))
            assert len(ta.connections()) == 1

    run(go())


def test_remote_errors_unknown_methods_and_handler_bugs() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            async def refuse(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
                raise InvalidInputError("bad vault name")

            async def buggy(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
                raise RuntimeError("secret detail")

            async def wrong(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
                return {"x": object()}

            tb.register("refuse", refuse)
            tb.register("buggy", buggy)
            tb.register("wrong", wrong)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            with pytest.raises(InvalidInputError) as e:
                await ch.request("refuse", {})
            assert type(e.value) is InvalidInputError and e.value.message == "bad vault name"
            with pytest.raises(UnknownPeerMethodError):
                await ch.request("no.such.method", {})
            for method in ("buggy", "wrong"):
                with pytest.raises(PolykeyError) as e:
                    await ch.request(method, {})
                assert type(e.value) is PolykeyError and e.value.message == "internal error"
                assert "secret" not in e.value.message
            await ch.ping()  # the connection survived all of it
            with pytest.raises(ValueError):
                tb.register("Bad Name", echo)
            with pytest.raises(ValueError):
                tb.register("refuse", refuse)

    run(go())


def test_request_timeout_then_the_connection_keeps_working() -> None:
    async def go() -> None:
        release = asyncio.Event()

        async def hang(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
            await release.wait()
            return {"late": True}

        async with Transport(A) as ta, Transport(B) as tb:
            tb.register("hang", hang)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            with pytest.raises(RequestTimeoutError):
                await ch.request("hang", {}, timeout=0.2)
            release.set()  # the late answer arrives and is ignored
            assert await ch.request("ping", {}) == {}
            assert len(ta.connections()) == 1

    run(go())


def test_handler_concurrency_is_bounded() -> None:
    async def go() -> None:
        release = asyncio.Event()

        async def hang(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
            await release.wait()
            return {}

        limits = TransportLimits(max_concurrent_handlers=2)
        async with Transport(A) as ta, Transport(B, limits=limits) as tb:
            tb.register("hang", hang)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            tasks = [asyncio.create_task(ch.request("hang", {})) for _ in range(5)]
            done, _ = await asyncio.wait(tasks, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
            release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            busy = [r for r in results if isinstance(r, PeerBusyError)]
            assert len(busy) == 3
            assert results.count({}) == 2

    run(go())


def test_messages_over_the_cap_are_refused_locally_and_by_the_peer() -> None:
    async def go() -> None:
        small = TransportLimits(max_message_size=10_000)
        async with Transport(A) as ta, Transport(B, limits=small) as tb:
            tb.register("echo", echo)
            ta.register("echo", echo)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            # 1 MiB goes through the default cap from A ... but B closes: over its cap
            with pytest.raises(ConnectionClosedError):
                await ch.request("echo", {"b": b"x" * 20_000})
            await until(lambda: not tb.connections())
            back = await tb.connect(A.node_id, "127.0.0.1", ta.port)
            with pytest.raises(MessageTooLargeError):
                await back.request("echo", {"b": b"x" * 20_000})
            assert (await back.request("echo", {"b": b"x" * 1000}))["body"]["b"] == b"x" * 1000

    run(go())


def test_one_mebibyte_messages_round_trip() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            tb.register("echo", echo)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            blob = bytes(range(256)) * 4096
            for _ in range(3):
                assert (await ch.request("echo", {"b": blob}))["body"]["b"] == blob

    run(go())


def test_large_messages_both_ways_interleave_on_one_connection() -> None:
    """Many-frame requests and answers in flight in both directions at once, with small ones
    between them, each arriving whole and intact (what vault sync will do)."""

    async def digest(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        return {"sha": hashlib.sha256(body["b"]).digest(), "echo": body["b"][:: 1 << 16]}

    def blob(k: int) -> bytes:
        return hashlib.sha256(bytes([k])).digest() * (k * 20_000 + 7)  # 0.6 to 3.4 MiB

    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            ta.register("digest", digest)
            tb.register("digest", digest)
            ab = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            await until(lambda: tb.channel(A.node_id) is not None)
            ba = tb.channel(A.node_id)  # the same connection, the other way
            assert ba is not None

            async def check(ch: Channel, k: int) -> None:
                b = blob(k)
                got = await ch.request("digest", {"b": b})
                assert got == {"sha": hashlib.sha256(b).digest(), "echo": b[:: 1 << 16]}

            await asyncio.gather(
                *(check(ab, k) for k in range(1, 6)),
                *(check(ba, k) for k in range(1, 6)),
                *(ab.ping() for _ in range(5)),
                *(ba.ping() for _ in range(5)),
            )
            assert len(ta.connections()) == 1

    run(go())


def test_simultaneous_dials_settle_on_one_connection() -> None:
    async def go() -> None:
        limits = TransportLimits(retire_grace=0.2)
        async with Transport(A, limits=limits) as ta, Transport(B, limits=limits) as tb:
            ca, cb = await asyncio.gather(
                ta.connect(B.node_id, "127.0.0.1", tb.port), tb.connect(A.node_id, "127.0.0.1", ta.port)
            )

            def settled() -> bool:
                a, b = ta.connections(), tb.connections()
                return len(a) == len(b) == 1 and a[0]["direction"] != b[0]["direction"]

            await until(settled)
            # both ends kept the same one: dialled by the smaller NodeId
            dialler = "outbound" if A.node_id < B.node_id else "inbound"
            assert ta.connections()[0]["direction"] == dialler
            assert await ca.request("ping", {}) == {} and await cb.request("ping", {}) == {}

    run(go())


def test_keepalive_holds_an_idle_connection_open() -> None:
    async def go() -> None:
        limits = TransportLimits(keepalive_interval=0.1, idle_timeout=1.0)
        async with Transport(A, limits=limits) as ta, Transport(B, limits=limits) as tb:
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            before = ta.connections()[0]["bytes_received"]
            await asyncio.sleep(2.5)  # well past idle_timeout, with no request
            assert ch.is_open and len(tb.connections()) == 1
            assert ta.connections()[0]["bytes_received"] > before  # keepalive traffic
            await ch.ping()

    run(go())


def test_peer_shutdown_is_seen_and_leaves_no_tasks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keynode.peers.transport")

    async def go() -> None:
        async with Transport(A) as ta:
            async with Transport(B) as tb:
                ch: Channel = await ta.connect(B.node_id, "127.0.0.1", tb.port)
                await ch.ping()
            await until(lambda: not ta.connections())
            assert not ch.is_open
            with pytest.raises(ConnectionClosedError):
                await ch.request("ping", {})
            await until(lambda: ta.stats() == {"connections": 0, "handshaking": 0, "tasks": 0})
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(go())
    assert "transport shutting down" in caplog.text


def test_invalid_local_requests_are_input_errors() -> None:
    async def go() -> None:
        async with Transport(A) as ta, Transport(B) as tb:
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            with pytest.raises(InvalidInputError):
                await ch.request("Not A Method", {})
            with pytest.raises(InvalidInputError):
                await ch.request("ping", {"x": object()})
            with pytest.raises(InvalidInputError):
                await ch.request("ping", {1: 2})  # type: ignore[dict-item]
            await ch.ping()

    run(go())


def test_stalled_handshakes_cannot_lock_honest_peers_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keynode.peers.transport")

    async def go() -> None:
        limits = TransportLimits(max_pending_handshakes=3)
        async with Transport(A) as ta, Transport(B, limits=limits) as tb:
            stalled = [await asyncio.open_connection("127.0.0.1", tb.port) for _ in range(10)]
            # all 10 accepted: 7 evicted, 3 pending
            await until(lambda: caplog.text.count("evicted: too many pending handshakes") >= 7)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            await ch.ping()
            assert tb.stats()["handshaking"] <= 3
            for _, w in stalled:
                w.close()

    run(go())


def test_a_message_past_the_request_budget_closes_its_connection_and_releases_all() -> None:
    """The budget counts what a partial message holds: one that grows past it is closed with
    the busy reason, everything it was charged is given back, and the next request is served."""

    async def go() -> None:
        async with Transport(A) as ta, Transport(B, limits=TransportLimits(request_budget=256 * 1024)) as tb:
            tb.register("echo", echo)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            with pytest.raises(ConnectionClosedError):
                await ch.request("echo", {"pad": b"\x00" * (1 << 20)}, timeout=WAIT)
            await until(lambda: tb.budget.used == 0)
            ch = await ta.connect(B.node_id, "127.0.0.1", tb.port)
            assert (await ch.request("echo", {"x": 1}, timeout=WAIT))["body"] == {"x": 1}
            assert tb.budget.used == 0

    run(go())
