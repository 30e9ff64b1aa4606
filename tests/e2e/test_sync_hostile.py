"""Bad input to sync between real agents (issue 12, "Bad input"), driven by the real `pk`.

The agents are real `python -m keynode` processes on 127.0.0.1; the ROGUE is a peer with a valid
identity that speaks the real Noise transport (tests/e2e/sync_rogue.py): it asks what it may not
have, sends malformed requests, and, once an owner made it a member, serves forged objects
(forged with real keys by the helpers of tests/unit/test_vault_transfer.py) or stalls.

Each case checks what a user would see: the exit code of `pk` (88 for a rejected transfer, 87 for
a refusal), the victim's head unchanged (`pk vaults log`), the victim still serving an honest
node afterwards, and its agent log: one line naming the rogue and the reason, no traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import ProtocolViolationError, SyncCursorError, SyncRefusedError
from polykey.ids import VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults import transfer
from polykey.vaults.format import Members
from polykey.vaults.objects import MODE_BLOB, MODE_TREE, tree_bytes
from polykey.vaults.pack import OBJ_BLOB, OBJ_COMMIT, OBJ_TREE
from polykey.vaults.vault import Vault
from polykey.wire import syncmsg as sm

from ..conftest import Node, base_env, bootstrap_node
from ..unit.test_vault_transfer import entries_of, forge_commit, forge_raw_tree, forge_secret, obj
from .agent_util import pk
from .sync_rogue import HOST, Rogue

Obj = tuple[int, bytes]


# -- nodes ---------------------------------------------------------------------------------------------


def ok(node: Node, *args: str, input: bytes | None = None) -> Any:
    r = pk(node, *args, "--format", "json", input=input)
    assert r.code == 0, f"pk {' '.join(args)}: exit {r.code}: {r.err}"
    return r.json


def start(node: Node, *args: str, env: dict[str, str] | None = None) -> int:
    """Start ``node``'s agent (anti-entropy an hour away); its peer port."""
    r = pk(node, "agent", "start", "--sync-interval", "3600", *args, "--format", "json", env=env)
    assert r.code == 0, r.err
    status = r.json
    assert isinstance(status, dict)
    return int(status["peer"]["port"])


def head(node: Node, vault: str = "prod") -> str:
    rows = ok(node, "vaults", "log", vault)
    return str(rows[0]["commit"])


