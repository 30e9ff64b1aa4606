"""Transport benchmarks: handshake time and 1 MiB-message throughput on loopback.

Run: ``python -m bench transport [--quick]``. Prints a table of medians, each
with the baseline measured in the same run and the ratio to it:

- handshake, sans-I/O (both sides in memory) vs the bare crypto it must do
  (per side: 3 X25519 DH, 2 X25519 public keys, 1 Ed25519 sign, 1 verify);
- handshake over loopback TCP (``Transport.connect`` to a fresh peer) vs a bare asyncio
  TCP connect/close;
- throughput of 1 MiB request bodies (one way; 1 and 8 requests in flight) vs raw,
  unencrypted asyncio TCP on the same loopback, same process, same 1 MiB writes.

Both ends run in this one process and event loop (one core does all the work).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, print_table  # noqa: E402
from keynode.transport import Transport  # noqa: E402
from polykey import crypto  # noqa: E402
from polykey.ids import NodeId  # noqa: E402
from polykey.keys.keypair import KeyPair  # noqa: E402
from polykey.wire.session import Session  # noqa: E402

MIB = 1 << 20


# -- handshake -----------------------------------------------------------------


def sansio_handshake(a: KeyPair, b: KeyPair, sa: bytes, sb: bytes) -> float:
    t = time.perf_counter()
    i = Session(a, initiator=True, expected_peer=b.node_id, static_private=sa)
    r = Session(b, initiator=False, static_private=sb)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    assert i.established and r.established
    return time.perf_counter() - t


def bare_handshake_crypto(a: KeyPair, b: KeyPair, sa: bytes, sb: bytes) -> float:
    t = time.perf_counter()
    for kp, s in ((a, sa), (b, sb)):
        e = crypto.random_bytes(32)
        pe = crypto.x25519_public(e)
        crypto.x25519_public(s)
        crypto.x25519(e, pe)
        crypto.x25519(e, pe)
        crypto.x25519(s, pe)
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


async def channel_throughput(total_mib: int, inflight: int) -> float:
    a, b = KeyPair.generate(), KeyPair.generate()
    blob = bytes(MIB)

    async def sink(peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
        return {"n": len(body["b"])}

    async with Transport(a) as ta, Transport(b) as tb:
        tb.register("sink", sink)
        ch = await ta.connect(b.node_id, "127.0.0.1", tb.port)
        await ch.request("sink", {"b": blob})  # warm up
        sem = asyncio.Semaphore(inflight)

        async def one() -> None:
            async with sem:
                assert (await ch.request("sink", {"b": blob}))["n"] == MIB

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total_mib)))
        dt = time.perf_counter() - t
    return total_mib * MIB / dt / 1e6


async def raw_tcp_throughput(total_mib: int) -> float:
    blob = bytes(MIB)
    done = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(total_mib):
            await r.readexactly(MIB)
        w.write(b"k")
        await w.drain()
        w.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t = time.perf_counter()
    for _ in range(total_mib):
        w.write(blob)
        await w.drain()
    await r.readexactly(1)
    dt = time.perf_counter() - t
    w.close()
    await done.wait()
    server.close()
    await server.wait_closed()
    return total_mib * MIB / dt / 1e6


def print_rates(title: str, rows: list[tuple[str, list[float], str]], baseline: str) -> None:
    """Like :func:`bench.common.print_table`, for rates (MB/s; higher is better)."""
    base = statistics.median(next(r[1] for r in rows if r[0] == baseline))
    print(f"\n## {title}\n")
    print("| figure | median | min | n | ratio to baseline | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, samples, target in rows:
        mark = " (baseline)" if name == baseline else ""
        med = statistics.median(samples)
        print(f"| {name}{mark} | {med:.0f} MB/s | {min(samples):.0f} MB/s | {len(samples)} | {med / base:.2f}× | {target} |")


def main(quick: bool = False) -> None:
    runs, hs_n, mib = (3, 40, 32) if quick else (7, 400, 128)
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
    raw = [asyncio.run(raw_tcp_throughput(mib)) for _ in range(runs)]
    one = [asyncio.run(channel_throughput(mib, 1)) for _ in range(runs)]
    eight = [asyncio.run(channel_throughput(mib, 8)) for _ in range(runs)]
    print_rates(
        f"Transport: throughput, 1 MiB messages on loopback ({mib} MiB per run, one process)",
        [
            ("raw asyncio TCP, no framing or crypto", raw, ""),
            ("Channel.request, 1 MiB body, 1 in flight", one, "≥ 100 MB/s"),
            ("Channel.request, 1 MiB body, 8 in flight", eight, "≥ 100 MB/s"),
        ],
        baseline="raw asyncio TCP, no framing or crypto",
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
