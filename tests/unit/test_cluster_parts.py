"""The launcher's pure parts: cluster.json, partition groups, signals, namespace names."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from keynode.cluster import launcher, netns, procs
from keynode.cluster.state import ClusterState, NodeEntry
from polykey.errors import ClusterError, ClusterNotFoundError, InvalidInputError


def test_cluster_file_round_trips_private_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    state = ClusterState(dir=str(tmp_path), prefix="pk00000000", netns=False,
                         nodes=[NodeEntry(0, str(tmp_path / "node0"), str(tmp_path / "node0.pw"), "127.0.0.1", 4000, "vabc")])
    state.save()
    assert stat.S_IMODE((tmp_path / "cluster.json").stat().st_mode) == 0o600
    assert ClusterState.load(tmp_path) == state
    assert state.nodes[0].seed == "vabc@127.0.0.1:4000"
    with pytest.raises(InvalidInputError, match="no node 3"):
        state.node(3)
    for bad in (b"{}", b"[1]", b'{"version": 2, "nodes": []}', b"\xff", b"x" * (2 << 20)):
        (tmp_path / "cluster.json").write_bytes(bad)
        with pytest.raises(ClusterError):
            ClusterState.load(tmp_path)
    with pytest.raises(ClusterNotFoundError):
        ClusterState.load(tmp_path / "nothing")


def test_partition_groups() -> None:
    assert launcher.parse_groups("0,1/2,3", 4) == [[0, 1], [2, 3]]
    assert launcher.parse_groups("2/0", 3) == [[2], [0]]
    for bad in ("0,1", "0/4", "0/0", "a/b", "0,,1/2", "", "/"):
        with pytest.raises(InvalidInputError):
            launcher.parse_groups(bad, 4)


def test_signals_by_number_or_name() -> None:
    assert procs.parse_signal("9") is signal.SIGKILL
    assert procs.parse_signal("kill") is signal.SIGKILL
    assert procs.parse_signal("SIGTERM") is signal.SIGTERM
    for bad in ("0x9", "NOPE", "999", ""):
        with pytest.raises(InvalidInputError):
            procs.parse_signal(bad)


def test_an_agent_is_recognised_by_the_node_directory_its_argv_names() -> None:
    nodes = {"/c/node1", "/c/node2"}

    def argv(*words: str) -> list[bytes]:
        return [w.encode() for w in words]

    agent = ("/venv/bin/python3", "-P", "-m", "keynode", "--node-path", "/c/node1", "--password-fd", "3")
    assert procs.runs_node(argv(*agent), nodes) == "/c/node1"
    assert procs.runs_node(argv("ip", "netns", "exec", "pkabcdef01n1", *agent), nodes) == "/c/node1"  # before it execs
    assert procs.runs_node(argv("python3", "-m", "keynode", "--node-path=/c/node2"), nodes) == "/c/node2"
    for other in (
        ("python3", "-m", "keynode", "--node-path", "/c/node10"),  # another directory, same prefix
        ("python3", "-m", "keynode", "--node-path", "/c/node1/"),
        ("python3", "-m", "keynode.cluster", "up", "--dir", "/c", "--node-path", "/c/node1"),  # the launcher
        ("python3", "-m", "keynode"),  # no node path: not one of ours by its argv (its lock says)
        ("vim", "--node-path", "/c/node1"),
        ("python3", "-m", "keynode", "--node-path"),
    ):
        assert procs.runs_node(argv(*other), nodes) is None, other


def test_a_process_start_time_names_one_process() -> None:
    me = procs.start_time(os.getpid())
    assert me is not None and me == procs.start_time(os.getpid())
    assert procs.start_time(2**22 + 1) is None  # above the kernel's largest pid: no such process


def test_names_are_per_directory_and_fit_a_link_name(tmp_path: Path) -> None:
    a, b = netns.prefix_for(tmp_path / "a"), netns.prefix_for(tmp_path / "b")
    assert a != b and a == netns.prefix_for(tmp_path / "a" / ".." / "a")
    last = netns.MAX_NODES - 1
    assert len(f"{a}h{last}") <= 15 and len(f"{a}g{last}") <= 15  # IFNAMSIZ - 1
    assert netns.address(0) == "198.18.0.1" and netns.address(last) == "198.18.0.200"
