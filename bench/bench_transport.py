"""Transport benchmarks: handshake time and 1 MiB-message throughput on loopback.

Run: ``python -m bench transport [--quick]``. Prints a table of medians, each
with the baseline measured in the same run and the ratio to it:

- handshake, sans-I/O (both sides in memory) vs the bare crypto it must do
  (per side: 3 X25519 DH, 2 X25519 public keys, 1 Ed25519 sign, 1 verify);
- handshake over loopback TCP (``Transport.connect`` to a fresh peer) vs a bare asyncio
  TCP connect/close;
- throughput of 1 MiB messages one way, each acknowledged, 1 and 8 in flight on one
  connection: ``Channel.request`` with a 1 MiB body vs plain asyncio TCP doing the same job
  (a 4-byte length, the 1 MiB, a 1-byte ack; no crypto). The two alternate round by round
  in the same run, and the table gives the median of each and of the per-round ratios.
  Two references alternate with them: a one-way stream of 1 MiB writes (this bench's
  earlier baseline) and the bare AEAD work of both sides (the floor of any encrypted
  transport's cost: with the baseline's rate R and the AEAD's rate A, a transport that does
  its crypto on the event loop and otherwise costs what the baseline costs reaches
  A / (A + R) of the baseline).

Both ends run in this one process and event loop (one core does all the work).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, print_table  # noqa: E402
from keynode.peers.transport import Transport  # noqa: E402
from keynode.peers.transport.connection import READ_LIMIT  # noqa: E402
from polykey import crypto  # noqa: E402
from polykey.crypto import noise_suite  # noqa: E402
from polykey.ids import NodeId  # noqa: E402
from keynode.handlers import PeerContext  # noqa: E402
from polykey.keys.keypair import KeyPair  # noqa: E402
from polykey.wire.noise import TAGLEN, CipherState  # noqa: E402
from polykey.wire.session import MAX_CHUNK, NoiseSession  # noqa: E402

MIB = 1 << 20


# -- handshake -----------------------------------------------------------------


def sansio_handshake(a: KeyPair, b: KeyPair, sa: bytes, sb: bytes) -> float:
    t = time.perf_counter()
    i = NoiseSession(a, initiator=True, expected_peer=b.node_id, static_private=sa)
    r = NoiseSession(b, initiator=False, static_private=sb)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    assert i.established and r.established
    return time.perf_counter() - t


def bare_handshake_crypto(a: KeyPair, b: KeyPair, sa: bytes, sb: bytes) -> float:
    t = time.perf_counter()
    for kp, s in ((a, sa), (b, sb)):
        e = crypto.random_bytes(32)
        pe = noise_suite.public_key(e)
        noise_suite.public_key(s)
        noise_suite.dh(e, pe)
        noise_suite.dh(e, pe)
        noise_suite.dh(s, pe)
        sig = kp.sign(b"x" * 100)
        crypto.verify(kp.public_key, b"x" * 100, sig)
    return time.perf_counter() - t


async def tcp_handshakes(n: int) -> tuple[list[float], list[float]]:
    a, b = KeyPair.generate(), KeyPair.generate()
    hs: list[float] = []
    raw: list[float] = []
    async with Transport(b) as tb:
        for _ in range(n):
            async with Transport(a) as ta:
                t = time.perf_counter()
                ch = await ta.connect(b.node_id, "127.0.0.1", tb.port)
                hs.append(time.perf_counter() - t)
                ch.close()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(n):
            t = time.perf_counter()
            _, w = await asyncio.open_connection("127.0.0.1", port)
            raw.append(time.perf_counter() - t)
            w.close()
        server.close()
    return hs, raw


# -- throughput ----------------------------------------------------------------
#
# Both contenders do the same job on the same loopback, in the same process and event loop:
# ``total`` messages of 1 MiB one way, each answered by a tiny acknowledgement, with at most
# ``inflight`` unanswered at a time, over one TCP connection set up before the clock starts.
# The raw baseline frames each message with a 4-byte length (the least any message protocol
# over TCP needs) and reads it with ``StreamReader.readexactly``; it has no crypto, no msgpack
# and no request ids. The transport sends ``Channel.request("sink", {"b": <1 MiB bytes>})``
# and gets ``{"n": 1048576}`` back.


@dataclass(frozen=True)
class Rate:
    """One sample: MB/s of wall-clock time, and MB per second of this process's CPU time
    (user + system: both ends and the kernel's loopback work). On a shared machine the
    second moves less: time stolen by other processes is not counted."""

    wall: float
    cpu: float


class Clock:
    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def rate(self, nbytes: int) -> Rate:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return Rate(nbytes / wall / 1e6, nbytes / max(cpu, 1e-9) / 1e6)


async def channel_throughput(total: int, inflight: int) -> Rate:
    """MB/s of ``total`` 1 MiB requests over one Channel, ``inflight`` at a time."""
    a, b = KeyPair.generate(), KeyPair.generate()
    blob = bytes(MIB)

    async def sink(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        return {"n": len(body["b"])}

    async with Transport(a) as ta, Transport(b) as tb:
        tb.register("sink", sink)
        ch = await ta.connect(b.node_id, "127.0.0.1", tb.port)
        await ch.request("sink", {"b": blob})  # warm up
        sem = asyncio.Semaphore(inflight)

        async def one() -> None:
            async with sem:
                assert (await ch.request("sink", {"b": blob}))["n"] == MIB

        clock = Clock()
        await asyncio.gather(*(one() for _ in range(total)))
        rate = clock.rate(total * MIB)
    return rate


@contextlib.asynccontextmanager
async def loopback(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain asyncio TCP connection to ``serve`` on 127.0.0.1, with the transport's
    StreamReader limit on both ends."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=READ_LIMIT)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=READ_LIMIT)
    try:
        yield r, w
    finally:
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()


async def raw_tcp_throughput(total: int, inflight: int) -> Rate:
    """MB/s of ``total`` length-prefixed 1 MiB messages over plain asyncio TCP, each
    acknowledged by one byte, ``inflight`` at a time."""
    blob = bytes(MIB)
    header = MIB.to_bytes(4, "big")

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                n = int.from_bytes(await r.readexactly(4), "big")
                assert len(await r.readexactly(n)) == MIB
                w.write(b"k")
        except asyncio.IncompleteReadError:
            w.close()

    window = asyncio.Semaphore(inflight)
    async with loopback(serve) as (r, w):

        async def send(count: int) -> None:
            for _ in range(count):
                await window.acquire()
                w.write(header)
                w.write(blob)
                await w.drain()

        async def acks(count: int) -> None:
            for _ in range(count):
                await r.readexactly(1)
                window.release()

        await asyncio.gather(send(1), acks(1))  # warm up
        clock = Clock()
        await asyncio.gather(send(total), acks(total))
        return clock.rate(total * MIB)


async def raw_stream_throughput(total: int) -> Rate:
    """MB/s of ``total`` MiB written one way as fast as TCP takes them, no framing and no
    acknowledgement (the baseline this bench used before; a reference, not the same job)."""
    blob = bytes(MIB)

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(total + 1):
            await r.readexactly(MIB)
        w.write(b"k")
        await w.drain()
        w.close()

    async with loopback(serve) as (r, w):
        w.write(blob)  # warm up
        await w.drain()
        clock = Clock()
        for _ in range(total):
            w.write(blob)
            await w.drain()
        await r.readexactly(1)
        return clock.rate(total * MIB)


def aead_throughput(total: int) -> Rate:
    """MB/s of sealing and opening ``total`` MiB in 65519-byte Noise frames, and nothing else:
    the floor of what an encrypted transport costs per byte (a reference)."""
    send, recv = CipherState(bytes(32)), CipherState(bytes(32))
    chunk = memoryview(bytes(MAX_CHUNK))
    frames = -(-MIB // MAX_CHUNK)
    sealed = bytearray(MAX_CHUNK + TAGLEN)
    opened = bytearray(MAX_CHUNK)
    clock = Clock()
    for _ in range(total * frames):
        send.encrypt_into_with_ad(b"", chunk, memoryview(sealed))
        recv.decrypt_into_with_ad(b"", sealed, memoryview(opened))
    return clock.rate(total * frames * MAX_CHUNK)


def alternate(contenders: dict[str, Callable[[], Rate]], rounds: int) -> dict[str, list[Rate]]:
    """Samples of each contender, measured in ``rounds`` rounds that each run every contender
    once, the order rotating from round to round (so drifting load hits all alike)."""
    names = list(contenders)
    samples: dict[str, list[Rate]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            samples[name].append(contenders[name]())
    return samples


def print_rates(title: str, rows: list[tuple[str, list[Rate], str]], baseline: str) -> None:
    """Like :func:`bench.common.print_table`, for rates (higher is better). Each ratio is the
    median of the per-round ratios (each sample against the baseline sample of its round),
    which shrugs off load that changes between rounds; the ratio of the medians is also given."""
    base = next(r[1] for r in rows if r[0] == baseline)

    def paired(samples: list[Rate], key: Callable[[Rate], float]) -> float:
        return statistics.median(key(s) / key(b) for s, b in zip(samples, base, strict=True))

    def med(samples: list[Rate], key: Callable[[Rate], float]) -> float:
        return statistics.median(key(s) for s in samples)

    def wall(r: Rate) -> float:
        return r.wall

    def cpu(r: Rate) -> float:
        return r.cpu

    print(f"\n## {title}\n")
    print(
        "| figure | median | min | max | n | ratio | ratio of medians | MB per CPU-second | CPU ratio | target |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, samples, target in rows:
        mark = " (baseline)" if name == baseline else ""
        print(
            f"| {name}{mark} | {med(samples, wall):.0f} MB/s | {min(map(wall, samples)):.0f} MB/s | "
            f"{max(map(wall, samples)):.0f} MB/s | {len(samples)} | {paired(samples, wall):.2f}× | "
            f"{med(samples, wall) / med(base, wall):.2f}× | {med(samples, cpu):.0f} | "
            f"{paired(samples, cpu):.2f}× | {target} |"
        )


def main(quick: bool = False) -> None:
    runs, hs_n, mib = (5, 40, 32) if quick else (11, 400, 128)
    a, b = KeyPair.generate(), KeyPair.generate()
    sa, sb = a.x25519_private, b.x25519_private
    for _ in range(20):
        sansio_handshake(a, b, sa, sb)
    bare = [bare_handshake_crypto(a, b, sa, sb) for _ in range(hs_n)]
    mem = [sansio_handshake(a, b, sa, sb) for _ in range(hs_n)]
    tcp_hs, tcp_raw = asyncio.run(tcp_handshakes(hs_n // 4))
    print_table(
        "Transport: handshake (Noise XX + Ed25519 identity proofs)",
        [
            Row("bare crypto of one handshake, both sides", bare),
            Row("handshake, sans-I/O, both sides in memory", mem),
            Row("bare asyncio TCP connect on loopback", tcp_raw),
            Row("Transport.connect() to a new peer (TCP + handshake)", tcp_hs, "≤ 5 ms"),
        ],
        baseline="bare crypto of one handshake, both sides",
    )
    for inflight in (1, 8):
        samples = alternate(
            {
                "raw": lambda k=inflight: asyncio.run(raw_tcp_throughput(mib, k)),
                "channel": lambda k=inflight: asyncio.run(channel_throughput(mib, k)),
                "stream": lambda: asyncio.run(raw_stream_throughput(mib)),
                "aead": lambda: aead_throughput(mib),
            },
            runs,
        )
        print_rates(
            f"Transport: throughput, 1 MiB messages, {inflight} in flight, one connection on loopback "
            f"({mib} MiB per sample, one process, contenders alternating)",
            [
                ("raw asyncio TCP: u32 length + 1 MiB, 1-byte ack", samples["raw"], ""),
                ("Channel.request, 1 MiB body, tiny answer", samples["channel"], "≥ 0.8× raw"),
                ("(reference) raw asyncio TCP one-way stream, no acks", samples["stream"], ""),
                ("(reference) ChaCha20-Poly1305 seal + open alone, 64 KiB frames", samples["aead"], ""),
            ],
            baseline="raw asyncio TCP: u32 length + 1 MiB, 1-byte ack",
        )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
