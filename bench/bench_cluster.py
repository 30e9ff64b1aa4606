"""`pk cluster`: how long a local cluster takes to come up and go down (issue 13, "Bench").

Run: ``python -m bench cluster [--quick]``. Each sample runs the installed ``pk`` as a user
would, in a fresh temp directory: ``pk cluster up --nodes 10`` (bootstrap ten nodes with the
test KDF profile, start their agents, wait until every one has joined the DHT), then
``pk cluster down``; with root and iproute2, the same with ``--netns``. The baseline is one
node's ``pk bootstrap`` + ``pk agent start`` with the same KDF profile.

(The figures that need vault sharing, a partitioned cluster converging after heal and one
write reaching 20 members, come with the sharing issue.)
"""

from __future__ import annotations

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


if __name__ == "__main__":
    main("--quick" in sys.argv)
