"""Sharing and sync of one vault among 5 real agents under faults (issue 13, "Fault suite").

A `pk cluster` of 5 nodes with a short anti-entropy interval; node 0 creates vault `team` and
shares it with two writers (1, 2) and two readers (3, 4), who clone it. Then writes on three
nodes at once (different secrets, and one secret written by all three), a writer killed with
SIGKILL right after a write while the others fetch from it and restarted, a serving node frozen
(SIGSTOP) while the others fetch from it and then resumed, and (with network namespaces only) a
partition 0,1/2,3,4 with writes on both sides, then healed.

Afterwards, within a bound: every node shows the same `pk vaults log`; every acknowledged write
is there, or is the loser of a same-secret conflict whose value stays in `pk secrets history`;
`pk vaults verify` and `git fsck --strict` are clean on every node. Everything goes through the
real `pk` (`pk cluster exec I -- pk ...`); bounds are liveness limits for a loaded machine, not
timing assertions.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..cluster import Cluster, make_cluster, needs_netns, wait_for
from ..conftest import Result, base_env, run_pk

__all__ = ["make_cluster"]
MakeCluster = Callable[[str], Cluster]
VAULT = "team"
NODES = 5
OWNER, WRITERS, READERS = 0, (1, 2), (3, 4)
INTERVAL = "1"  # seconds between anti-entropy passes: nodes catch up quickly after a fault
BOUND = 120.0  # seconds for every node to converge after the last fault (backoff included)
SAME = "same/key"
BULK = 1000  # secrets in the write a node makes right before it is killed or frozen: ~1.3 MB to fetch  # the one secret written on several nodes at once


@dataclass
class Acks:
    """Writes acknowledged by `pk` (exit 0): the value each secret must have in the end, and the
    values of secrets written on several nodes (one wins, the others stay in its history)."""

    values: dict[str, str] = field(default_factory=dict)
    contested: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, value: str, contested: bool = False) -> None:
        with self.lock:
            if contested:
                self.contested.setdefault(name, []).append(value)
            else:
                assert name not in self.values, f"{name} is written once in these tests"
                self.values[name] = value


class Team:
    """The cluster and vault `team` shared to all, driven through `pk cluster exec I -- pk`."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.acks = Acks()
        self.vault_id = ""
        self._env: dict[int, dict[str, str]] = {}

    def pk(self, i: int, *args: str, input: bytes | None = None, timeout: float = 120) -> Result:
        """Plain `pk` pointed at node ``i`` as `eval "$(pk cluster env I)"` does (the client talks
        to the agent's Unix socket, so this works from the host in --netns mode too)."""
        if i not in self._env:
            self._env[i] = self.c.ok("env", str(i))
        return run_pk(*args, input=input, timeout=timeout, env=base_env(**self._env[i]))

    def ok(self, i: int, *args: str, input: bytes | None = None, timeout: float = 120) -> Any:
        r = self.pk(i, *args, "--format", "json", input=input, timeout=timeout)
        assert r.code == 0, f"node {i}: pk {' '.join(args)}: exit {r.code}: {r.err}"
        return r.json

    def put(self, i: int, name: str, value: str, contested: bool = False) -> None:
        self.ok(i, "secrets", "set", f"{VAULT}:{name}", input=value.encode())
        self.acks.add(name, value, contested)

    def writes(self, i: int, *items: tuple[str, str] | tuple[str, str, bool]) -> None:
        """Secrets written on node ``i`` one after another: (name, value[, contested])."""
        for item in items:
            self.put(i, item[0], item[1], len(item) == 3 and bool(item[-1]))

    def bulk(self, i: int, directory: str, count: int) -> None:
        """One commit of ``count`` secrets of 1,200 bytes under ``directory`` (a long fetch)."""
        tree = {f"s{k}": f"{directory}-{k}-" + "x" * 1200 for k in range(count)}
        self.ok(i, "secrets", "import", f"{VAULT}:{directory}", "-", input=json.dumps(tree).encode(), timeout=300)
        for k, v in tree.items():
            self.acks.add(f"{directory}/{k}", v)

    def up(self, *extra: str) -> None:
        self.c.up(NODES, "--sync-interval", INTERVAL, *extra)
        self.vault_id = self.ok(OWNER, "vaults", "create", VAULT)["vaultId"]
        self.put(OWNER, "base/key", "base")
        for i in WRITERS:
            self.ok(OWNER, "vaults", "share", VAULT, self.c.node_id(i), "--role", "writer")
        for i in READERS:
            self.ok(OWNER, "vaults", "share", VAULT, self.c.node_id(i), "--role", "reader")
        for i in (*WRITERS, *READERS):
            self.ok(i, "vaults", "clone", VAULT, self.c.node_id(OWNER))

    def heads(self) -> dict[int, str | None]:
        """Each node's head of the vault, from one `pk cluster status` (None: stopped or paused)."""
        return {row["index"]: (row.get("vaults") or {}).get(VAULT) for row in self.c.status()}

    def holds(self, i: int, name: str) -> bool:
        return self.pk(i, "secrets", "get", f"{VAULT}:{name}").out == self.acks.values[name].encode()

    def concurrently(self, *jobs: Callable[[], None]) -> None:
        errors: list[BaseException] = []

        def run(job: Callable[[], None]) -> None:
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors

    def repo(self, i: int) -> Path:
        return Path(self.c.path(i)) / "vaults" / f"{self.vault_id}.git"

    # -- the end state ---------------------------------------------------------------------

    def one_head(self, bound: float = BOUND) -> float:
        """Wait until every node shows the same head of the vault; the seconds it took."""
        start = time.monotonic()

        def same() -> bool:
            heads = set(self.heads().values())
            return len(heads) == 1 and None not in heads

        try:
            wait_for(same, bound, "every node to show the same head of the vault")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnosis()}") from None
        return time.monotonic() - start

    def diagnosis(self) -> str:
        """Each node's head and the sync lines at the end of its agent.log (for a failure report)."""
        lines = [f"heads: {self.heads()}"]
        for i in range(NODES):
            log = Path(self.c.path(i)) / "agent.log"
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            lines.append(f"-- node {i} agent.log (sync lines, last 15):")
            lines += [line[:300] for line in text if "sync" in line or "merge" in line][-15:]
        return "\n".join(lines)

    def converged(self, bound: float = BOUND) -> None:
        """Every node reaches one head within ``bound`` and the end state is what was acknowledged."""
        elapsed = self.one_head(bound)
        logs = [[row["commit"] for row in self.ok(i, "vaults", "log", VAULT)] for i in range(NODES)]
        assert all(log == logs[0] for log in logs), "the nodes show different histories"
        secrets = [self._export(i) for i in range(NODES)]
        for i, got in enumerate(secrets):
            missing = [n for n, v in self.acks.values.items() if got.get(n) != v]
            assert not missing, f"node {i} lacks acknowledged writes: {sorted(missing)[:10]}"
        for name, written in self.acks.contested.items():
            final = secrets[0].get(name)
            assert final in written, f"{name}: {final!r} is none of the values written"
            assert all(s.get(name) == final for s in secrets)
            old = self._history_values(OWNER, name)
            lost = [v for v in written if v != final and v not in old]
            assert not lost, f"{name}: the losing values {lost} are not in its history"
        for i in range(NODES):
            assert self.ok(i, "vaults", "verify", VAULT)["ok"] is True, f"node {i}: vaults verify"
            fsck = subprocess.run(["git", "fsck", "--strict"], cwd=self.repo(i), capture_output=True, text=True)
            assert fsck.returncode == 0, f"node {i}: git fsck --strict: {fsck.stderr}"
        print(f"converged in {elapsed:.1f} s after the last fault")

    def _export(self, i: int) -> dict[str, str]:
        data = self.ok(i, "secrets", "export", VAULT)
        return _flatten(data)

    def _history_values(self, i: int, name: str) -> set[str]:
        values: set[str] = set()
        for row in self.ok(i, "secrets", "history", f"{VAULT}:{name}"):
            r = self.pk(i, "secrets", "get", f"{VAULT}:{name}", "--commit", row["commit"])
            if r.code == 0:
                values.add(r.out.decode())
        return values


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """`pk secrets export --format json` as {path: value}."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# -- the faults ----------------------------------------------------------------------------------


def concurrent_writes(t: Team, tag: str) -> None:
    """Nodes 0, 1 and 2 write at once: three secrets each of their own, and all three `SAME`."""

    def writer(i: int) -> Callable[[], None]:
        def run() -> None:
            for k in range(3):
                t.put(i, f"{tag}/n{i}/k{k}", f"{tag}-{i}-{k}")
            t.put(i, SAME, f"{tag}-{i}-same", contested=True)
        return run

    t.concurrently(*(writer(i) for i in (OWNER, *WRITERS)))


def kill9_writer_mid_sync(t: Team, i: int) -> None:
    """Writer ``i`` commits a large change (acknowledged), and is killed with SIGKILL while the
    others fetch it from ``i``; then restarted. The acknowledged change must survive."""
    pid = t.c.nodes[i]["pid"]
    t.bulk(i, f"killed{i}", BULK)
    t.c.ok("kill", str(i), "--signal", "9")
    assert t.c.status()[i]["state"] == "stopped", f"node {i} (pid {pid}) still runs"
    t.put(OWNER, f"while-killed-{i}", "w")  # the others go on without it
    assert t.c.ok("restart", str(i))["state"] == "unlocked"
    t.c.refresh()


def pause_server_mid_fetch(t: Team, i: int) -> None:
    """Node ``i`` (owner or writer) commits a large change and is frozen (SIGSTOP) while the others
    fetch it from it; meanwhile another writer's write still reaches the readers; then ``i`` is
    resumed."""
    other = next(n for n in (OWNER, *WRITERS) if n != i)
    t.bulk(i, f"paused{i}", BULK)
    t.c.ok("pause", str(i))
    try:
        assert t.c.status()[i]["state"] == "paused"
        t.put(other, f"while-paused-{i}", "p")
        for r in READERS:  # a frozen peer does not stop the others syncing with each other
            wait_for(lambda: t.holds(r, f"while-paused-{i}"), BOUND / 2, f"reader {r} to get node {other}'s write")
    finally:
        t.c.ok("resume", str(i))


def partition_and_heal(t: Team) -> None:
    """Partition 0,1 / 2,3,4; writes on both sides (and one secret on both); then heal."""
    t.c.ok("partition", "0,1/2,3,4")
    try:
        t.concurrently(
            lambda: t.writes(OWNER, ("split/a0", "a0"), ("split/same", "side-a", True)),
            lambda: t.writes(1, ("split/a1", "a1")),
            lambda: t.writes(2, ("split/b2", "b2"), ("split/same", "side-b", True)),
        )
        # each side syncs within itself
        wait_for(lambda: t.holds(1, "split/a0") and t.holds(3, "split/b2") and t.holds(4, "split/b2"),
                 BOUND / 2, "each side of the partition to sync within itself")
        assert not t.holds(3, "split/a0") and not t.holds(0, "split/b2")
    finally:
        t.c.ok("heal")


# -- the tests -----------------------------------------------------------------------------------


def test_concurrent_writes_a_killed_writer_and_a_frozen_server_converge(make_cluster: MakeCluster) -> None:
    t = Team(make_cluster("sync"))
    t.up()
    t.one_head()
    concurrent_writes(t, "w1")
    kill9_writer_mid_sync(t, 2)
    pause_server_mid_fetch(t, 1)
    t.converged()


@needs_netns
def test_a_partition_with_writes_on_both_sides_converges_after_heal(make_cluster: MakeCluster) -> None:
    t = Team(make_cluster("split"))
    t.up("--netns")
    t.one_head()
    partition_and_heal(t)
    t.converged()


@pytest.mark.slow
@needs_netns
def test_every_fault_in_one_run(make_cluster: MakeCluster) -> None:
    """The whole of issue 13's sync scenario on one cluster, twice over."""
    t = Team(make_cluster("all"))
    t.up("--netns")
    for round_ in ("r1", "r2"):
        concurrent_writes(t, round_)
        kill9_writer_mid_sync(t, 2 if round_ == "r1" else 1)
        pause_server_mid_fetch(t, 1 if round_ == "r1" else 0)
        if round_ == "r1":
            partition_and_heal(t)
    t.converged()
