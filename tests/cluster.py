"""Tests' handle on a `pk cluster`: real agents started and stopped by the real `pk cluster`.

Faults (kill, pause, restart, partition) go through `pk cluster`; the many lookups of the
fault suite go straight to each agent's socket (the agent client `pk` uses), which costs
no interpreter start per request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keynode.cluster import netns
from polykey.agent_client import client as agent_client
from polykey.errors import PolykeyError

from .conftest import Result, base_env, pk_executable, run_pk
from .e2e.agent_util import alive, wait_for

__all__ = ["alive", "wait_for", "processes_under"]

NETNS_SKIP = netns.unavailable_reason()
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.nodes: list[dict[str, Any]] = []
        self.prefix = netns.prefix_for(directory)

    def pk(self, *args: str, timeout: float = 120) -> Result:
        return run_pk("cluster", args[0], "--dir", self.dir, *args[1:], timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> Any:
        r = self.pk(args[0], "--format", "json", *args[1:], timeout=timeout)
        assert r.code == 0, f"pk cluster {' '.join(args)}: exit {r.code}: {r.err}"
        return r.json

    def up(self, count: int, *extra: str) -> list[dict[str, Any]]:
        data = self.ok("up", "--nodes", str(count), *extra, timeout=300)
        self.nodes = data["nodes"]
        return self.nodes

    def status(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.ok("status")["nodes"]
        return rows

    def node_id(self, i: int) -> str:
        return str(self.nodes[i]["nodeId"])

    def path(self, i: int) -> str:
        return str(self.nodes[i]["nodePath"])

    def call(self, i: int, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        with agent_client.connect(self.path(i), timeout=5, reply_timeout=timeout) as c:
            return c.call(method, params or {})

    def finds(self, i: int, j: int) -> bool:
        """Whether node i finds node j through the DHT at the port j listens on now, verified."""
        try:
            found = self.call(i, "nodes.find", {"nodeId": self.node_id(j)})
        except PolykeyError:
            return False
        want = {"host": self.nodes[j]["host"], "port": self.nodes[j]["port"], "verified": True}
        record = found.get("record") or {}
        return want in found["addresses"] and [want["host"], want["port"]] in record.get("addresses", [])

    def pings(self, i: int, j: int) -> bool:
        """Whether node i gets an answer from node j over the authenticated channel."""
        try:
            self.call(i, "nodes.ping", {"nodeId": self.node_id(j)})
        except PolykeyError:
            return False
        return True

    def all_find_all(self, live: list[int], timeout: float) -> None:
        """Every node of ``live`` finds every other within ``timeout`` (each pair retried until then)."""
        pending = {(a, b) for a in live for b in live if a != b}
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=4) as pool:
            while pending:
                done = {pair for pair, ok in zip(list(pending), pool.map(lambda p: self.finds(*p), list(pending))) if ok}
                pending -= done
                if pending and time.monotonic() > deadline:
                    raise AssertionError(f"after {timeout:g} s, still not found (finder, target): {sorted(pending)}")
                if pending:
                    time.sleep(0.2)

    def refresh(self) -> None:
        """Re-read addresses (ports change on `restart --port 0`)."""
        self.nodes = self.status()

    def down(self) -> Result:
        return self.pk("down", timeout=120)

    def namespaces(self) -> list[str]:
        return netns.namespaces(self.prefix) if NETNS_SKIP is None else []

    def links(self) -> list[str]:
        if NETNS_SKIP is not None:
            return []
        return netns.links(self.prefix)


def _argv(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def processes_under(directory: Path) -> list[int]:
    """Live processes (never this one) whose argv names ``directory`` or a path in it: what a
    cluster in ``directory`` (or a node directory) still runs. Read from /proc, independently of
    the launcher's own way of finding its agents."""
    path = str(directory.absolute()).rstrip("/")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = _argv(pid)
        if int(pid) != os.getpid() and alive(int(pid)) and any(a == path or a.startswith(path + "/") for a in argv):
            found.append(int(pid))
    return sorted(found)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    """Clusters in tmp_path; each is taken down at the end, pass or fail. A process of a cluster
    still running after that `down` (bounded wait) is killed and fails the test: `down` leaves none."""
    made: list[Cluster] = []

    def make(name: str = "cluster") -> Cluster:
        c = Cluster(tmp_path / name)
        made.append(c)
        return c

    yield make
    for c in made:
        if (c.dir / "cluster.json").exists() or c.namespaces():
            subprocess.run([pk_executable(), "cluster", "down", "--dir", str(c.dir)], env=base_env(),
                           capture_output=True, timeout=120)
    strays: list[int] = []
    for c in made:
        deadline = time.monotonic() + 10
        while (left := processes_under(c.dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        strays += left
    assert not strays, f"processes of a cluster outlived its `pk cluster down` (killed now): {strays}"
