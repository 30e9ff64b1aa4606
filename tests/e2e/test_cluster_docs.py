"""docs/cluster.md works as written: its commands, run by a shell in an empty directory (issue 13, done-when)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from ..cluster import alive, wait_for
from ..conftest import base_env, pk_executable

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def blocks() -> list[list[str]]:
    """The ```sh blocks of the page, one command per line, comments dropped."""
    found = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip()] for b in found]


def sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(PATH=f"{Path(pk_executable()).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_three_nodes_in_five_commands_and_the_env_example(tmp_path: Path) -> None:
    five, use_a_node = blocks()[:2]
    assert len(five) == 5 and five[0] == "pk cluster up --nodes 3" and five[-1] == "pk cluster down"
    up = sh(five[0], tmp_path)
    assert up.returncode == 0, up.stderr
    rows = [line.split("  ") for line in up.stdout.splitlines()]
    assert [r[0] for r in rows] == ["node 0", "node 1", "node 2"]
    pids = [int(r[2].removeprefix("pid ")) for r in rows]
    node1 = rows[1][1]
    for line in five[1:-1]:
        r = sh(line.replace("NODEID_OF_NODE_1", node1), tmp_path)
        assert r.returncode == 0, (line, r.stderr)
    assert "verified" in sh(five[2].replace("NODEID_OF_NODE_1", node1), tmp_path).stdout

    r = sh("; ".join(use_a_node), tmp_path)  # one shell: the eval'd exports hold for the lines after
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\ns3cret")  # node 1's vault, through plain pk
    status = sh("pk cluster status --format json", tmp_path)
    vaults = [n["vaults"] for n in json.loads(status.stdout)["nodes"]]
    assert list(vaults[1]) == ["demo"] and vaults[0] == vaults[2] == {}

    r = sh(five[-1], tmp_path)
    assert r.returncode == 0, r.stderr
    assert not any(alive(p) for p in pids)  # `down` returns once the processes are gone
    assert list(tmp_path.iterdir()) == []  # ./pk-cluster is gone: nothing left behind


def test_trying_sharing_with_three_nodes(tmp_path: Path) -> None:
    """"Trying sharing with three nodes": the five commands, then a writer's change reaching a reader."""
    five, after = blocks()[2:4]
    assert len(five) == 5 and five[0].startswith("pk cluster up --nodes 3") and after[-1] == "pk cluster down"
    up = sh(five[0], tmp_path)
    assert up.returncode == 0, up.stderr
    ids = [line.split("  ")[1] for line in up.stdout.splitlines()]
    try:
        outputs = []
        for line in five[1:]:
            for i, node_id in enumerate(ids):
                line = line.replace(f"NODEID_OF_NODE_{i}", node_id)
            r = sh(line, tmp_path)
            assert r.returncode == 0, (line, r.stderr)
            outputs.append(r.stdout)
        assert outputs[-1] == "s3cret"  # node 2, a reader, reads what node 0 wrote

        write, read, status = after[:3]
        assert sh(write, tmp_path).returncode == 0  # node 1, a writer
        wait_for(lambda: sh(read, tmp_path).stdout == "n3w", 60, "node 2 to receive node 1's write")

        def one_head() -> bool:
            rows = json.loads(sh(status + " --format json", tmp_path).stdout)["nodes"]
            heads = {(n["vaults"] or {}).get("team") for n in rows}
            return len(heads) == 1 and None not in heads

        wait_for(one_head, 60, "the same head of team on every node")
    finally:
        r = sh(after[-1], tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
