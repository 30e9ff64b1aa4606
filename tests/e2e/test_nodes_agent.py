"""The agent's peer services as a user meets them over time (issue 5; docs/spec/discovery.md s.9a).

Real agents on 127.0.0.1, driven by `pk`: restarts on another port are found by the higher
seq, the node graph carries a node with no seed, a seed that comes up late is retried, a stalled
handshake on the live port is timed out, `find` verifies the listening address of each node.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from polykey.keys.keypair import KeyPair

from ..conftest import Node, base_env, bootstrap_node, run_pk
from .agent_util import wait_for
from .test_nodes_cli import HOST, cluster, nodes, start

__all__ = ["cluster"]  # the fixture, shared with test_nodes_cli


def free_port() -> int:
    """A port number free for both TCP and UDP right now (the OS picks it)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            return port


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind((HOST, port))
    except OSError:
        return False
    return True


def record_addresses(node: Node, node_id: str) -> Any:
    """The addresses in the record ``node`` finds for ``node_id`` (None if no record or no answer)."""
    r = node.pk("nodes", "find", node_id, "--format", "json")
    record = r.json["record"] if r.code == 0 else None  # type: ignore[index]
    return None if record is None else record["addresses"]


def stop(node: Node) -> None:
    r = node.pk("agent", "stop")
    assert r.code == 0, r.err


def test_find_reports_where_a_node_listens_not_its_source_port(cluster: dict[str, Any]) -> None:
    b, c = cluster["b"], cluster["c"]
    c_port = cluster["ports"]["c"]
    assert nodes(c, "ping", b.node_id)["direction"] == "outbound"  # C dialled B: B holds an inbound channel
    found = nodes(b, "find", c.node_id)
    assert found["addresses"] == [{"host": HOST, "port": c_port, "verified": True}]
    # the ping says which way the channel goes; the human line names the address
    ping = b.pk("nodes", "ping", c.node_id)
    assert ping.code == 0 and c.node_id in ping.text and " ms" in ping.text
    assert nodes(c, "find", b.node_id)["addresses"] == [{"host": HOST, "port": cluster["ports"]["b"], "verified": True}]


def test_restart_on_another_port_without_seed(cluster: dict[str, Any]) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    old_port = cluster["ports"]["b"]
    old_seq = nodes(c, "find", b.node_id)["record"]["seq"]
    stop(b)
    graph = (b.path / "nodegraph.json").read_text()
    assert a.node_id in graph and c.node_id in graph  # our own JSON format, saved at stop
    new_port = free_port()
    status = start(b, "--port", str(new_port))  # no seed: the node graph is enough
    assert status["peer"]["port"] == new_port
    known = {row["node_id"] for row in nodes(b, "list")}
    assert {a.node_id, c.node_id} <= known
    assert nodes(b, "ping", a.node_id)["rtt"] > 0
    assert {"host": HOST, "port": cluster["ports"]["c"], "verified": True} in nodes(b, "find", c.node_id)["addresses"]
    # C learns the new address from the newer record (higher seq) B published at start
    # (start waits up to 5 s for that; polled in case a loaded machine made it slower)
    wait_for(lambda: record_addresses(c, b.node_id) == [[HOST, new_port]], what="B's new record")
    found = nodes(c, "find", b.node_id)
    assert found["record"]["addresses"] == [[HOST, new_port]] and found["record"]["seq"] > old_seq
    assert {"host": HOST, "port": new_port, "verified": True} in found["addresses"]
    assert not any(x["verified"] for x in found["addresses"] if x["port"] == old_port)
    assert nodes(c, "ping", b.node_id)["rtt"] > 0
    # and C's node graph moves B to its new port (the old one no longer answers as B)
    wait_for(lambda: [(r["node_id"], r["port"]) for r in nodes(c, "list") if r["node_id"] == b.node_id]
             == [(b.node_id, new_port)], what="C's node graph to follow B")


