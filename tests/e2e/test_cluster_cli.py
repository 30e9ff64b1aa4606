"""`pk cluster` end to end: real agents started, driven and stopped by the launcher (issue 13).

Each test checks what a user sees (exit codes, one-line errors, JSON) and that `down` leaves
no process, namespace or link behind, also after the launcher was killed during `up`.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from keynode.agent.lockfile import holder_pid

from ..cluster import Cluster, alive, make_cluster, needs_netns, processes_under, wait_for
from ..conftest import base_env, pk_executable, run_pk

__all__ = ["make_cluster"]
MakeCluster = Callable[[str], Cluster]


def assert_gone(c: Cluster, pids: list[int]) -> None:
    """Nothing of the cluster is left: not ``pids``, no other process whose argv names its
    directory (an agent `down` missed would keep running), no namespace, no link."""
    assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]
    wait_for(lambda: not processes_under(c.dir), 10, f"no process of the cluster to remain: {processes_under(c.dir)}")
    assert c.namespaces() == [] and c.links() == []


def interrupted_up(c: Cluster, count: int, sig: signal.Signals, *extra: str,
                   started: Callable[[], bool] | None = None) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`pk cluster up` sent ``sig`` once ``started()`` (default: node 0's agent runs); the agents it had started."""
    proc = subprocess.Popen([pk_executable(), "cluster", "up", "--nodes", str(count), "--dir", str(c.dir), *extra],
                            env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(started or (lambda: holder_pid(c.dir / "node0") is not None), 60, "the cluster to start")
        pids = [p for i in range(count) if (p := holder_pid(c.dir / f"node{i}")) is not None]
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=60)
    return proc, pids


def test_up_status_env_exec_kill_pause_resume_restart_down(make_cluster: MakeCluster) -> None:
    c = make_cluster("c")
    nodes = c.up(3)
    assert [n["state"] for n in nodes] == ["unlocked"] * 3
    assert len({n["port"] for n in nodes}) == 3 and all(n["host"] == "127.0.0.1" for n in nodes)
    pids = [n["pid"] for n in nodes]
    info = json.loads((c.dir / "cluster.json").read_text())
    assert info["version"] == 1 and [n["node_id"] for n in info["nodes"]] == [n["nodeId"] for n in nodes]
    for i in range(3):
        pw = c.dir / f"node{i}.pw"
        assert stat.S_IMODE(pw.stat().st_mode) == 0o600
        assert pw.read_bytes() not in (c.dir / "cluster.json").read_bytes()
    human = c.pk("status")
    assert human.code == 0 and len(human.text.splitlines()) == 3 and "unlocked" in human.text

    # env: plain pk, pointed at node 1, sees node 1
    env = c.ok("env", "1")
    assert env["PK_NODE_PATH"] == c.path(1) and env["PK_SEED_NODES"].startswith(c.node_id(0) + "@")
    lines = c.pk("env", "1").text
    assert f"export PK_NODE_PATH={c.path(1)}" in lines
    r = run_pk("agent", "status", "--format", "json", env=base_env(PK_NODE_PATH=env["PK_NODE_PATH"]))
    assert r.code == 0 and r.json["nodeId"] == c.node_id(1)  # type: ignore[index]

    # exec: node 2 finds node 1 through the DHT (seeded by node 0) and verifies it
    r = c.pk("exec", "2", "--", "pk", "nodes", "find", c.node_id(1), "--format", "json")
    assert r.code == 0, r.err
    assert {"host": "127.0.0.1", "port": nodes[1]["port"], "verified": True} in r.json["addresses"]  # type: ignore[index]
    assert c.pk("exec", "2", "--", "sh", "-c", "exit 7").code == 7  # the command's own exit status

    # kill -9: the node is stopped; restart brings it back on its port
    assert c.ok("kill", "1", "--signal", "9")["signal"] == "SIGKILL"
    assert not alive(pids[1])
    assert c.status()[1]["state"] == "stopped"
    assert c.pk("pause", "1").code == 69  # nothing to pause
    again = c.ok("restart", "1")
    assert again["state"] == "unlocked" and again["port"] == nodes[1]["port"] and again["pid"] != pids[1]
    pids.append(again["pid"])

    # pause / resume
    assert c.ok("pause", "2")["pid"] == pids[2]
    assert c.status()[2]["state"] == "paused"
    c.ok("resume", "2")
    assert c.status()[2]["state"] == "unlocked"

    # up on a live directory refuses, and says what to do
    r = c.pk("up", "--nodes", "2")
    assert r.code == 73 and "is running in" in r.err and "pk cluster down" in r.err and r.err.count("\n") == 1

    r = c.pk("down")
    assert r.code == 0, r.err
    assert_gone(c, pids)
    assert not c.dir.exists()
    r = c.pk("status")
    assert r.code == 66 and r.err.startswith("pk: no cluster in ")


