"""A bare transport node for the fault tests: ``python transport_node.py SEED_HEX LIMITS_JSON``.

Prints ``READY <port> <node id>`` once listening; logs to stderr; serves ``echo``,
``stats`` and the built-in ``ping`` until its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from keynode.peers.transport import Transport, TransportLimits
from keynode.handlers import PeerContext
from polykey.keys.keypair import KeyPair


async def main(seed: bytes, limits: dict[str, Any]) -> None:
    async with Transport(KeyPair.from_seed(seed), "127.0.0.1", 0, limits=TransportLimits(**limits)) as t:

        async def echo(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
            return {"peer": str(ctx.caller.node_id), "body": body}

        async def stats(ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
            return dict(t.stats())

        t.register("echo", echo)
        t.register("stats", stats)
        print(f"READY {t.port} {t.node_id}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(main(bytes.fromhex(sys.argv[1]), json.loads(sys.argv[2])))