class Pair:
    """Agents A (the owner of `prod`, the seed) and B, plus rogues; B joins through A."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.a = bootstrap_node(tmp, "a")
        self.a_port = start(self.a)
        self.seed = f"{self.a.node_id}@{HOST}:{self.a_port}"
        self.b = bootstrap_node(tmp, "b")
        self.b_port = start(self.b, "--seed", self.seed)
        self.rogues: list[Rogue] = []

    def rogue(self, seed: bytes, *, known_to: tuple[Node, ...] = ()) -> Rogue:
        r = Rogue(self.tmp / f"rogue-{seed[:1].hex()}", seed)
        self.rogues.append(r)
        for node in known_to:
            ok(node, "nodes", "add", r.node_id, f"{HOST}:{r.port}")
        return r

    def close(self) -> None:
        for r in self.rogues:
            r.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def put(node: Node, ref: str, value: bytes) -> None:
    r = pk(node, "secrets", "set", ref, input=value)
    assert r.code == 0, r.err


class AgentLog:
    """The lines an agent logged since the last :meth:`lines` call."""

    def __init__(self, node: Node) -> None:
        self.path = node.path / "agent.log"
        self.offset = self.path.stat().st_size

    def lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace").splitlines()

    def one_line(self, peer: str, reason: str) -> str:
        """Exactly one new line names ``peer`` (besides its connection opening and closing); it gives
        ``reason``; nothing new is a traceback."""
        new = self.lines()
        assert not any("Traceback" in line for line in new), new
        naming = [line for line in new if peer in line and not _connection_event(line)]
        assert len(naming) == 1, naming
        assert reason in naming[0], naming[0]
        return naming[0]


def _connection_event(line: str) -> bool:
    """A transport line about a connection opening or closing (not about what went over it)."""
    return " keynode.peers.transport[" in line and "connection <Connection " in line


# -- 1. serving side: a rogue asks ------------------------------------------------------------------------


def test_serving_side_gives_a_non_member_nothing_and_survives_malformed_requests(pair: Pair) -> None:
    p = pair
    ok(p.a, "vaults", "create", "prod")
    put(p.a, "prod:api/key", b"k1")
    vid = ok(p.a, "vaults", "list")[0]["vaultId"]
    before = head(p.a)
    unknown = str(VaultId(bytes(16)))
    rogue = p.rogue(b"\x51" * 32, known_to=(p.a, p.b))
    alog = AgentLog(p.a)

    def ask(method: str, body: dict[str, Any]) -> dict[str, Any]:
        return rogue.request(p.a.node_id, p.a_port, method, body)

    def refused(method: str, body: dict[str, Any], error: type[Exception] = SyncRefusedError) -> str:
        with pytest.raises(error) as info:
            ask(method, body)
        assert rogue.connected(p.a.node_id)  # that request failed, not the connection
        return str(info.value)

    # a non-member: heads and scan empty, fetch refused as for a vault that does not exist
    assert ask("vaults.heads", sm.heads_body([vid, unknown])) == {"v": 1, "heads": {}}
    assert ask("vaults.scan", {"v": 1}) == {"v": 1, "vaults": []}
    fetch = sm.fetch_body(sm.Fetch(vid, before, (), None, 1 << 20))
    not_shared = refused("vaults.fetch", fetch)
    assert refused("vaults.fetch", {**fetch, "vaultId": unknown}) == not_shared
    assert ask("vaults.announce", sm.announce_body(sm.Announce(vid, "0" * 40, True)))["action"] == "ignored"

    # malformed bodies: each fails that request only
    for method, body in (
        ("vaults.heads", {"v": 2, "vaults": [vid]}),
        ("vaults.heads", {"v": 1, "vaults": vid}),
        ("vaults.heads", {"v": 1, "vaults": [vid] * 1025}),
        ("vaults.heads", {"v": 1, "vaults": [vid], "extra": 1}),
        ("vaults.scan", {"v": "1"}),
        ("vaults.fetch", {**fetch, "haves": [before] * 65}),
        ("vaults.fetch", {**fetch, "maxBytes": 1 << 40}),
        ("vaults.fetch", {**fetch, "maxBytes": 10}),
        ("vaults.fetch", {**fetch, "want": before.upper()}),
        ("vaults.fetch", {**fetch, "cursor": 7}),
        ("vaults.fetch", {k: v for k, v in fetch.items() if k != "want"}),
        ("vaults.announce", {"v": 1, "vaultId": vid, "head": before, "wait": "yes"}),
        ("vaults.invite", {"v": 1, "vaultId": vid, "root": before, "head": before, "role": "god", "name": "x"}),
        ("vaults.invite", {"v": 1, "vaultId": vid, "root": before, "head": before, "role": "owner", "name": ""}),
    ):
        refused(method, body, ProtocolViolationError)
    assert head(p.a) == before
    assert not any("Traceback" in line for line in alog.lines())

    # an invite from a node that is not an owner: kept and shown, but its clone is rejected
    ok(p.a, "vaults", "share", "prod", rogue.node_id, "--role", "writer")
    ok(p.a, "vaults", "share", "prod", p.b.node_id, "--role", "reader")
    rogue.clone(p.a.node_id, p.a_port, "prod")
    rogue.serve_honestly()
    now = head(p.a)
    blog = AgentLog(p.b)
    sent = rogue.request(p.b.node_id, p.b_port, "vaults.invite", sm.invite_body(
        sm.Invite(vid, ok(p.a, "vaults", "log", "prod")[-1]["commit"], now, "owner", "prod")))
    assert sent["stored"] is True and sent["autoAccept"] is False
    invites = ok(p.b, "vaults", "invites")["received"]
    assert {(i["from"], i["name"]) for i in invites} == {(rogue.node_id, "prod"), (p.a.node_id, "prod")}
    blog.lines()  # the invite's own line ("invite to vault ... from ...")
    r = pk(p.b, "vaults", "clone", "prod", rogue.node_id)
    assert r.code == 88 and "not an owner" in r.err, (r.code, r.err)
    assert ok(p.b, "vaults", "list") == []
    assert not [e for e in os.listdir(p.b.path / "vaults") if e.startswith((".incoming", ".tmp")) or e.endswith(".git")]
    blog.one_line(rogue.node_id, "not an owner")

    # an invite pinning another root: the history sent does not have it
    rogue.request(p.b.node_id, p.b_port, "vaults.invite", sm.invite_body(sm.Invite(vid, now, now, "owner", "prod")))
    blog.lines()
    r = pk(p.b, "vaults", "clone", "prod", rogue.node_id)
    assert r.code == 88 and "root" in r.err, (r.code, r.err)
    blog.one_line(rogue.node_id, "root")
    # the right VaultId and root, but the objects of another vault: its .pk/vault names that one
    other = rogue.svc.create_vault("other")
    ov = rogue.svc._vault("other")  # noqa: SLF001 - the rogue sends its real other vault
    objects = [(kind, transfer.read_object(ov, kind, oid)) for kind, oid in transfer.plan(ov, other["commit"], [])]
    rogue.serve_forged(vid, other["commit"], objects)
    rogue.request(p.b.node_id, p.b_port, "vaults.invite", sm.invite_body(
        sm.Invite(vid, ok(p.a, "vaults", "log", "prod")[-1]["commit"], other["commit"], "owner", "prod")))
    blog.lines()
    r = pk(p.b, "vaults", "clone", "prod", rogue.node_id)
    assert r.code == 88 and "another vault" in r.err, (r.code, r.err)
    blog.one_line(rogue.node_id, "another vault")
    assert ok(p.b, "vaults", "list") == []
    rogue.serve_honestly()

    # cursors: another peer's, an unknown (expired) one
    put(p.a, "prod:big", os.urandom(200_000))  # in parts of 64 KiB: a transfer of several pages
    big = head(p.a)
    first = ask("vaults.fetch", {**fetch, "want": big, "maxBytes": 64 * 1024})
    cursor = first["cursor"]
    assert isinstance(cursor, str) and first["objects"]
    other = p.rogue(b"\x52" * 32)
    with pytest.raises(SyncCursorError):
        other.request(p.a.node_id, p.a_port, "vaults.fetch", {**fetch, "want": big, "cursor": cursor, "maxBytes": 65536})
    refused("vaults.fetch", {**fetch, "want": big, "cursor": "f" * 32, "maxBytes": 65536}, SyncCursorError)
    # the rogue's own cursor still works...
    assert ask("vaults.fetch", {**fetch, "want": big, "cursor": cursor, "maxBytes": 65536})["objects"]

    # ...until it is removed: then its cursor, fetch, heads and scan give nothing
    ok(p.a, "vaults", "unshare", "prod", rogue.node_id, "--yes")
    refused("vaults.fetch", {**fetch, "want": big, "cursor": cursor, "maxBytes": 65536}, SyncCursorError)
    assert refused("vaults.fetch", {**fetch, "want": big}) == not_shared
    assert ask("vaults.heads", sm.heads_body([vid])) == {"v": 1, "heads": {}}
    assert ask("vaults.scan", {"v": 1}) == {"v": 1, "vaults": []}

    # A still serves an honest member; nothing a rogue did is in A's log as a traceback
    owner_head = head(p.a)
    ok(p.b, "vaults", "clone", "prod", p.a.node_id)
    assert head(p.b) == owner_head == head(p.a)
    assert not any("Traceback" in line for line in alog.lines())


# -- 2. receiving side: a member serves forged objects ------------------------------------------------------


def _writer_makes_itself_owner(v: Vault, me: KeyPair) -> tuple[str, list[Obj]]:
    snap = v.snapshot()
    roles = dict(snap.members.roles)
    roles[me.node_id] = "owner"
    members_id, members = obj(OBJ_BLOB, Members(tuple(sorted(roles.items()))).encode())
    pk_entry = v.repo.entry(snap.tree, ".pk")
    assert pk_entry is not None
    pk_entries = entries_of(v, pk_entry.oid)
    pk_entries["members"] = (MODE_BLOB, bytes.fromhex(members_id))
    pk_id, pk_tree = obj(OBJ_TREE, tree_bytes(pk_entries))
    root = entries_of(v, snap.tree)
    root[".pk"] = (MODE_TREE, bytes.fromhex(pk_id))
    root_id, root_tree = obj(OBJ_TREE, tree_bytes(root))
    cid, commit = forge_commit(v, root_id, [snap.commit], me)
    return cid, [commit, root_tree, pk_tree, members]


def _altered_blob(v: Vault, me: KeyPair) -> tuple[str, list[Obj]]:
    cid, objects = forge_secret(v, me)
    t, data = objects[2]
    return cid, [objects[0], objects[1], (t, data[:-1] + bytes([data[-1] ^ 1]))]


def forgeries(v: Vault, writer: KeyPair, reader: KeyPair, stranger: KeyPair) -> Iterator[tuple[str, str, list[Obj], str]]:
    """(case, head, objects, the reason the victim must give) for each forged transfer."""
    snap = v.snapshot()
    cid, objects = _altered_blob(v, writer)
    yield "hash mismatch", cid, objects, "was not sent"
    cid, objects = forge_secret(v, writer)
    yield "unknown object type", cid, [(7, b"x"), *objects], "type"
    yield "oversized object", cid, [(OBJ_COMMIT, b"x" * (64 * 1024 + 1))], "larger than"
    yield "extra objects", cid, [*objects, (OBJ_BLOB, b"unrelated")], "extra objects"
    yield "missing objects", cid, objects[:2], "incomplete"
    for label, entry, reason in (
        ("symlink", b"120000 " + b"a" * 26 + b"\0", "mode 120000"),
        ("gitlink", b"160000 " + b"a" * 26 + b"\0", "mode 160000"),
        ("non-canonical name", b"100644 zz-Plain-Name\0", "not a canonical vault name"),
    ):
        cid, objects = forge_raw_tree(v, entry + bytes(20), writer)
        yield label, cid, objects, reason
    cid, objects = forge_secret(v, None)
    yield "unsigned commit", cid, objects, "not signed"
    cid, objects = forge_secret(v, stranger)
    yield "non-member signer", cid, objects, "not a member"
    cid, objects = forge_secret(v, reader)
    yield "a reader's write", cid, objects, "a reader"
    cid, objects = _writer_makes_itself_owner(v, writer)
    yield "a writer changing .pk", cid, objects, "not an owner"
    cid, commit = forge_commit(v, snap.tree, [snap.commit], writer, when=int(time.time()) + 3600)
    yield "future timestamp", cid, [commit], "ahead of this node's clock"
    cid, commit = forge_commit(v, snap.tree, [], writer)
    yield "second root", cid, [commit], "another history"


def test_forged_transfers_from_a_member_are_rejected_and_change_nothing(pair: Pair) -> None:
    p = pair
    rogue = p.rogue(b"\x61" * 32, known_to=(p.a, p.b))
    reader = KeyPair.from_seed(b"\x62" * 32)
    stranger = p.rogue(b"\x63" * 32, known_to=(p.b,))  # a valid identity, never a member
    ok(p.a, "vaults", "create", "prod")
    put(p.a, "prod:api/key", b"k1")
    ok(p.a, "vaults", "share", "prod", rogue.node_id, "--role", "writer")
    ok(p.a, "vaults", "share", "prod", str(reader.node_id), "--role", "reader")
    ok(p.a, "vaults", "share", "prod", p.b.node_id, "--role", "writer")
    ok(p.b, "vaults", "clone", "prod", p.a.node_id)
    vid = rogue.clone(p.a.node_id, p.a_port, "prod")
    before = head(p.b)
    assert head(p.a) == before
    v = rogue.svc._vault("prod")  # noqa: SLF001 - the rogue forges on its real copy
    blog = AgentLog(p.b)
    cases = list(forgeries(v, rogue.kp, reader, stranger.kp))
    for case, forged, objects, reason in cases:
        rogue.serve_forged(vid, forged, objects)
        r = pk(p.b, "vaults", "pull", "prod", rogue.node_id)
        assert r.code == 88, (case, r.code, r.err)
        assert reason in r.err and r.err.count("\n") == 1, (case, r.err)
        blog.one_line(rogue.node_id, reason)
    assert head(p.b) == before  # (no case moved it: a head never comes back)

    # a forging peer that is not a member gives nothing: told explicitly, it is not even asked (87)
    cid, objects = forge_secret(v, stranger.kp)
    stranger.serve_forged(vid, cid, objects)
    asked = len(stranger.seen)
    r = pk(p.b, "vaults", "pull", "prod", stranger.node_id)
    assert r.code == 87 and "not a member" in r.err, (r.code, r.err)
    assert len(stranger.seen) == asked
    blog.one_line(stranger.node_id, "not a member")
    # ...and a pull from every member never asks it
    asked = len(stranger.seen)
    assert ok(p.b, "vaults", "pull", "prod")[0]["peer"] == p.a.node_id
    assert len(stranger.seen) == asked

    # B still holds its verified head, verifies, and serves an honest node
    assert head(p.b) == before and ok(p.b, "vaults", "verify", "prod")["ok"] is True
    put(p.a, "prod:api/key", b"k2")
    ok(p.b, "vaults", "pull", "prod", p.a.node_id)
    put(p.b, "prod:from-b", b"b")
    ok(p.a, "vaults", "pull", "prod", p.b.node_id)
    assert head(p.a) == head(p.b)
    assert not any("Traceback" in line for line in blog.lines())


# -- 3. a member that stalls mid-transfer --------------------------------------------------------------------


def test_a_member_stalling_mid_transfer_times_out_and_the_next_member_is_used(pair: Pair) -> None:
    p = pair
    seed = next(bytes([i]) * 32 for i in range(1, 256)
                if str(KeyPair.from_seed(bytes([i]) * 32).node_id) < p.a.node_id)
    rogue = p.rogue(seed, known_to=(p.a, p.b))  # an owner listed before A: tried first
    ok(p.a, "vaults", "create", "prod")
    put(p.a, "prod:api/key", b"k1")
    ok(p.a, "vaults", "share", "prod", rogue.node_id, "--role", "owner")
    ok(p.a, "vaults", "share", "prod", p.b.node_id, "--role", "writer")
    ok(p.b, "vaults", "clone", "prod", p.a.node_id)
    rogue.clone(p.a.node_id, p.a_port, "prod")
    assert ok(p.b, "vaults", "members", "prod")[0]["nodeId"] == rogue.node_id

    # B down while A writes a secret larger than one page: B must fetch it in several pages
    ok(p.b, "agent", "stop")
    put(p.a, "prod:big", os.urandom(1_500_000))
    rogue.pull(p.a.node_id, p.a_port, "prod")
    rogue.serve_then_stall()
    p.b_port = start(p.b, "--seed", p.seed, env=base_env(PK_SYNC_FETCH_TIMEOUT="2"))
    ok(p.b, "nodes", "add", rogue.node_id, f"{HOST}:{rogue.port}")
    blog = AgentLog(p.b)

    started = time.monotonic()
    results = ok(p.b, "vaults", "pull", "prod")
    assert time.monotonic() - started < 20
    assert rogue.stalled.is_set()
    by_peer = {row["peer"]: row for row in results}
    assert by_peer[rogue.node_id]["action"] == "failed" and "within 2s" in by_peer[rogue.node_id]["error"]
    assert by_peer[p.a.node_id]["action"] == "fast-forward"
    assert head(p.b) == head(p.a)
    blog.one_line(rogue.node_id, "within 2s")

    # told to pull from the staller alone (a head of its own, announced to nobody): it fails, nothing changes
    rogue.svc.set_secret("prod", "api/key", b"k2")
    rogue.serve["vaults.fetch"] = _stall_all
    blog = AgentLog(p.b)
    kept = head(p.b)
    r = pk(p.b, "vaults", "pull", "prod", rogue.node_id)
    assert r.code == 75 and "within 2s" in r.err, (r.code, r.err)
    assert head(p.b) == kept
    blog.one_line(rogue.node_id, "within 2s")

    # an owner's epoch going down: a valid share and unshare (epoch 0 -> 1), then a commit by the
    # same owner whose .pk is epoch 0's again
    v = rogue.svc._vault("prod")  # noqa: SLF001 - the rogue forges on its real copy
    old_pk = v.repo.entry(v.snapshot().tree, ".pk")
    assert old_pk is not None
    stranger = str(KeyPair.from_seed(b"\x71" * 32).node_id)
    rogue.svc.share_vault("prod", stranger, "reader")
    rogue.svc.unshare_vault("prod", stranger)
    snap = v.snapshot()
    assert snap.info.epoch == 1
    entries = entries_of(v, snap.tree)
    entries[".pk"] = (MODE_TREE, bytes.fromhex(old_pk.oid))
    tree_id, tree = obj(OBJ_TREE, tree_bytes(entries))
    forged, commit = forge_commit(v, tree_id, [snap.commit], rogue.kp)
    objects = [(t, transfer.read_object(v, t, oid)) for t, oid in transfer.plan(v, snap.commit, [kept])]
    rogue.serve_forged(str(v.vault_id), forged, [commit, tree, *objects])
    r = pk(p.b, "vaults", "pull", "prod", rogue.node_id)
    assert r.code == 88 and "goes down" in r.err, (r.code, r.err)
    assert head(p.b) == kept
    blog.one_line(rogue.node_id, "goes down")
    ok(p.b, "vaults", "pull", "prod", p.a.node_id)  # and B still syncs with an honest member


async def _stall_all(_peer: object, _body: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    await asyncio.Event().wait()
    raise AssertionError("unreachable")
