"""The sync engine of one agent (docs/spec/sync.md).

Serving side (peer methods, every request checked against the vault's members as of this node's
verified head, and the backup replicas; a vault that is not shared with the asker is answered as
if it did not exist): ``vaults.invite``, ``vaults.scan``, ``vaults.heads``, ``vaults.fetch``
(paged, with a cursor and a byte cap; large objects in parts), ``vaults.announce``.

Asking side (the agent's methods): pull, push, clone, sync, share, unshare, status. A pull asks
the peer's head, negotiates haves, fetches the missing objects page by page into an
:class:`polykey.vaults.transfer.Incoming` (checked as they arrive), then hands them to
:meth:`VaultService.receive <polykey.vaults.service.VaultService.receive>` under the vault's write
lock: verified in quarantine, merged, the branch moved. Nothing unverified is ever visible.

On its own: after each local write the new head is announced to the vault's members (they
fetch); an anti-entropy pass asks each member's heads every ``interval`` seconds (with jitter;
offline nodes back off); invites to unreachable nodes are retried with backoff. Everything is
bounded: concurrent syncs, scheduled pulls, queued invites, cursors per peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keynode.agent.core import Agent
from keynode.handlers import PeerContext
from keynode.lifecycle import Service, task_group
from keynode.peers.network import Network
from keynode.peers.transport import Channel
from polykey import crypto
from polykey.errors import (
    AgentLockedError,
    InvalidInputError,
    PolykeyError,
    ProtocolViolationError,
    SyncCursorError,
    SyncError,
    SyncRefusedError,
    VaultNotFoundError,
)
from polykey.ids import NodeId
from polykey.vaults import transfer
from polykey.vaults.service import VaultService
from polykey.vaults.transfer import Incoming
from polykey.wire import syncmsg as sm

log = logging.getLogger("keynode.peers.sync")

#: Anti-entropy period (seconds) and its jitter (a fraction of it, either way).
DEFAULT_INTERVAL = 60.0
JITTER = 0.2
#: Syncs (pulls, clones) running at once; more wait.
MAX_CONCURRENT_SYNCS = 4
#: Pulls scheduled by announces and anti-entropy, waiting or running; more are dropped (the next
#: anti-entropy pass catches them).
MAX_SCHEDULED = 256
#: Invites waiting to be delivered to unreachable nodes.
MAX_QUEUED_INVITES = 256
#: Open fetch cursors, all peers together and per peer; a cursor unused this long expires.
MAX_CURSORS = 64
MAX_CURSORS_PER_PEER = 4
CURSOR_TTL = 120.0
#: Bytes of object data asked per fetch page.
PAGE_BYTES = 1024 * 1024
#: Backoff of an unreachable member (seconds): doubling from the first to the second.
BACKOFF = (5.0, 300.0)
INVITE_BACKOFF = (2.0, 300.0)
#: How long one announce may take (reaching the member and its answer).
ANNOUNCE_TIMEOUT = 5.0
#: How long one ``vaults.heads`` or ``vaults.fetch`` page of a pull or clone may take before the peer
#: is given up on (a stalled peer; a pull with no NODEID then tries the next member). The env
#: override ``PK_SYNC_FETCH_TIMEOUT`` (seconds) is read when the agent starts (docs/spec/sync.md 6).
FETCH_TIMEOUT = 30.0
#: A local write is announced this long after it, so that a burst of writes makes one announce.
ANNOUNCE_DEBOUNCE = 0.005

Progress = Callable[[dict[str, Any]], Awaitable[None]]


async def _no_progress(_event: dict[str, Any]) -> None:
    return None


@dataclass
class _Cursor:
    peer: NodeId
    vault_id: str
    refs: list[tuple[int, str]]
    expires: float
    pos: int = 0
    part: bytes | None = None  # the large object being sent in parts
    offset: int = 0


@dataclass
class _PeerLink:
    """What this node knows of syncing one vault with one member, in memory."""

    last_sync: float | None = None
    last_error: str | None = None
    last_result: dict[str, Any] | None = None


@dataclass
class _Backoff:
    until: float = 0.0
    delay: float = 0.0


@dataclass
class _QueuedInvite:
    invite: sm.Invite
    node: NodeId
    due: float
    delay: float
    error: str | None = None


@dataclass
class _Scheduled:
    head: str
    again: bool = False
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)


class Sync(Service):
    """Sharing and sync for one agent; a service entered by the agent after the peer network."""

    def __init__(self, agent: Agent, network: Network, *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._agent = agent
        self._net = network
        self.interval = DEFAULT_INTERVAL if interval is None else interval
        self.fetch_timeout = _fetch_timeout(os.environ.get("PK_SYNC_FETCH_TIMEOUT"))
        self._clock = clock
        self._wall = wall
        self._cursors: dict[str, _Cursor] = {}
        self._links: dict[tuple[str, NodeId], _PeerLink] = {}
        self._backoff: dict[NodeId, _Backoff] = {}
        self._invites: dict[tuple[str, NodeId], _QueuedInvite] = {}
        self._scheduled: dict[tuple[str, NodeId], _Scheduled] = {}
        self._announce: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SYNCS)
        self._last_merge: dict[str, dict[str, Any]] = {}
        for method, handler in (("vaults.invite", self.on_invite), ("vaults.scan", self.on_scan),
                                ("vaults.heads", self.on_heads), ("vaults.fetch", self.on_fetch),
                                ("vaults.announce", self.on_announce)):
            network.serve(method, handler)
        agent.on_vault_written(self._written)

    # -- lifecycle -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifetime(self) -> AsyncIterator[None]:
        self._wake = asyncio.Event()
        async with task_group() as tg:
            self._tg = tg
            for loop, name in ((self._announce_loop, "sync-announce"), (self._anti_entropy_loop, "sync-anti-entropy"),
                               (self._invite_loop, "sync-invites")):
                tg.create_task(self._forever(loop, name), name=name)
            try:
                yield
            finally:
                self._tg = None

    async def _forever(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Run a background loop; if it ever fails (a bug), log it and start it again a second later."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a background loop never takes the agent down
                log.error("%s failed: %s", name, _why(e), exc_info=not isinstance(e, PolykeyError))
                await asyncio.sleep(1.0)

    def _spawn(self, coro: Awaitable[Any], name: str) -> bool:
        if self._tg is None:
            coro.close()  # type: ignore[attr-defined]
            return False
        self._tg.create_task(self._guarded(coro, name), name=name)
        return True

    async def _guarded(self, coro: Awaitable[Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a background sync never takes the agent down
            log.warning("%s failed: %s", name, _why(e))

    def _service(self) -> VaultService:
        return self._agent.vaults  # AgentLockedError while locked

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._agent.run_blocking(fn, *args)

    async def _others(self, vault: str, *, replicas: bool = True) -> list[dict[str, Any]]:
        """The member rows of ``vault`` other than this node (without the backup replicas unless
        ``replicas``)."""
        me = str(self._agent.keypair.node_id)
        return [m for m in await self._blocking(self._service().members, vault)
                if m["nodeId"] != me and (replicas or m["role"] != "replica")]

    async def _names(self, vault: str | None) -> list[str]:
        """``[vault]``, or the name of every readable vault of this node."""
        if vault is not None:
            return [vault]
        return [r["name"] for r in await self._blocking(self._service().list_vaults) if r.get("state") == "ok"]

    # -- serving ---------------------------------------------------------------------------

    async def on_invite(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        """Keep the invite (bounded per sender); clone at once if the sender is trusted with auto-accept."""
        inv = sm.check_invite(body)
        sender = ctx.caller.node_id
        svc = self._service()
        stored = await self._blocking(svc.store_invite, inv.vault_id, inv.root, inv.head, str(sender), inv.role, inv.name)
        trusted = {t["nodeId"]: t["autoAccept"] for t in await self._blocking(svc.trusted_nodes)}
        auto = bool(stored and trusted.get(str(sender)))
        log.info("invite to vault %s (%s) from %s%s", inv.vault_id, inv.role, sender,
                 ": cloning it (trusted, auto-accept)" if auto else "" if stored else ": not kept")
        if auto:
            self._spawn(self._auto_clone(inv, sender), f"auto-accept clone of {inv.vault_id}")
        return {"v": sm.SYNC_VERSION, "stored": bool(stored), "autoAccept": auto}

    async def on_scan(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        sm.check_scan(body)
        rows = await self._blocking(self._service().serve_scan, ctx.caller.node_id)
        return sm.scan_answer([sm.Shared(r["vaultId"], r["name"], r["role"], r["head"], r["root"]) for r in rows])

    async def on_heads(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        asked = sm.check_heads(body)
        return sm.heads_answer(await self._blocking(self._service().serve_heads, ctx.caller.node_id, asked))

    async def on_fetch(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        f = sm.check_fetch(body)
        peer = ctx.caller.node_id
        svc = self._service()
        now = self._clock()
        self._expire(now)
        if f.cursor is None:
            if sum(1 for c in self._cursors.values() if c.peer == peer) >= MAX_CURSORS_PER_PEER or \
                    len(self._cursors) >= MAX_CURSORS:
                raise SyncError("too many transfers in progress; try again shortly")
            refs = await self._blocking(svc.serve_plan, peer, f.vault_id, f.want, list(f.haves))
            token = crypto.random_bytes(16).hex()
            cursor = self._cursors[token] = _Cursor(peer, f.vault_id, refs, now + CURSOR_TTL)
        else:
            found = self._cursors.get(f.cursor)
            if found is None or found.peer != peer or found.vault_id != f.vault_id:
                raise SyncCursorError("the transfer cursor is unknown or expired; run the pull again")
            token, cursor = f.cursor, found
            # still shared with the asker? (a member removed mid-transfer gets nothing more)
            if f.vault_id not in await self._blocking(svc.serve_heads, peer, [f.vault_id]):
                self._cursors.pop(token, None)
                raise SyncRefusedError("no vault with that id is shared with this node")
        cursor.expires = now + CURSOR_TTL
        objects = await self._blocking(self._page, svc, cursor, f.max_bytes)
        done = cursor.pos >= len(cursor.refs) and cursor.part is None
        if done:
            self._cursors.pop(token, None)
        return sm.page_answer(sm.Page(objects, None if done else token, len(cursor.refs)))

    @staticmethod
    def _page(svc: VaultService, cursor: _Cursor, cap: int) -> list[sm.PageObject]:
        """The next page of ``cursor``: whole objects up to ``cap`` bytes, or the next part of a larger one."""
        out: list[sm.PageObject] = []
        size = 0
        while cursor.pos < len(cursor.refs) or cursor.part is not None:
            if cursor.part is not None:
                kind = cursor.refs[cursor.pos][0]
                chunk = cursor.part[cursor.offset : cursor.offset + cap]
                out.append((kind, chunk, cursor.offset, len(cursor.part)))
                cursor.offset += len(chunk)
                if cursor.offset >= len(cursor.part):
                    cursor.part, cursor.offset = None, 0
                    cursor.pos += 1
                return out
            # read in batches of up to 256 objects; stop the page once it is full
            batch = cursor.refs[cursor.pos : cursor.pos + 256]
            datas = svc.serve_read(cursor.vault_id, batch)
            for (kind, _oid), data in zip(batch, datas):
                if len(data) > cap:
                    if out:
                        return out  # the large one starts the next page
                    cursor.part, cursor.offset = data, 0
                    break
                if size + len(data) > cap and out:
                    return out
                out.append((kind, data))
                size += len(data)
                cursor.pos += 1
        return out

    def _expire(self, now: float) -> None:
        for token in [t for t, c in self._cursors.items() if c.expires < now]:
            del self._cursors[token]

    async def on_announce(self, ctx: PeerContext, body: dict[str, Any]) -> dict[str, Any]:
        a = sm.check_announce(body)
        peer = ctx.caller.node_id
        svc = self._service()
        allowed = await self._blocking(svc.serve_heads, peer, [a.vault_id])
        ours = allowed.get(a.vault_id)
        if ours is None:
            return sm.announce_answer("ignored", None)  # not held, or not shared with the announcer
        if ours == a.head:
            return sm.announce_answer("up-to-date", ours)
        if await self._blocking(svc.knows, a.vault_id, a.head):
            return sm.announce_answer("up-to-date", ours)  # we already have it (we are ahead)
        if not a.wait:
            self._schedule(a.vault_id, peer, a.head)
            return sm.announce_answer("scheduled", ours)
        try:
            result = await self.pull_from(a.vault_id, peer, head=a.head)
        except PolykeyError as e:
            return sm.announce_answer("kept", ours, _why(e)[:1024])
        return sm.announce_answer(result["action"], result["after"], result.get("reason"))

    # -- asking ------------------------------------------------------------------------------

    async def _reach(self, node: NodeId) -> Channel:
        return await self._net.reach(node)

    async def pull_from(self, vault: str, peer: NodeId, *, head: str | None = None,
                        progress: Progress = _no_progress, background: bool = False) -> dict[str, Any]:
        """Fetch ``peer``'s head of ``vault`` (asked, or ``head`` as announced) and integrate it.
        A failure is logged in one line; a ``background`` pull (announces, anti-entropy) failing the
        same way as the last time with that peer logs it only at debug level."""
        svc = self._service()
        vid = await self._blocking(svc.vault_id, vault)
        link = self._links.setdefault((vid, peer), _PeerLink())
        try:
            if str(peer) not in {m["nodeId"] for m in await self._blocking(svc.members, vid)}:
                # a node with a valid identity that is not a member gives nothing
                raise SyncRefusedError(f"node {peer} is not a member or replica of vault {vid}; "
                                       "this node syncs only with them")
            async with self._slots:
                channel = await self._reach(peer)
                theirs = head
                if theirs is None:
                    heads = sm.check_heads_answer(await channel.request(
                        "vaults.heads", sm.heads_body([vid]), timeout=self.fetch_timeout), [vid])
                    theirs = heads.get(vid)
                    if theirs is None:
                        raise SyncRefusedError(f"node {peer} does not share vault {vid} with this node "
                                               "(never shared, or this node was removed)")
                result = await self._pull_head(svc, channel, vid, theirs, progress)
        except PolykeyError as e:
            why = _why(e)
            repeated = background and link.last_error == why
            link.last_error = why
            if not isinstance(e, AgentLockedError):
                # one line per failure; the same failure again (a retry, anti-entropy) only at debug
                log.log(logging.DEBUG if repeated else logging.WARNING, "sync of vault %s with %s failed: %s",
                        vid, peer, why)
            raise
        link.last_sync, link.last_error, link.last_result = self._wall(), None, result
        if result.get("conflicts"):
            self._last_merge[vid] = {"peer": str(peer), "at": self._wall(), "conflicts": result["conflicts"]}
        return result

    async def _pull_head(self, svc: VaultService, channel: Channel, vid: str, theirs: str,
                         progress: Progress) -> dict[str, Any]:
        peer = channel.peer
        if await self._blocking(svc.knows, vid, theirs):
            head = (await self._blocking(svc.sync_info, vid))["head"]
            await self._blocking(svc.peer_seen, vid, str(peer), theirs)
            return {"vaultId": vid, "peer": str(peer), "before": head, "after": head, "action": "up-to-date",
                    "conflicts": [], "dropped": [], "reapplied": 0, "reason": None, "objects": 0, "bytes": 0}
        known = [p["head"] for p in await self._blocking(svc.peer_states, vid)
                 if p["nodeId"] == str(peer) and p.get("head")]
        haves = await self._blocking(svc.sync_haves, vid, known)
        incoming = await self._fetch(channel, vid, theirs, haves, progress)
        async with self._agent.vault_locks.writing(vid):
            result: dict[str, Any] = await self._blocking(svc.receive, vid, peer, theirs, incoming)
        result.update(vaultId=vid, peer=str(peer))
        if result["after"] != result["before"]:
            self._agent.vault_written(vid)  # tell the other members (and the peer, if we merged)
        log.info("pulled vault %s from %s: %s (%d objects, %d bytes)", vid, peer, result["action"],
                 result.get("objects", 0), result.get("bytes", 0))
        return result

    async def _fetch(self, channel: Channel, vid: str, want: str, haves: list[str], progress: Progress) -> Incoming:
        incoming = Incoming()
        cursor: str | None = None
        while True:
            reply = await channel.request("vaults.fetch", sm.fetch_body(sm.Fetch(vid, want, tuple(haves), cursor,
                                                                                 PAGE_BYTES)),
                                          timeout=self.fetch_timeout)
            try:
                page = sm.check_page(reply, PAGE_BYTES)
            except ProtocolViolationError as e:  # a malformed page is a bad transfer (sync.md section 2)
                raise transfer.reject(e.message) from None
            await self._blocking(_take_page, incoming, page.objects)
            await progress({"stage": "receiving", "objects": incoming.count, "total": page.total,
                            "bytes": incoming.nbytes})
            if page.cursor is None:
                return incoming
            cursor = page.cursor

    async def pull(self, vault: str, node: NodeId | None, progress: Progress = _no_progress) -> list[dict[str, Any]]:
        """Pull ``vault`` from ``node``, or from every other member in turn (one that fails or stalls
        is reported and the next is tried). At least one must succeed."""
        if node is not None:
            return [await self.pull_from(vault, node, progress=progress)]
        return await self._each_member(vault, lambda peer: self.pull_from(vault, peer, progress=progress))

    async def push(self, vault: str, node: NodeId | None) -> list[dict[str, Any]]:
        """Announce our head to ``node`` (or every other member) and wait for each to fetch it."""
        svc = self._service()
        info = await self._blocking(svc.sync_info, vault)

        async def one(peer: NodeId) -> dict[str, Any]:
            channel = await self._reach(peer)
            reply = sm.check_announce_answer(await channel.request(
                "vaults.announce", sm.announce_body(sm.Announce(info["vaultId"], info["head"], True)),
                timeout=self._agent_request_timeout()))
            if reply["action"] == "ignored":
                raise SyncRefusedError(f"node {peer} does not hold vault {info['vaultId']} or does not take it "
                                       "from this node")
            return {"vaultId": info["vaultId"], "peer": str(peer), "action": reply["action"],
                    "head": reply["head"], "reason": reply["reason"]}

        if node is not None:
            return [await one(node)]
        return await self._each_member(vault, one)

    def _agent_request_timeout(self) -> float:
        return 120.0

    async def _each_member(self, vault: str, run: Callable[[NodeId], Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
        svc = self._service()
        members = await self._others(vault)
        if not members:
            raise InvalidInputError(f"vault {vault!r} has no other member to sync with (share it first)")
        out = []
        for m in members:
            peer = NodeId.from_text(m["nodeId"])
            try:
                out.append(await run(peer))
            except AgentLockedError:
                raise
            except PolykeyError as e:
                out.append({"peer": str(peer), "action": "failed", "error": _why(e), "exitCode": e.exit_code})
        if all(r["action"] == "failed" for r in out):
            first = out[0]
            # every member refused: that is the answer (exit 87); else the failures were of several kinds
            kind = SyncRefusedError if all(r["exitCode"] == SyncRefusedError.exit_code for r in out) else SyncError
            raise kind(f"no member could be synced with: {first['peer']}: {first['error']}"
                       + (f" (and {len(out) - 1} more)" if len(out) > 1 else ""), results=out)
        return out

    async def sync(self, vault: str | None) -> list[dict[str, Any]]:
        """Pull from and push to every reachable member of ``vault`` (or of every vault)."""
        out = []
        for name in await self._names(vault):
            for m in await self._others(name):
                peer = NodeId.from_text(m["nodeId"])
                row: dict[str, Any] = {"vault": name, "peer": str(peer)}
                try:
                    pulled = await self.pull_from(name, peer)
                    row.update(vaultId=pulled["vaultId"], action=pulled["action"],
                               conflicts=pulled.get("conflicts", []))
                    if pulled["action"] != "fast-forward":  # we may hold what it lacks: tell it
                        row["pushed"] = (await self.push(name, peer))[0]["action"]
                except AgentLockedError:
                    raise
                except PolykeyError as e:
                    row.update(action="failed", error=_why(e))
                out.append(row)
        return out

    # -- scheduled pulls (announces, anti-entropy) -------------------------------------------

    def _schedule(self, vid: str, peer: NodeId, head: str) -> None:
        key = (vid, peer)
        found = self._scheduled.get(key)
        if found is not None:
            found.head, found.again = head, True  # debounced: one more pull after the running one
            return
        if len(self._scheduled) >= MAX_SCHEDULED:
            log.info("too many pulls scheduled; vault %s from %s is left to anti-entropy", vid, peer)
            return
        self._scheduled[key] = _Scheduled(head)
        if not self._spawn(self._run_scheduled(key), f"pull of {vid} from {peer}"):
            del self._scheduled[key]

    async def _run_scheduled(self, key: tuple[str, NodeId]) -> None:
        vid, peer = key
        try:
            while True:
                job = self._scheduled[key]
                job.again = False
                try:
                    await self.pull_from(vid, peer, head=job.head, background=True)
                except PolykeyError:
                    self._offline(peer)
                    return
                if not job.again:
                    return
        finally:
            self._scheduled.pop(key, None)

    def _offline(self, peer: NodeId) -> None:
        b = self._backoff.setdefault(peer, _Backoff())
        b.delay = BACKOFF[0] if not b.delay else min(BACKOFF[1], b.delay * 2)
        b.until = self._clock() + b.delay

    def _online(self, peer: NodeId) -> None:
        self._backoff.pop(peer, None)

    def _backing_off(self, peer: NodeId) -> bool:
        b = self._backoff.get(peer)
        return b is not None and b.until > self._clock()

    # -- announces after local writes ------------------------------------------------------------

    def _written(self, vault_id: str) -> None:
        self._announce.add(vault_id)
        if self._wake is not None:
            self._wake.set()

    async def _announce_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            await asyncio.sleep(ANNOUNCE_DEBOUNCE)
            self._wake.clear()
            pending, self._announce = self._announce, set()
            if self._agent.locked or not self._net.running:
                continue
            for vid in pending:
                self._spawn(self._announce_vault(vid), f"announce of {vid}")

    async def _announce_vault(self, vid: str) -> None:
        svc = self._service()
        info = await self._blocking(svc.sync_info, vid)
        peers = [NodeId.from_text(m["nodeId"]) for m in await self._others(vid, replicas=False)]

        async def one(peer: NodeId) -> None:
            if self._backing_off(peer):
                return
            try:
                async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                    await self._announce_to(peer, vid, info["head"])
                self._online(peer)
            except (PolykeyError, TimeoutError) as e:
                log.debug("announce of %s to %s failed: %s", vid, peer, _why(e))
                self._offline(peer)

        await asyncio.gather(*(one(p) for p in peers))

    # -- anti-entropy ------------------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval * (1 + random.uniform(-JITTER, JITTER)))
            if self._agent.locked or not self._net.running:
                continue
            try:
                await self.anti_entropy()
            except AgentLockedError:
                pass
            except Exception as e:  # noqa: BLE001 - the next pass tries again
                log.warning("anti-entropy pass failed: %s", _why(e))

    async def anti_entropy(self) -> int:
        """Ask every member's heads of every vault; pull what differs, announce where they are behind.
        Returns how many pulls or announces it started."""
        svc = self._service()
        by_peer: dict[NodeId, list[str]] = {}
        ours: dict[str, str] = {}
        for row in await self._blocking(svc.list_vaults):
            if row.get("state") != "ok":
                continue
            vid = row["vaultId"]
            try:
                ours[vid] = (await self._blocking(svc.sync_info, vid))["head"]
                members = await self._others(vid, replicas=False)
            except PolykeyError:
                continue
            for m in members:
                by_peer.setdefault(NodeId.from_text(m["nodeId"]), []).append(vid)
        started = 0

        async def one(peer: NodeId, vids: list[str]) -> int:
            if self._backing_off(peer):
                return 0
            try:
                async with asyncio.timeout(ANNOUNCE_TIMEOUT * 2):
                    channel = await self._reach(peer)
                    heads = sm.check_heads_answer(await channel.request("vaults.heads", sm.heads_body(vids)), vids)
            except (PolykeyError, TimeoutError) as e:
                log.debug("anti-entropy: %s unreachable: %s", peer, _why(e))
                self._offline(peer)
                return 0
            self._online(peer)
            n = 0
            for vid, theirs in heads.items():
                if theirs == ours.get(vid):
                    continue
                if await self._blocking(svc.knows, vid, theirs):
                    self._spawn(self._announce_to(peer, vid, ours[vid]), f"announce of {vid} to {peer}")
                else:
                    self._schedule(vid, peer, theirs)
                n += 1
            return n

        for count in await asyncio.gather(*(one(p, v) for p, v in by_peer.items())):
            started += count
        return started

    async def _announce_to(self, peer: NodeId, vid: str, head: str) -> None:
        """Tell ``peer`` this node holds ``head`` of ``vid`` (it fetches if it lacks it)."""
        channel = await self._reach(peer)
        sm.check_announce_answer(await channel.request(
            "vaults.announce", sm.announce_body(sm.Announce(vid, head, False))))

    # -- sharing -------------------------------------------------------------------------------------

    async def share(self, vault: str, node: NodeId, role: str) -> dict[str, Any]:
        """Add ``node`` as a member (one signed commit), then invite it (queued if unreachable)."""
        svc = self._service()
        vid = await self._blocking(svc.vault_id, vault)
        async with self._agent.vault_locks.writing(vid):
            out: dict[str, Any] = await self._blocking(svc.share_vault, vault, str(node), role)
        if out.get("changed") != "unchanged":
            self._agent.vault_written(vid)
        info = await self._blocking(svc.sync_info, vault)
        invite = sm.Invite(info["vaultId"], info["root"], info["head"], out.get("role", role), info["name"])
        out["vaultId"] = info["vaultId"]
        try:
            delivered = await self._send_invite(invite, node)
            out.update(invite="sent", autoAccept=delivered["autoAccept"])
        except PolykeyError as e:
            self._queue_invite(invite, node, _why(e))
            out.update(invite="queued", error=_why(e))
        return out

    async def _send_invite(self, invite: sm.Invite, node: NodeId) -> dict[str, Any]:
        async with asyncio.timeout(ANNOUNCE_TIMEOUT * 2):
            channel = await self._reach(node)
            return sm.check_invite_answer(await channel.request("vaults.invite", sm.invite_body(invite)))

    def _queue_invite(self, invite: sm.Invite, node: NodeId, error: str) -> None:
        key = (invite.vault_id, node)
        if key not in self._invites and len(self._invites) >= MAX_QUEUED_INVITES:
            oldest = min(self._invites, key=lambda k: self._invites[k].due)
            del self._invites[oldest]
        self._invites[key] = _QueuedInvite(invite, node, self._clock() + INVITE_BACKOFF[0], INVITE_BACKOFF[0], error)
        log.info("invite to vault %s for %s queued: %s", invite.vault_id, node, error)

    async def _invite_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._agent.locked or not self._net.running or not self._invites:
                continue
            now = self._clock()
            for key, q in list(self._invites.items()):
                if q.due > now:
                    continue
                try:
                    svc = self._service()
                    members = {m["nodeId"] for m in await self._blocking(svc.members, q.invite.vault_id)}
                    if str(q.node) not in members:
                        self._invites.pop(key, None)  # unshared meanwhile
                        continue
                    info = await self._blocking(svc.sync_info, q.invite.vault_id)
                    invite = sm.Invite(q.invite.vault_id, info["root"], info["head"], q.invite.role, info["name"])
                    await self._send_invite(invite, q.node)
                    self._invites.pop(key, None)
                    log.info("queued invite to vault %s delivered to %s", q.invite.vault_id, q.node)
                except (PolykeyError, TimeoutError) as e:
                    q.delay = min(INVITE_BACKOFF[1], q.delay * 2)
                    q.due, q.error = self._clock() + q.delay, _why(e)

    def queued_invites(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [{"vaultId": q.invite.vault_id, "to": str(q.node), "role": q.invite.role, "name": q.invite.name,
                 "retryIn": max(0.0, round(q.due - now, 1)), "error": q.error} for q in self._invites.values()]

    async def unshare(self, vault: str, node: NodeId) -> dict[str, Any]:
        svc = self._service()
        vid = await self._blocking(svc.vault_id, vault)
        async with self._agent.vault_locks.writing(vid):
            out: dict[str, Any] = await self._blocking(svc.unshare_vault, vault, str(node))
        self._invites.pop((vid, node), None)
        for token in [t for t, c in self._cursors.items() if c.peer == node and c.vault_id == vid]:
            del self._cursors[token]
        self._agent.vault_written(vid)
        out["vaultId"] = vid
        return out

    # -- cloning ----------------------------------------------------------------------------------------

    async def scan(self, node: NodeId) -> list[dict[str, Any]]:
        channel = await self._reach(node)
        rows = sm.check_scan_answer(await channel.request("vaults.scan", {"v": sm.SYNC_VERSION}))
        svc = self._service()
        held = set((await self._blocking(svc.vault_names)).keys())
        return [{"vaultId": r.vault_id, "name": r.name, "role": r.role, "head": r.head, "held": r.vault_id in held}
                for r in rows]

    async def clone(self, vault: str, node: NodeId, name: str | None,
                    progress: Progress = _no_progress) -> dict[str, Any]:
        """Clone ``vault`` (a VaultId, or the name the sender gave it) from ``node``: from its invite if
        one was received, else from what ``node`` lists for us (``vaults.scan``)."""
        svc = self._service()
        invites = [i for i in await self._blocking(svc.list_invites) if i["from"] == str(node)]
        match = [i for i in invites if vault in (i["vaultId"], i["name"])]
        invited = bool(match)
        if match:
            inv = match[0]
            vid, root, invited_name = inv["vaultId"], inv["root"], inv["name"]
        else:
            channel = await self._reach(node)
            listed = sm.check_scan_answer(await channel.request("vaults.scan", {"v": sm.SYNC_VERSION}))
            found = [r for r in listed if vault in (r.vault_id, r.name)]
            if not found:
                raise VaultNotFoundError(f"node {node} shares no vault {vault!r} with this node "
                                         "(`pk vaults scan NODEID` lists what it shares)")
            vid, root, invited_name = found[0].vault_id, found[0].root, found[0].name
        return await self._clone(vid, root, node, name or invited_name, progress, invited)

    async def _clone(self, vid: str, root: str, node: NodeId, name: str, progress: Progress,
                     invited: bool = True) -> dict[str, Any]:
        try:
            return await self._clone_once(vid, root, node, name, progress, invited)
        except PolykeyError as e:
            if not isinstance(e, AgentLockedError):
                log.warning("clone of vault %s from %s failed: %s", vid, node, _why(e))
            raise

    async def _clone_once(self, vid: str, root: str, node: NodeId, name: str, progress: Progress,
                          invited: bool) -> dict[str, Any]:
        svc = self._service()
        async with self._slots:
            channel = await self._reach(node)
            heads = sm.check_heads_answer(await channel.request("vaults.heads", sm.heads_body([vid]),
                                                                timeout=self.fetch_timeout), [vid])
            head = heads.get(vid)
            if head is None:
                raise SyncRefusedError(f"node {node} does not share vault {vid} with this node")
            incoming = await self._fetch(channel, vid, head, [], progress)
            await progress({"stage": "verifying", "objects": incoming.count, "bytes": incoming.nbytes})
            async with self._agent.vault_locks.writing(None):
                out: dict[str, Any] = await self._blocking(svc.clone, vid, root, head, name, incoming, node, invited)
        await self._blocking(svc.drop_invites, vid, None)
        await self._blocking(svc.peer_seen, vid, str(node), head)
        self._links[(vid, node)] = _PeerLink(self._wall(), None, {"action": "cloned"})
        log.info("cloned vault %s from %s (%d objects)", vid, node, incoming.count)
        return out

    async def _auto_clone(self, inv: sm.Invite, sender: NodeId) -> None:
        svc = self._service()
        names = await self._blocking(svc.vault_names)
        if inv.vault_id in names:
            return
        name = inv.name if inv.name not in names.values() else f"{inv.name}-{inv.vault_id[:9]}"
        with contextlib.suppress(PolykeyError):  # _clone logged why
            await self._clone(inv.vault_id, inv.root, sender, name, _no_progress)

    # -- status -------------------------------------------------------------------------------------------

    async def status(self, vault: str | None) -> list[dict[str, Any]]:
        svc = self._service()
        out = []
        for name in await self._names(vault):
            info = await self._blocking(svc.sync_info, name)
            vid = info["vaultId"]
            seen = {p["nodeId"]: p for p in await self._blocking(svc.peer_states, name)}
            rows = []
            for m in await self._others(name):
                peer = NodeId.from_text(m["nodeId"])
                link = self._links.get((vid, peer), _PeerLink())
                rec = seen.get(m["nodeId"], {})
                theirs = rec.get("head")
                rel = await self._blocking(svc.ahead_behind, vid, theirs) if theirs else None
                state = "never synced" if theirs is None else (
                    "unknown" if rel is None else "in sync" if rel == [0, 0] else
                    "ahead" if rel[1] == 0 else "behind" if rel[0] == 0 else "diverged")
                last = link.last_sync or rec.get("lastSync") or None
                rows.append({"nodeId": m["nodeId"], "role": m["role"], "head": theirs, "state": state,
                             "ahead": None if rel is None else rel[0], "behind": None if rel is None else rel[1],
                             "lastSync": last, "lastError": link.last_error})
            queued = [q for q in self.queued_invites() if q["vaultId"] == vid]
            out.append({"name": info["name"], "vaultId": vid, "head": info["head"], "members": rows,
                        "queuedInvites": queued, "lastMerge": self._last_merge.get(vid)})
        return out


def _take_page(incoming: Incoming, objects: list[sm.PageObject]) -> None:
    for o in objects:
        if len(o) == 2:
            incoming.add(o[0], o[1])
        else:
            incoming.add_part(o[0], o[1], o[2], o[3])


def _fetch_timeout(text: str | None) -> float:
    """:data:`FETCH_TIMEOUT`, or ``PK_SYNC_FETCH_TIMEOUT`` if it is a number of seconds in (0, 300]."""
    try:
        value = float(text) if text else FETCH_TIMEOUT
    except ValueError:
        return FETCH_TIMEOUT
    return value if 0 < value <= 300 else FETCH_TIMEOUT


def _why(e: BaseException) -> str:
    if isinstance(e, PolykeyError):
        return e.message
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"internal error ({type(e).__name__})"
