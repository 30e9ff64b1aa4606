"""Sharing and sync between real agents on 127.0.0.1, driven by the real `pk` (issue 12).

Each test bootstraps its own nodes and starts their agents (A is the seed the others join
through); what it asserts on is set up in the test. Waits are bounded conditions, never sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Node, Result, agent_pid, base_env, bootstrap_node, pk_executable
from .agent_util import pk, wait_for

HOST = "127.0.0.1"


def start(node: Node, *args: str, interval: float = 3600) -> dict[str, Any]:
    r = pk(node, "agent", "start", "--sync-interval", f"{interval:g}", *args, "--format", "json")
    assert r.code == 0, r.err
    status = r.json
    assert isinstance(status, dict)
    return status


def ok(node: Node, *args: str, input: bytes | None = None, timeout: float = 60) -> Any:
    r = pk(node, *args, "--format", "json", input=input, timeout=timeout)
    assert r.code == 0, f"pk {' '.join(args)}: exit {r.code}: {r.err}"
    return r.json


def put(node: Node, ref: str, value: bytes) -> None:
    r = pk(node, "secrets", "set", ref, input=value)
    assert r.code == 0, r.err


def get(node: Node, ref: str) -> bytes | None:
    r = pk(node, "secrets", "get", ref)
    return r.out if r.code == 0 else None


def log(node: Node, vault: str) -> list[dict[str, Any]]:
    rows = ok(node, "vaults", "log", vault)
    assert isinstance(rows, list)
    return rows


def stop(node: Node) -> None:
    r = pk(node, "agent", "stop", password=False)
    assert r.code == 0, r.err


class Trio:
    """Nodes a, b, c (and more on demand); a is the seed."""

    def __init__(self, tmp: Path, interval: float) -> None:
        self.tmp = tmp
        self.interval = interval
        self.a = bootstrap_node(tmp, "a")
        status = start(self.a, interval=interval)
        self.seed = f"{self.a.node_id}@{HOST}:{status['peer']['port']}"
        self.b = self.join("b")
        self.c = self.join("c")

    def join(self, name: str) -> Node:
        node = bootstrap_node(self.tmp, name)
        start(node, "--seed", self.seed, interval=self.interval)
        return node

    def restart(self, node: Node, *args: str) -> dict[str, Any]:
        if node is self.a:
            return start(node, *args, interval=self.interval)
        return start(node, "--seed", self.seed, *args, interval=self.interval)


@pytest.fixture
def trio(tmp_path: Path) -> Trio:
    return Trio(tmp_path, 3600)  # anti-entropy out of the way: each test syncs explicitly or by announce


def shared(t: Trio, role: str = "writer", to: Node | None = None) -> None:
    """Vault `prod` on a with api/key, shared with `to` (b) and cloned there."""
    to = to or t.b
    ok(t.a, "vaults", "create", "prod")
    put(t.a, "prod:api/key", b"k1")
    out = ok(t.a, "vaults", "share", "prod", to.node_id, "--role", role)
    assert out["invite"] == "sent" and out["role"] == role
    ok(to, "vaults", "clone", "prod", t.a.node_id)


def test_share_invite_clone_read_and_pull_back(trio: Trio) -> None:
    t = trio
    ok(t.a, "vaults", "create", "prod")
    put(t.a, "prod:api/key", b"k1")
    put(t.a, "prod:db/password", b"pw")
    shared_out = ok(t.a, "vaults", "share", "prod", t.b.node_id, "--role", "writer")
    assert shared_out["changed"] == "added" and shared_out["invite"] == "sent", shared_out

    invites = ok(t.b, "vaults", "invites")["received"]
    assert [(i["name"], i["from"], i["role"]) for i in invites] == [("prod", t.a.node_id, "writer")]
    listed = ok(t.b, "vaults", "scan", t.a.node_id)
    assert [(r["name"], r["role"], r["held"]) for r in listed] == [("prod", "writer", False)]

    cloned = ok(t.b, "vaults", "clone", "prod", t.a.node_id)
    assert cloned["name"] == "prod"
    assert get(t.b, "prod:api/key") == b"k1" and get(t.b, "prod:db/password") == b"pw"
    assert log(t.b, "prod") == log(t.a, "prod")
    members = {m["nodeId"]: m["role"] for m in ok(t.b, "vaults", "members", "prod")}
    assert members == {t.a.node_id: "owner", t.b.node_id: "writer"}

    # a writer's change, pulled back by the owner: identical logs on both nodes
    put(t.b, "prod:api/key", b"k2")
    pulled = ok(t.a, "vaults", "pull", "prod", t.b.node_id)
    assert pulled[0]["action"] in ("fast-forward", "up-to-date")  # the announce may have won the race
    assert get(t.a, "prod:api/key") == b"k2"
    assert log(t.a, "prod") == log(t.b, "prod")
    again = ok(t.a, "vaults", "pull", "prod", t.b.node_id)  # pulling twice is fine
    assert again[0]["action"] == "up-to-date"

    status = ok(t.a, "vaults", "status", "prod")
    row = status[0]["members"][0]
    assert row["nodeId"] == t.b.node_id and row["state"] == "in sync" and row["lastSync"]
    for node in (t.a, t.b):
        fsck = subprocess.run(["git", "fsck", "--strict"], cwd=_repo(node, "prod"), capture_output=True)
        assert fsck.returncode == 0, fsck.stderr


def test_clone_errors(trio: Trio) -> None:
    t = trio
    shared(t, "reader")
    held = pk(t.b, "vaults", "clone", "prod", t.a.node_id, "again")
    assert held.code == 73 and "already" in held.err
    unknown = pk(t.c, "vaults", "clone", "prod", t.a.node_id)
    assert unknown.code == 80 and "shares no vault" in unknown.err
    reader_write = pk(t.b, "secrets", "set", "prod:x", input=b"v")
    assert reader_write.code == 77


def test_push_then_automatic_sync(trio: Trio) -> None:
    t = trio
    shared(t, "writer")
    put(t.a, "prod:api/key", b"k2")  # announced: b fetches on its own
    wait_for(lambda: get(t.b, "prod:api/key") == b"k2", 30, "b to receive a's write by announce")
    put(t.b, "prod:other", b"o")
    wait_for(lambda: get(t.a, "prod:other") == b"o", 30, "a to receive b's write by announce")
    pushed = ok(t.a, "vaults", "push", "prod", t.b.node_id)
    assert pushed[0]["action"] == "up-to-date"


def test_concurrent_edits_merge_with_last_writer_winning(trio: Trio) -> None:
    t = trio
    shared(t, "writer")
    put(t.a, "prod:same", b"base")
    ok(t.b, "vaults", "pull", "prod", t.a.node_id)
    stop(t.b)  # b offline: a's writes cannot reach it
    put(t.a, "prod:only-a", b"a")
    put(t.a, "prod:same", b"from-a")
    put(t.a, "prod:gone", b"x")
    stop(t.a)
    t.restart(t.b)
    put(t.b, "prod:only-b", b"b")
    put(t.b, "prod:same", b"from-b")
    t.restart(t.a)
    merged = ok(t.b, "vaults", "pull", "prod", t.a.node_id)[0]
    assert merged["action"] in ("merged", "adopted", "fast-forward")
    ok(t.a, "vaults", "pull", "prod", t.b.node_id)
    ok(t.b, "vaults", "pull", "prod", t.a.node_id)
    for node in (t.a, t.b):
        assert get(node, "prod:only-a") == b"a" and get(node, "prod:only-b") == b"b"
    assert get(t.a, "prod:same") == get(t.b, "prod:same")
    assert log(t.a, "prod")[0]["commit"] == log(t.b, "prod")[0]["commit"]
    # the later write (commit time, then NodeId) won; the other value stays in history
    history = ok(t.a, "secrets", "history", "prod:same")
    values = {get(t.a, f"prod:same") for _ in [0]}
    assert values <= {b"from-a", b"from-b"}
    loser = b"from-a" if get(t.a, "prod:same") == b"from-b" else b"from-b"
    old = [pk(t.a, "secrets", "get", "prod:same", "--commit", h["commit"]).out for h in history]
    assert loser in old
    if merged["action"] == "merged":
        assert [c["path"] for c in merged["conflicts"]] == ["same"]


def test_unshare_refuses_the_removed_node_and_rekeys(trio: Trio) -> None:
    t = trio
    shared(t, "writer")
    put(t.a, "prod:db/password", b"pw")
    ok(t.b, "vaults", "pull", "prod", t.a.node_id)
    out = ok(t.a, "vaults", "unshare", "prod", t.b.node_id, "--yes")
    assert out["rotate"] == ["api/key", "db/password"] and out["epoch"] == 1
    human = pk(t.a, "vaults", "unshare", "prod", t.a.node_id, "--yes")
    assert human.code == 64 and "last owner" in human.err
    refused = pk(t.b, "vaults", "pull", "prod", t.a.node_id)
    assert refused.code == 87, refused.err
    assert get(t.b, "prod:api/key") == b"k1"  # what it already had stays readable to it
    members = {m["nodeId"] for m in ok(t.a, "vaults", "members", "prod")}
    assert members == {t.a.node_id}
    assert ok(t.a, "vaults", "verify", "prod")["ok"] is True


def test_removed_members_fork_relayed_by_a_third_member_never_reaches_the_owner(trio: Trio) -> None:
    t = trio
    shared(t, "writer", t.b)
    ok(t.a, "vaults", "share", "prod", t.c.node_id, "--role", "writer")
    ok(t.c, "vaults", "clone", "prod", t.a.node_id)
    ok(t.b, "vaults", "pull", "prod", t.a.node_id)
    stop(t.b)
    stop(t.c)
    ok(t.a, "vaults", "unshare", "prod", t.b.node_id, "--yes")
    owner_head = log(t.a, "prod")[0]["commit"]
    # b, not knowing it was removed, writes on its old parent; c (offline when a announced the
    # removal, and with anti-entropy an hour away) takes it
    t.restart(t.b)
    t.restart(t.c)
    put(t.b, "prod:api/key", b"stolen")
    fork = log(t.b, "prod")[0]["commit"]
    ok(t.c, "vaults", "pull", "prod", t.b.node_id)
    assert log(t.c, "prod")[0]["commit"] == fork
    put(t.c, "prod:c-own", b"c")  # c's own change, on top of the removed member's commit
    relayed = ok(t.a, "vaults", "pull", "prod", t.c.node_id)[0]
    assert relayed["action"] == "kept" and fork in relayed["dropped"]
    assert fork not in {row["commit"] for row in log(t.a, "prod")}
    assert log(t.a, "prod")[0]["commit"] == owner_head
    rebased = ok(t.c, "vaults", "pull", "prod", t.a.node_id)[0]
    assert rebased["action"] == "rebased" and rebased["reapplied"] == 1
    assert get(t.c, "prod:api/key") == b"k1" and get(t.c, "prod:c-own") == b"c"
    assert fork not in {row["commit"] for row in log(t.c, "prod")}


def test_missed_announce_is_caught_by_anti_entropy(tmp_path: Path) -> None:
    t = Trio(tmp_path, 1)
    shared(t, "writer")
    stop(t.b)
    put(t.a, "prod:api/key", b"while-b-was-down")  # its announce reaches nobody
    t.restart(t.b)
    wait_for(lambda: get(t.b, "prod:api/key") == b"while-b-was-down", 60, "anti-entropy to bring a's write to b")


def test_node_restarted_on_another_port_keeps_syncing(trio: Trio) -> None:
    t = trio
    shared(t, "writer")
    before = ok(t.a, "agent", "status")["peer"]["port"]
    stop(t.a)
    after = t.restart(t.a, "--port", "0")["peer"]["port"]
    assert after != before
    put(t.a, "prod:api/key", b"moved")
    wait_for(lambda: get(t.b, "prod:api/key") == b"moved", 60, "b to sync with a at its new port")


def test_machine_deploy_flow(trio: Trio) -> None:
    """docs/automation.md, "Deploying with a machine node", step by step."""
    t = trio
    human, machine = t.a, t.c
    ok(machine, "nodes", "trust", human.node_id, "--auto-accept")
    ok(human, "vaults", "create", "prod")
    put(human, "prod:api/key", b"key-1")
    ok(human, "vaults", "share", "prod", machine.node_id)
    wait_for(lambda: any(v["name"] == "prod" for v in ok(machine, "vaults", "list")), 30, "the machine to clone prod")
    run = pk(machine, "secrets", "env", "prod:api/key=API_KEY", cmd=["sh", "-c", 'printf %s "$API_KEY"'])
    assert run.code == 0 and run.out == b"key-1", run.err
    put(human, "prod:api/key", b"key-2")
    wait_for(lambda: pk(machine, "secrets", "env", "prod:api/key=API_KEY",
                        cmd=["sh", "-c", 'printf %s "$API_KEY"']).out == b"key-2", 30, "the machine to see the new key")
    ok(human, "vaults", "unshare", "prod", machine.node_id, "--yes")
    refused = pk(machine, "vaults", "pull", "prod")
    assert refused.code in (87, 65), refused.err
    assert "share" in refused.err or "refused" in refused.err or "no member" in refused.err
    # an untrusted sender's invite is kept and shown, never acted on
    ok(t.b, "vaults", "create", "other")
    ok(t.b, "vaults", "share", "other", machine.node_id)
    invites = ok(machine, "vaults", "invites")["received"]
    assert any(i["name"] == "other" and i["from"] == t.b.node_id for i in invites)
    assert not any(v["name"] == "other" for v in ok(machine, "vaults", "list"))


def _kill_when_receiving(node: Node, args: list[str]) -> None:
    """Run `pk ARGS --format json` on ``node`` and kill -9 its agent at the first progress event."""
    proc = subprocess.Popen([pk_executable(), *args, "--format", "json", "--node-path", str(node.path),
                             "--password-file", str(node.password_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env())
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith(b"{") and "progress" in json.loads(line):
                pid = agent_pid(node.path)
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                break
        else:
            raise AssertionError("no progress event before the command ended")
    finally:
        proc.kill()
        proc.wait(10)


def _bulk(n: int) -> bytes:
    """``n`` secrets of 1,200 bytes, 100 to a directory, as the JSON `pk secrets import` reads."""
    tree: dict[str, dict[str, str]] = {}
    for i in range(n):
        tree.setdefault(f"d{i // 100}", {})[f"s{i}"] = os.urandom(600).hex()
    return json.dumps(tree).encode()


def _repo(node: Node, vault: str) -> Path:
    vid = ok(node, "vaults", "list")
    found = [v["vaultId"] for v in vid if v["name"] == vault]
    return node.path / "vaults" / f"{found[0]}.git"


def test_kill_9_during_a_clone_leaves_no_vault(trio: Trio) -> None:
    t = trio
    ok(t.a, "vaults", "create", "big")
    r = pk(t.a, "secrets", "import", "big", "-", "--format", "json", input=_bulk(4000))
    assert r.code == 0, r.err
    ok(t.a, "vaults", "share", "big", t.b.node_id)
    _kill_when_receiving(t.b, ["vaults", "clone", "big", t.a.node_id])
    wait_for(lambda: agent_pid(t.b.path) is None, 15, "the killed agent to be gone")
    t.restart(t.b)
    assert not any(v["name"] == "big" for v in ok(t.b, "vaults", "list"))
    assert not [p for p in (t.b.path / "vaults").iterdir() if p.name.startswith((".incoming", ".tmp"))]
    ok(t.b, "vaults", "clone", "big", t.a.node_id)  # and it works afterwards
    assert log(t.b, "big") == log(t.a, "big")


def test_kill_9_during_a_pull_keeps_the_old_head(trio: Trio) -> None:
    t = trio
    shared(t, "reader")
    stop(t.b)
    old = log(t.a, "prod")[0]["commit"]
    r = pk(t.a, "secrets", "import", "prod", "-", "--format", "json", input=_bulk(4000))
    assert r.code == 0, r.err
    t.restart(t.b)
    _kill_when_receiving(t.b, ["vaults", "pull", "prod", t.a.node_id])
    wait_for(lambda: agent_pid(t.b.path) is None, 15, "the killed agent to be gone")
    t.restart(t.b)
    assert log(t.b, "prod")[0]["commit"] == old
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=_repo(t.b, "prod"), capture_output=True)
    assert fsck.returncode == 0, fsck.stderr
    ok(t.b, "vaults", "pull", "prod", t.a.node_id)
    assert log(t.b, "prod")[0]["commit"] == log(t.a, "prod")[0]["commit"]


def test_bad_arguments_are_one_line_errors(trio: Trio) -> None:
    t = trio
    ok(t.a, "vaults", "create", "prod")
    for args, code in (
        (["vaults", "share", "prod", "vnotanode"], 64),
        (["vaults", "share", "nope", t.b.node_id], 80),
        (["vaults", "share", "prod", t.a.node_id], 64),
        (["vaults", "pull", "prod"], 64),  # no other member
        (["vaults", "unshare", "prod", t.b.node_id, "--yes"], 64),  # not a member
        (["nodes", "trust", t.a.node_id], 64),  # itself
    ):
        r: Result = pk(t.a, *args)
        assert r.code == code, (args, r.code, r.err)
        assert r.err.count("\n") == 1 and r.err.startswith("pk: "), r.err


def test_invite_to_an_offline_node_is_queued_then_delivered(trio: Trio) -> None:
    t = trio
    ok(t.a, "vaults", "create", "prod")
    stop(t.c)
    out = ok(t.a, "vaults", "share", "prod", t.c.node_id)
    assert out["invite"] == "queued" and out["error"]
    human = pk(t.a, "vaults", "share", "prod", t.c.node_id, "--role", "writer")
    assert human.code == 0 and "invite queued" in human.text and "retries" in human.text
    pending = ok(t.a, "vaults", "invites")["pending"]
    assert [(p["to"], p["name"]) for p in pending] == [(t.c.node_id, "prod")]
    t.restart(t.c)
    wait_for(lambda: any(i["name"] == "prod" for i in ok(t.c, "vaults", "invites")["received"]), 60,
             "the queued invite to be delivered")
    received = [i for i in ok(t.c, "vaults", "invites")["received"] if i["name"] == "prod"]
    assert received[0]["role"] == "writer" and received[0]["from"] == t.a.node_id
    wait_for(lambda: not ok(t.a, "vaults", "invites")["pending"], 30, "the queue to empty")


def test_sync_command_pulls_and_pushes_every_member(trio: Trio) -> None:
    t = trio
    shared(t, "writer", t.b)
    ok(t.a, "vaults", "share", "prod", t.c.node_id, "--role", "reader")
    ok(t.c, "vaults", "clone", "prod", t.a.node_id)
    stop(t.b)
    put(t.a, "prod:api/key", b"k2")
    rows = ok(t.a, "vaults", "sync", "prod")
    by_peer = {r["peer"]: r for r in rows}
    assert by_peer[t.b.node_id]["action"] == "failed" and by_peer[t.b.node_id]["error"]
    assert by_peer[t.c.node_id]["action"] in ("up-to-date", "fast-forward")
    assert get(t.c, "prod:api/key") == b"k2"
    human = pk(t.a, "vaults", "sync")
    assert human.code == 0 and f"prod with {t.b.node_id}: failed" in human.text
    status = pk(t.a, "vaults", "status", "prod")
    assert status.code == 0 and t.c.node_id in status.text and "last sync" in status.text
    members = pk(t.a, "vaults", "members", "prod")
    assert members.code == 0 and "last sync" in members.text and "(this node)" in members.text
