"""`pk cluster`: how long a local cluster takes to come up and go down (issue 13, "Bench").

Run: ``python -m bench cluster [--quick]``. Each sample runs the installed ``pk`` as a user
would, in a fresh temp directory: ``pk cluster up --nodes 10`` (bootstrap ten nodes with the
test KDF profile, start their agents, wait until every one has joined the DHT), then
``pk cluster down``; with root and iproute2, the same with ``--netns``. The baseline is one
node's ``pk bootstrap`` + ``pk agent start`` with the same KDF profile.

With network namespaces, also: a 5-node cluster (``--sync-interval 1``) with a vault shared to
all (2 writers, 2 readers), partitioned ``0,1/2,3,4``, one write on each side, then ``heal``: the
time from ``pk cluster heal`` until every node shows the same head of the vault (``pk cluster
status``), against the time one write takes to reach the other four without a partition. Each
poll is one `pk cluster status`, which asks every agent (a few hundred ms): that is the resolution
of these two rows. (One write reaching 20 members is `python -m bench sync`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, print_table  # noqa: E402
from keynode.cluster import netns  # noqa: E402

PK = str(Path(sys.executable).parent / "pk")
NODES = 10


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    out["PK_KDF_PROFILE"] = "min"
    return out


def pk(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([PK, *args], env=env(), capture_output=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pk {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def one_agent(tmp: Path) -> float:
    node, pw = tmp / "node", tmp / "pw"
    pw.write_text("bench password\n")
    pw.chmod(0o600)
    t = pk("bootstrap", "--node-path", str(node), "--password-file", str(pw))
    t += pk("agent", "start", "--node-path", str(node), "--password-file", str(pw))
    pk("agent", "stop", "--node-path", str(node))
    return t


def cluster(tmp: Path, *extra: str) -> tuple[float, float]:
    d = str(tmp / "cluster")
    up = pk("cluster", "up", "--nodes", str(NODES), "--dir", d, *extra)
    down = pk("cluster", "down", "--dir", d)
    return up, down


def pk_json(*args: str, node_env: dict[str, str] | None = None, stdin: bytes = b"") -> object:
    proc = subprocess.run([PK, *args, "--format", "json"], env={**env(), **(node_env or {})}, input=stdin,
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"pk {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return json.loads(proc.stdout)


def heads(d: str) -> set[object]:
    rows = pk_json("cluster", "status", "--dir", d)
    assert isinstance(rows, dict)
    return {(row.get("vaults") or {}).get("team") for row in rows["nodes"]}


def until_one_head(d: str, bound: float = 120.0) -> float:
    """Seconds until every node shows one head of the vault (polling `pk cluster status`)."""
    start = time.perf_counter()
    while True:
        found = heads(d)
        if len(found) == 1 and None not in found:
            return time.perf_counter() - start
        if time.perf_counter() - start > bound:
            raise SystemExit(f"the cluster did not converge within {bound:g} s: {found}")
        time.sleep(0.05)


def converge(tmp: Path) -> tuple[float, float]:
    """(one write reaching all, converging after heal) on a 5-node --netns cluster."""
    d = str(tmp / "cluster")
    pk("cluster", "up", "--nodes", "5", "--netns", "--sync-interval", "1", "--dir", d)
    try:
        rows = pk_json("cluster", "status", "--dir", d)
        assert isinstance(rows, dict)
        ids = [row["nodeId"] for row in rows["nodes"]]
        envs = []
        for i in range(5):
            e = pk_json("cluster", "env", str(i), "--dir", d)
            assert isinstance(e, dict)
            envs.append({k: str(v) for k, v in e.items()})
        pk_json("vaults", "create", "team", node_env=envs[0])
        pk_json("secrets", "set", "team:base", node_env=envs[0], stdin=b"base")
        for i, role in ((1, "writer"), (2, "writer"), (3, "reader"), (4, "reader")):
            pk_json("vaults", "share", "team", ids[i], "--role", role, node_env=envs[0])
            pk_json("vaults", "clone", "team", ids[0], node_env=envs[i])
        until_one_head(d)
        pk_json("secrets", "set", "team:one", node_env=envs[0], stdin=b"1")
        spread = until_one_head(d)  # from the end of the write
        pk("cluster", "partition", "0,1/2,3,4", "--dir", d)
        pk_json("secrets", "set", "team:left", node_env=envs[0], stdin=b"l")
        pk_json("secrets", "set", "team:right", node_env=envs[2], stdin=b"r")
        pk("cluster", "heal", "--dir", d)
        return spread, until_one_head(d)
    finally:
        pk("cluster", "down", "--dir", d)


def main(quick: bool = False) -> None:
    repeat = 1 if quick else 3
    base, ups, downs, ns_ups, ns_downs = [], [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as t:
            base.append(one_agent(Path(t)))
        with tempfile.TemporaryDirectory() as t:
            up, down = cluster(Path(t))
            ups.append(up)
            downs.append(down)
        if netns.unavailable_reason() is None:
            with tempfile.TemporaryDirectory() as t:
                up, down = cluster(Path(t), "--netns")
                ns_ups.append(up)
                ns_downs.append(down)
    rows = [
        Row("one node: pk bootstrap + pk agent start (KDF min)", base),
        Row(f"pk cluster up --nodes {NODES} (joined the DHT)", ups),
        Row(f"pk cluster down ({NODES} nodes)", downs),
    ]
    if ns_ups:
        rows += [Row(f"pk cluster up --nodes {NODES} --netns", ns_ups),
                 Row(f"pk cluster down ({NODES} nodes, namespaces)", ns_downs)]
    print_table("Local cluster (`pk cluster`)", rows, baseline=rows[0].name)
    if not ns_ups:
        print(f"\n--netns rows skipped: {netns.unavailable_reason()}")
        return
    spreads, heals = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as t:
            spread, heal = converge(Path(t))
            spreads.append(spread)
            heals.append(heal)
    print_table("Local cluster: sync across 5 nodes (`--netns`, `--sync-interval 1`)", [
        Row("one write on node 0 until all 5 show its head", spreads),
        Row("partition 0,1/2,3,4, a write on each side, heal: until all 5 show one head", heals),
    ], baseline="one write on node 0 until all 5 show its head")


if __name__ == "__main__":
    main("--quick" in sys.argv)