def test_a_seed_down_at_start_is_retried_until_it_comes_up(tmp_path: Path, cluster: dict[str, Any]) -> None:
    c = cluster["c"]
    d, e = bootstrap_node(tmp_path, "d"), bootstrap_node(tmp_path, "e")
    e_port = free_port()
    start(d, "--seed", f"{e.node_id}@{HOST}:{e_port}")  # E is not running: D starts anyway
    assert nodes(d, "list") == []
    start(e, "--port", str(e_port), "--seed", cluster["seed"])
    wait_for(lambda: e.node_id in {row["node_id"] for row in nodes(d, "list")}, timeout=30, what="D joined via E")
    # D published its record once it got through: C, which never heard of E or D, finds it
    wait_for(lambda: c.pk("nodes", "find", d.node_id).code == 0, timeout=30, what="C finds D")
    assert nodes(c, "ping", d.node_id)["rtt"] > 0


def test_unreachable_addresses_are_named_with_their_reason(tmp_path: Path, cluster: dict[str, Any]) -> None:
    b = cluster["b"]
    e = bootstrap_node(tmp_path, "e")
    start(e)
    dead = free_port()
    nodes(e, "add", b.node_id, f"{HOST}:{dead}")
    r = e.pk("nodes", "find", b.node_id)
    assert r.code == 69
    assert f"{HOST}:{dead}: connection refused" in r.err and "did not answer as itself" in r.err


def test_a_stalled_handshake_on_the_live_port_is_timed_out(cluster: dict[str, Any]) -> None:
    a, c = cluster["a"], cluster["c"]
    with socket.create_connection((HOST, cluster["ports"]["a"]), timeout=30) as s:
        s.sendall(b"\x00\x20" + bytes(10))  # the first handshake frame, cut short; then silence
        assert nodes(c, "ping", a.node_id)["rtt"] > 0  # A keeps serving meanwhile
        try:
            rest = s.recv(4096)  # A closes it after its handshake timeout
        except ConnectionResetError:
            rest = b""
        assert rest == b""
    wait_for(lambda: "handshake timed out" in (a.path / "agent.log").read_text(), what="the reason logged")
    assert nodes(c, "find", a.node_id)["addresses"][0]["verified"] is True


def test_a_corrupt_node_graph_file_is_named(tmp_path: Path) -> None:
    n = bootstrap_node(tmp_path, "n")
    (n.path / "nodegraph.json").write_text('{"format": "something else"}')
    r = n.pk("agent", "start")
    assert r.code == 65 and "nodegraph.json" in r.err and "move it away" in r.err
    (n.path / "nodegraph.json").unlink()
    assert start(n)["state"] == "unlocked"


def test_help_explains_each_command() -> None:
    top = run_pk("nodes", "--help")
    assert top.code == 0 and "--seed" in top.text and "pk agent status" in top.text
    for command in ("add", "find", "ping", "list", "connections"):
        r = run_pk("nodes", command, "--help")
        assert r.code == 0 and "--format" in r.text, command
    assert "Exit 84" in run_pk("nodes", "find", "--help").text
    assert "[ADDR]:PORT" in run_pk("nodes", "add", "--help").text


def test_a_node_alone_keeps_its_node_graph_for_later(cluster: dict[str, Any]) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    for node in (a, b, c):
        stop(node)
    start(c)  # nobody answers: C stays alone, and must not forget whom it knew
    wait_for(lambda: nodes(c, "list") == [], what="the dead nodes to leave C's routing table")
    stop(c)
    graph = (c.path / "nodegraph.json").read_text()
    assert a.node_id in graph and b.node_id in graph
    start(a, "--port", str(cluster["ports"]["a"]))
    start(c)  # still no seed: the saved graph gets it back in touch
    assert nodes(c, "ping", a.node_id)["rtt"] > 0


def test_an_address_that_stalls_the_handshake_is_abandoned_and_freed(tmp_path: Path, cluster: dict[str, Any]) -> None:
    c = cluster["c"]
    stranger = str(KeyPair.generate().node_id)
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        nodes(c, "add", stranger, f"{HOST}:{listener.getsockname()[1]}")
        r = c.pk("nodes", "find", stranger)  # accepted by the kernel, then never a word back
        assert r.code == 69 and "timed out" in r.err, r.err
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            while conn.recv(4096):  # C's first handshake message, then C hangs up
                pass
    assert nodes(c, "ping", cluster["b"].node_id)["rtt"] > 0


