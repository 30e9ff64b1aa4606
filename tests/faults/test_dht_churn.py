"""The DHT of real agents under churn (issue 13, "Fault suite"): `pk cluster` nodes killed with
SIGKILL and restarted, paused in the middle of lookups, restarted on new ports.

After each fault, every live node finds every other live node (a signed record with the
address it listens on now, verified by a handshake) within a bounded time. Bounds are
liveness limits for a loaded machine, not timing assertions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from ..cluster import Cluster, alive, make_cluster

__all__ = ["make_cluster"]
MakeCluster = Callable[[str], Cluster]
BOUND = 90.0  # seconds for every pair to find each other after a fault


def churn(c: Cluster, count: int, victims: list[int]) -> None:
    everyone = list(range(count))
    c.up(count)
    c.all_find_all(everyone, BOUND)
    live = [i for i in everyone if i not in victims]
    pids = {n["index"]: n["pid"] for n in c.nodes}
    for i in victims:
        c.ok("kill", str(i), "--signal", "9")
    assert not any(alive(pids[i]) for i in victims)
    c.all_find_all(live, BOUND)

    for i in victims:  # back on the ports they had
        assert c.ok("restart", str(i))["state"] == "unlocked"
    c.refresh()
    c.all_find_all(everyone, BOUND)

    movers = live[1:1 + len(victims)]  # others restart on new ports: found at the new ones
    old = {i: c.nodes[i]["port"] for i in movers}
    for i in movers:
        c.ok("restart", str(i), "--port", "0")
    c.refresh()
    assert all(c.nodes[i]["port"] != old[i] for i in movers)
    c.all_find_all(everyone, BOUND)
    assert all(n["state"] == "unlocked" for n in c.status())


def test_five_nodes_kill9_restart_and_new_ports(make_cluster: MakeCluster) -> None:
    churn(make_cluster("five"), 5, victims=[1, 3])


@pytest.mark.slow
def test_twenty_nodes_kill9_a_third_restart_and_new_ports(make_cluster: MakeCluster) -> None:
    churn(make_cluster("twenty"), 20, victims=[1, 4, 7, 10, 13, 16, 19])


def test_a_node_paused_mid_lookup_does_not_stop_the_others(make_cluster: MakeCluster) -> None:
    c = make_cluster("pause")
    c.up(5)
    c.all_find_all(list(range(5)), BOUND)
    stop = threading.Event()
    outcomes: list[bool] = []

    def lookups() -> None:  # lookups in flight from node 0 and 4 while node 2 is paused
        while not stop.is_set():
            for target in (1, 2, 3):
                outcomes.append(c.finds(0, target))
                outcomes.append(c.finds(4, target))

    worker = threading.Thread(target=lookups)
    worker.start()
    try:
        c.ok("pause", "2")
        assert c.status()[2]["state"] == "paused"
        c.all_find_all([0, 1, 3, 4], BOUND)
        assert not c.pings(0, 2)  # a frozen node answers nothing, over an open channel or a new one
    finally:
        stop.set()
        worker.join(timeout=BOUND)
    assert outcomes and not worker.is_alive()
    c.ok("resume", "2")
    c.all_find_all(list(range(5)), BOUND)