def test_down_keep_then_up_refuses_a_stopped_cluster(make_cluster: MakeCluster) -> None:
    c = make_cluster("k")
    pids = [n["pid"] for n in c.up(1)]
    assert c.ok("down", "--keep")["kept"] is True
    assert_gone(c, pids)
    assert (c.dir / "cluster.json").exists() and (c.dir / "node0").is_dir()
    r = c.pk("up", "--nodes", "1")
    assert r.code == 73 and "stopped cluster" in r.err
    assert c.pk("down").code == 0 and not c.dir.exists()


def test_bad_input_is_one_line_with_its_exit_code(make_cluster: MakeCluster, tmp_path: Path) -> None:
    c = make_cluster("b")
    c.up(2)
    for args, code, text in [
        (("kill", "5"), 64, "no node 5 in this cluster"),
        (("kill", "0", "--signal", "NOPE"), 64, "unknown signal"),
        (("partition", "0/1"), 64, "needs a cluster started with `pk cluster up --netns`"),
        (("exec", "0", "--", "no-such-command-here"), 127, "command not found"),
    ]:
        r = c.pk(*args)
        assert (r.code, r.err.count("\n")) == (code, 1) and text in r.err, (args, r.code, r.err)
    r = run_pk("cluster", "status", "--dir", tmp_path / "nothing")
    assert r.code == 66 and "no cluster in" in r.err
    r = run_pk("cluster", "up", "--nodes", "0", "--dir", tmp_path / "zero")
    assert r.code == 64 and not (tmp_path / "zero").exists()


def test_down_after_the_launcher_was_killed_during_up(make_cluster: MakeCluster) -> None:
    c = make_cluster("killed")
    interrupted_up(c, 4, signal.SIGKILL)
    started = [p for i in range(4) if (p := holder_pid(c.dir / f"node{i}")) is not None]
    assert started
    r = c.pk("down")
    assert r.code == 0, r.err
    assert_gone(c, started)
    assert not any(holder_pid(c.dir / f"node{i}") for i in range(4))


def _freeze_if_starting(node: Path) -> bool:
    """SIGSTOP every process of ``node``'s agent if there is one and it does not hold its lock yet
    (True); else leave them running (False)."""
    pids = processes_under(node)
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    if pids and holder_pid(node) is None and processes_under(node) == pids:
        return True
    for p in pids:
        os.kill(p, signal.SIGCONT)
    return False


def test_down_after_the_launcher_was_killed_while_an_agent_was_still_starting(make_cluster: MakeCluster) -> None:
    # The race of a loaded machine, made certain: the launcher dies after spawning node 1's agent
    # and before that agent took its lock (its interpreter still starting, or in its double
    # fork), and the agent goes on only after `down` looked. `down` must stop it too.
    c = make_cluster("starting")
    node1 = c.dir / "node1"
    interrupted_up(c, 2, signal.SIGKILL, started=lambda: _freeze_if_starting(node1))
    frozen = processes_under(node1)
    assert frozen and holder_pid(node1) is None
    # (`--keep`: plain `down` deletes node1/, which a starting agent may or may not trip on)
    assert set(frozen) <= set(c.ok("down", "--keep")["stopped"])
    for p in processes_under(node1):  # a stray goes on: it takes the lock and serves
        os.kill(p, signal.SIGCONT)
    assert_gone(c, frozen)
    assert c.pk("down").code == 0 and not c.dir.exists()