def test_a_node_bound_to_all_interfaces_publishes_the_address_that_reaches_its_peers(
    tmp_path: Path, cluster: dict[str, Any]
) -> None:
    c = cluster["c"]
    g = bootstrap_node(tmp_path, "g")
    r = g.pk("agent", "start", "--host", "0.0.0.0", "--seed", cluster["seed"], "--format", "json")
    assert r.code == 0, r.err
    port = r.json["peer"]["port"]  # type: ignore[index]
    wait_for(lambda: record_addresses(c, g.node_id) == [[HOST, port]], what="G's record")
    found = nodes(c, "find", g.node_id)
    assert found["record"] is not None and found["record"]["addresses"] == [[HOST, port]]
    assert {"host": HOST, "port": port, "verified": True} in found["addresses"]


def test_peer_port_from_the_environment(tmp_path: Path) -> None:
    n = bootstrap_node(tmp_path, "n")
    r = n.pk("agent", "start", env=base_env(PK_PEER_PORT="http"))
    assert r.code == 64 and "PK_PEER_PORT" in r.err
    port = free_port()
    r = n.pk("agent", "start", "--format", "json", env=base_env(PK_PEER_PORT=str(port)))
    assert r.code == 0, r.err
    assert r.json["peer"] == {"host": HOST, "port": port}  # type: ignore[index]


def test_ipv6_listeners_and_a_host_that_is_not_an_address(tmp_path: Path) -> None:
    p, q = bootstrap_node(tmp_path, "p"), bootstrap_node(tmp_path, "q")
    r = p.pk("agent", "start", "--host", "localhost")
    assert r.code == 64 and "--host must be an IP address" in r.err
    r = p.pk("agent", "start", "--host", "::1", "--format", "json")
    assert r.code == 0, r.err
    p_port = r.json["peer"]["port"]  # type: ignore[index]
    r = q.pk("agent", "start", "--host", "::1", "--seed", f"{p.node_id}@[::1]:{p_port}")
    assert r.code == 0, r.err
    found = q.pk("nodes", "find", p.node_id)
    assert found.code == 0 and f"[::1]:{p_port}  verified" in found.text, found.err
    assert f"[::1]:{p_port}" in q.pk("nodes", "list").text
    assert "[::1]:" in q.pk("nodes", "connections").text


def test_a_nodes_command_right_after_an_unlock_waits_for_the_peer_services(cluster: dict[str, Any]) -> None:
    a, c = cluster["a"], cluster["c"]
    for _ in range(3):
        assert c.pk("agent", "lock").code == 0
        r = c.pk("nodes", "ping", a.node_id, "--format", "json")  # unlocks on demand, then pings at once
        assert r.code == 0, r.err
        assert r.json["nodeId"] == a.node_id  # type: ignore[index]
        assert a.node_id in {row["node_id"] for row in nodes(c, "list")}


def test_port_taken_while_locked_the_agent_keeps_serving_and_says_why(cluster: dict[str, Any]) -> None:
    a, b = cluster["a"], cluster["b"]
    assert b.pk("agent", "lock").code == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        # `pk agent lock` returns once the listener holding the key has closed: the port is free
        assert _bound(squatter, cluster["ports"]["b"])
        assert b.pk("agent", "unlock").code == 0  # the vaults are back even if the peer port is not
        r = b.pk("nodes", "list")
        assert r.code == 69 and "peer networking is not running" in r.err and "already in use" in r.err
        shown = b.pk("agent", "status")
        assert "Peer listener: not running (" in shown.text and "already in use" in shown.text
        assert b.pk("vaults", "list").code == 0
    assert b.pk("agent", "lock").code == 0 and b.pk("agent", "unlock").code == 0
    assert nodes(b, "ping", a.node_id)["port"] == cluster["ports"]["a"]


def test_a_taken_port_at_start_is_named(tmp_path: Path) -> None:
    n = bootstrap_node(tmp_path, "n")
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = n.pk("agent", "start", "--port", str(port))
    assert r.code == 69 and r.err.strip() == f"pk: cannot listen on TCP {HOST}:{port}: address already in use"
