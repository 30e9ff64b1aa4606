"""docs/cluster.md works as written: its commands, run by a shell in an empty directory (issue 13, done-when)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from ..cluster import alive
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
