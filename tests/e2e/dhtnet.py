"""Helpers for DHT tests: a network of real Discovery nodes on 127.0.0.1, and a raw UDP peer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from keynode.peers.dht import DhtConfig, Discovery
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import dhtmsg as M
from polykey.wire.records import Seed

T = TypeVar("T")
HOST = "127.0.0.1"


def run(main: Callable[[], Awaitable[T]], timeout: float = 90.0) -> T:
    """Run ``main`` in a fresh loop; fail on any exception the loop saw but nobody handled."""

    async def wrapper() -> T:
        unhandled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unhandled.append(ctx))
        result = await asyncio.wait_for(main(), timeout)
        await asyncio.sleep(0)
        assert not unhandled, f"unhandled exceptions in the event loop: {unhandled}"
        return result

    return asyncio.run(wrapper())


@asynccontextmanager
async def network(
    n: int, config: DhtConfig = DhtConfig(), keypairs: list[KeyPair] | None = None
) -> AsyncIterator[list[Discovery]]:
    """``n`` nodes; node 0 is the seed, the others know only the seed. All bootstrapped."""
    kps = keypairs or [KeyPair.generate() for _ in range(n)]
    async with AsyncExitStack() as stack:
        seed = await stack.enter_async_context(Discovery(kps[0], host=HOST, config=config))
        nodes = [seed]
        for kp in kps[1:n]:
            spec = Seed(seed.node_id, HOST, seed.port)
            nodes.append(await stack.enter_async_context(Discovery(kp, host=HOST, seeds=[spec], config=config)))
        for node in nodes:
            await node.bootstrap()
        yield nodes


class RawPeer(asyncio.DatagramProtocol):
    """A UDP socket speaking raw datagrams: the attacker's (or a rogue node's) side."""

    def __init__(self, on_request: Callable[[M.DhtRequest, tuple[str, int]], M.Reply | None] | None = None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=10000)
        self.on_request = on_request
        self.requests: list[M.DhtRequest] = []

    @classmethod
    async def open(cls, on_request: Any = None) -> RawPeer:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: cls(on_request), local_addr=(HOST, 0))
        return proto

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.on_request is not None and data[:1] == b"\x00":
            try:
                msg = M.decode_datagram(data)
            except Exception:
                return
            if isinstance(msg, M.DhtRequest):
                self.requests.append(msg)
                reply = self.on_request(msg, (addr[0], addr[1]))
                if reply is not None and self.transport is not None:
                    self.transport.sendto(M.encode_reply(msg.msg_id, reply), addr)
            return
        if not self.inbox.full():
            self.inbox.put_nowait((data, (addr[0], addr[1])))

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def request(self, body: M.RequestBody, port: int, timeout: float = 2.0) -> M.Reply | None:
        """Send one request; the validated reply, or None if there was none."""
        msg_id = os.urandom(20)
        method = M.DhtRequest(msg_id, body).method
        self.send(M.encode_request(M.DhtRequest(msg_id, body)), port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data, _ = await asyncio.wait_for(self.inbox.get(), left)
            except TimeoutError:
                return None
            msg = M.decode_datagram(data)
            if isinstance(msg, M.DhtResponse) and msg.msg_id == msg_id:
                return M.decode_reply(method, msg.payload)
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def ping(raw: RawPeer, port: int, as_id: NodeId) -> NodeId | None:
    reply = await raw.request(M.Ping(as_id), port)
    return reply.node_id if isinstance(reply, M.Pong) else None
