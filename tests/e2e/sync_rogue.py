"""A rogue sync peer for the hostile sync tests: a real identity speaking the real Noise transport.

:class:`Rogue` runs a :class:`keynode.peers.transport.Transport` with its own KeyPair on an asyncio
loop in a background thread, plus an in-process :class:`VaultService` (its own directory, the
same keys) that can clone and pull vaults from real agents exactly as an agent would. What it
answers to the sync methods (``vaults.heads``, ``vaults.fetch``, ...) is whatever the test sets in
:attr:`Rogue.serve`: honest answers from its own vaults (:meth:`Rogue.serve_honestly`), forged
objects (:meth:`Rogue.serve_forged`), or a stall. Nothing here is a mock of our components: the
transport, the vault service and the wire schemas are the product's own.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from keynode.handlers import PeerContext
from keynode.peers.sync.engine import _Cursor, _take_page, Sync
from keynode.peers.transport import Channel, Transport
from polykey.errors import SyncRefusedError
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults.service import REFUSED, VaultService
from polykey.vaults.transfer import Incoming
from polykey.wire import syncmsg as sm

HOST = "127.0.0.1"
METHODS = ("vaults.invite", "vaults.scan", "vaults.heads", "vaults.fetch", "vaults.announce")
Handler = Callable[[NodeId, dict[str, Any]], Awaitable[dict[str, Any]]]
T = TypeVar("T")


class Rogue:
    """A peer with a valid identity (``KeyPair.from_seed(seed)``) that answers sync requests as told."""

    def __init__(self, path: Path, seed: bytes) -> None:
        self.kp = KeyPair.from_seed(seed)
        self.node_id = str(self.kp.node_id)
        self.svc = VaultService(path, self.kp)
        #: method -> handler; a method not set is refused as an agent refuses an unknown vault.
        self.serve: dict[str, Handler] = {}
        #: (method, asker) of every sync request received, in order.
        self.seen: list[tuple[str, str]] = []
        self.invites: list[dict[str, Any]] = []
        self.stalled = asyncio.Event()  # set by a stalling handler once it has started stalling
        self._cursors: dict[str, _Cursor] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.transport: Transport | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the rogue transport did not start")
        self.serve["vaults.invite"] = self._keep_invite

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Transport(self.kp, HOST, 0) as t:
            self.transport = t
            for method in METHODS:
                t.register(method, functools.partial(self._dispatch, method))
            self.port = t.port
            self._ready.set()
            await self._stop.wait()

    async def _dispatch(self, method: str, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        self.seen.append((method, str(ctx.caller.node_id)))
        handler = self.serve.get(method)
        if handler is None:
            raise SyncRefusedError(REFUSED)
        return await handler(ctx.caller.node_id, body)

    async def _keep_invite(self, peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
        inv = sm.check_invite(body)
        self.invites.append({"from": str(peer), "vaultId": inv.vault_id, "root": inv.root, "name": inv.name})
        return {"v": sm.SYNC_VERSION, "stored": True, "autoAccept": False}

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self.svc.close()

    # -- driving it from the (synchronous) test ------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the rogue's loop and return its result (or raise its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def channel(self, node_id: str, port: int) -> Channel:
        assert self.transport is not None
        return await self.transport.connect(NodeId.from_text(node_id), HOST, port)

    def request(self, node_id: str, port: int, method: str, body: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        """One request to the agent ``node_id`` at ``port``, on the (reused) connection to it."""

        async def go() -> dict[str, Any]:
            ch = await self.channel(node_id, port)
            return await ch.request(method, body, timeout=timeout)

        return self.run(go(), timeout + 5)

    def connected(self, node_id: str) -> bool:
        assert self.transport is not None
        ch = self.transport.channel(NodeId.from_text(node_id))
        return ch is not None and ch.is_open

    # -- as an honest member: clone and pull through the real protocol -----------------------------

    async def _fetch(self, ch: Channel, vid: str, want: str, haves: list[str]) -> Incoming:
        incoming = Incoming()
        cursor: str | None = None
        while True:
            reply = await ch.request("vaults.fetch", sm.fetch_body(sm.Fetch(vid, want, tuple(haves), cursor, 1 << 20)))
            page = sm.check_page(reply, 1 << 20)
            _take_page(incoming, page.objects)
            if page.cursor is None:
                return incoming
            cursor = page.cursor

    def clone(self, node_id: str, port: int, name: str) -> str:
        """Clone the vault ``node_id`` lists as ``name`` (its scan); returns the VaultId."""

        async def go() -> str:
            ch = await self.channel(node_id, port)
            rows = sm.check_scan_answer(await ch.request("vaults.scan", {"v": sm.SYNC_VERSION}))
            row = next(r for r in rows if r.name == name)
            incoming = await self._fetch(ch, row.vault_id, row.head, [])
            self.svc.clone(row.vault_id, row.root, row.head, name, incoming, NodeId.from_text(node_id))
            return row.vault_id

        return self.run(go())

    def pull(self, node_id: str, port: int, name: str) -> None:
        """Fetch and integrate ``node_id``'s head of vault ``name`` (verified, as an agent does)."""

        async def go() -> None:
            ch = await self.channel(node_id, port)
            vid = self.svc.vault_id(name)
            heads = sm.check_heads_answer(await ch.request("vaults.heads", sm.heads_body([vid])), [vid])
            incoming = await self._fetch(ch, vid, heads[vid], self.svc.sync_haves(name, []))
            self.svc.receive(name, NodeId.from_text(node_id), heads[vid], incoming)

        self.run(go())

    # -- what it answers -------------------------------------------------------------------------

    def serve_honestly(self) -> None:
        """Answer ``heads`` and ``fetch`` from its own vaults as an agent would (paged, with cursors)."""
        self.serve["vaults.heads"] = self._honest_heads
        self.serve["vaults.fetch"] = self._honest_fetch

    async def _honest_heads(self, peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
        return sm.heads_answer(self.svc.serve_heads(peer, sm.check_heads(body)))

    async def _honest_fetch(self, peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
        f = sm.check_fetch(body)
        if f.cursor is None:
            refs = self.svc.serve_plan(peer, f.vault_id, f.want, list(f.haves))
            token = f"{len(self._cursors):032x}"
            cursor = self._cursors[token] = _Cursor(peer, f.vault_id, refs, 0.0)
        else:
            token, cursor = f.cursor, self._cursors[f.cursor]
        objects = Sync._page(self.svc, cursor, f.max_bytes)  # noqa: SLF001 - the agent's own paging
        done = cursor.pos >= len(cursor.refs) and cursor.part is None
        return sm.page_answer(sm.Page(objects, None if done else token, len(cursor.refs)))

    def serve_forged(self, vid: str, head: str, objects: list[tuple[int, bytes]]) -> None:
        """Claim ``head`` for ``vid`` and send ``objects`` (whatever they are) as the one fetch page."""

        async def heads(peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
            return sm.heads_answer({vid: head})

        async def fetch(peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
            cap = body["maxBytes"]
            pages = _paged(objects, cap) if sum(len(d) for _t, d in objects) > cap else [[list(o) for o in objects]]
            n = 0 if body["cursor"] is None else int(body["cursor"], 16)
            more = f"{n + 1:032x}" if n + 1 < len(pages) else None
            return {"v": sm.SYNC_VERSION, "objects": pages[n], "cursor": more, "total": len(objects)}

        self.serve["vaults.heads"] = heads
        self.serve["vaults.fetch"] = fetch

    def serve_then_stall(self) -> None:
        """Answer ``heads`` and the first fetch page honestly, then never answer a fetch again."""
        self.serve_honestly()
        honest = self._honest_fetch

        async def fetch(peer: NodeId, body: dict[str, Any]) -> dict[str, Any]:
            if body.get("cursor") is None:
                return await honest(peer, body)
            self.stalled.set()
            await asyncio.Event().wait()  # never answers (cancelled when the rogue closes)
            raise AssertionError("unreachable")

        self.serve["vaults.fetch"] = fetch


def _paged(objects: list[tuple[int, bytes]], cap: int) -> list[list[list[Any]]]:
    """``objects`` in pages of at most ``cap`` bytes, an object larger than that in parts (one a page)."""
    pages: list[list[list[Any]]] = [[]]
    size = 0
    for t, data in objects:
        if len(data) > cap:
            pages += [[[t, data[i : i + cap], i, len(data)]] for i in range(0, len(data), cap)]
            pages.append([])
            size = 0
            continue
        if size + len(data) > cap:
            pages.append([])
            size = 0
        pages[-1].append([t, data])
        size += len(data)
    return [page for page in pages if page]