def test_down_while_up_still_runs_stops_the_up_first(make_cluster: MakeCluster) -> None:
    # An `up` still running would start agents after `down` looked for them: `down` stops it first.
    c = make_cluster("racing")
    proc = subprocess.Popen([pk_executable(), "cluster", "up", "--nodes", "3", "--dir", str(c.dir)],
                            env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: holder_pid(c.dir / "node0") is not None, 60, "node 0 to start")
        done = c.ok("down")
        assert proc.poll() is not None, "down returned while the up it stopped still ran"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    if proc.returncode != 0:  # (it may have finished before down came: then there was no up to stop)
        assert proc.pid in done["stopped"]
    assert_gone(c, [])
    assert not c.dir.exists()


def test_netns_unavailable_says_so_in_one_line(tmp_path: Path) -> None:
    # no `ip` on PATH: the launcher cannot make namespaces, and says why
    env = base_env(PATH=str(tmp_path))
    r = run_pk("cluster", "up", "--nodes", "2", "--netns", "--dir", tmp_path / "n", env=env)
    assert r.code == 69 and r.err.count("\n") == 1
    assert ("`ip` command" in r.err or "needs root" in r.err or "needs Linux" in r.err), r.err
    assert not (tmp_path / "n").exists()


@needs_netns
def test_netns_cluster_partition_heal_and_down(make_cluster: MakeCluster) -> None:
    c = make_cluster("ns")
    nodes = c.up(3, "--netns")
    assert [n["host"] for n in nodes] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert sorted(c.namespaces()) == sorted([f"{c.prefix}x"] + [f"{c.prefix}n{i}" for i in range(3)])
    assert c.links() == []  # nothing of the cluster in the root namespace
    pids = [n["pid"] for n in nodes]
    # the agents live in their namespaces; the test range exists nowhere else
    assert all(os.readlink(f"/proc/{p}/ns/net") != os.readlink("/proc/self/ns/net") for p in pids)
    assert "198.18." not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    c.all_find_all([0, 1, 2], timeout=60)

    assert c.ok("partition", "0,1/2")["partition"] == [[0, 1], [2]]
    assert c.ok("status")["partition"] == [[0, 1], [2]]
    assert not c.pings(2, 0) and not c.pings(1, 2)  # (over an open channel, or a new one: neither answers)
    assert c.pings(0, 1)
    c.ok("heal")
    c.all_find_all([0, 1, 2], timeout=60)

    # exec runs inside the node's namespace
    r = c.pk("exec", "1", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert r.code == 0 and "198.18.0.2/24" in r.text
    assert c.pk("down").code == 0
    assert_gone(c, pids)


@needs_netns
def test_netns_down_after_the_launcher_was_killed(make_cluster: MakeCluster) -> None:
    c = make_cluster("nskilled")
    interrupted_up(c, 3, signal.SIGKILL, "--netns", started=lambda: bool(c.namespaces()))
    started = [p for i in range(3) if (p := holder_pid(c.dir / f"node{i}")) is not None]
    r = c.pk("down")
    assert r.code == 0, r.err
    assert_gone(c, started)


def test_a_launcher_stopped_by_sigterm_during_up_stops_what_it_started(make_cluster: MakeCluster) -> None:
    c = make_cluster("term")
    proc, started = interrupted_up(c, 4, signal.SIGTERM)
    assert proc.stderr is not None
    err = proc.stderr.read()
    if proc.returncode == 0:  # it had finished before the signal came: nothing to check
        return
    assert proc.returncode == 130 and err.decode().strip() == "pk: interrupted"
    assert not any(alive(p) for p in started)
    assert c.pk("down").code == 0
