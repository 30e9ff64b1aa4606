"""The in-place upgrade of format version 1 vaults (issue 11 item 8), on a node written by v1 code.

tests/fixtures/v1-node was made by tests/fixtures/make_v1_node.py with the code of format version 1:
two vaults with a few secrets over a few commits. A real agent opened on a copy of it must read
every secret back, upgrade each vault with one signed commit, and leave a history that
`pk vaults verify`, stock `git fsck --strict` and `git verify-commit` accept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from polykey.vaults.format import UPGRADED, V1, V2

from ..conftest import Node
from . import vault_forge as forge
from .agent_util import pk

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _v1_node(tmp_path: Path) -> tuple[Node, dict[str, dict[str, object]]]:
    path = tmp_path / "node"
    shutil.copytree(FIXTURES / "v1-node", path)
    for root, dirs, files in os.walk(path):  # a checkout does not keep the node's private modes
        os.chmod(root, 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)
    pw = tmp_path / "node.pw"
    shutil.copyfile(FIXTURES / "v1-node.pw", pw)
    pw.chmod(0o600)
    node = Node(path, pw, node_id="", recovery_code="")
    node.node_id = json.loads(pk(node, "keys", "public", "--format", "json").out)["nodeId"]
    return node, json.loads((FIXTURES / "v1-node.json").read_text())


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def test_a_v1_node_is_upgraded_in_place(tmp_path: Path) -> None:
    node, expected = _v1_node(tmp_path)
    for vault, want in expected.items():
        repo = forge.repo_of(node, str(want["vaultId"]))
        assert forge.vault_info(repo, forge.head(repo)).version == V1  # as the v1 code left it
        assert forge.head(repo) == want["head"]
        for path, value in want["secrets"].items():  # type: ignore[attr-defined]
            r = pk(node, "secrets", "get", f"{vault}:{path}")
            assert (r.code, r.out) == (0, value.encode()), r.err
        log = pk(node, "vaults", "log", vault, "--format", "json").json
        assert isinstance(log, list) and len(log) == int(want["commits"]) + 1  # type: ignore[call-overload]
        assert log[0]["message"].strip() == "upgrade vault format to version 2"
        assert log[0]["parents"] == [want["head"]] and log[0]["author"] == node.node_id
        info = forge.vault_info(repo, forge.head(repo))
        assert (info.version, info.origin, str(info.vault_id)) == (V2, UPGRADED, want["vaultId"])
        assert forge.wrapped_keys(repo, forge.head(repo)).commitment is not None
        assert pk(node, "vaults", "verify", vault).code == 0
        fsck = _git(repo, "fsck", "--strict")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        signers = tmp_path / "allowed_signers"
        signers.write_text(f"{node.node_id}@polykey {pk(node, 'keys', 'public', '--ssh').text.strip()}\n")
        for c in _git(repo, "rev-list", "main").stdout.split():
            r = _git(repo, "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", c)
            assert r.returncode == 0 and 'Good "git" signature' in r.stderr, r.stderr
    # Upgraded once: a restarted agent reads on, writes on top, and makes no second upgrade commit.
    assert pk(node, "agent", "stop", password=False).code == 0
    assert pk(node, "secrets", "set", "app:db/password", input=b"after").code == 0
    assert pk(node, "secrets", "get", "app:db/password").out == b"after"
    log = pk(node, "vaults", "log", "app", "--format", "json").json
    assert isinstance(log, list) and [e["message"].strip() for e in log[:2]] == [
        "set secret", "upgrade vault format to version 2"]
    assert pk(node, "vaults", "verify", "app").code == 0
