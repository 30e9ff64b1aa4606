"""A mistake must not cost a node or a vault (issue 8, items 6, 7, 10 and 17), through the real `pk`."""

from __future__ import annotations

from pathlib import Path

import pytest

from .agent_util import pk, status
from ..conftest import Node, base_env, run_pk


def _pw(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    f = tmp_path / name
    f.write_text(text + "\n")
    f.chmod(mode)
    return f


def _node_with_secret(node: Node) -> None:
    assert node.pk("vaults", "create", "keepme").code == 0
    assert node.pk("secrets", "set", "keepme:db/pw", input=b"kept value").code == 0


# -- item 6: bootstrap checks everything first and creates the node all or nothing -----------


@pytest.mark.parametrize("case", ["out file exists", "out directory missing"])
def test_bootstrap_with_a_bad_code_file_leaves_no_node(tmp_path: Path, case: str) -> None:
    pw = _pw(tmp_path, "pw", "long enough pw")
    out = tmp_path / "code.txt" if case == "out file exists" else tmp_path / "missing" / "code.txt"
    if case == "out file exists":
        out.write_text("an earlier code\n")
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", pw, "--recovery-code-out-file", out)
    assert r.code == 64, r.err
    assert len(r.err.strip().splitlines()) == 1 and str(out) in r.err and "internal error" not in r.err
    assert not (tmp_path / "n").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["code.txt", "pw"] if case == "out file exists" else ["pw"])
    if case == "out file exists":
        assert out.read_text() == "an earlier code\n"


@pytest.mark.parametrize("case", ["out file exists", "out directory missing", "weak password"])
def test_fresh_bootstrap_that_fails_keeps_the_old_node(tmp_path: Path, node: Node, case: str) -> None:
    _node_with_secret(node)
    key = node.path / "keys" / "node.key"
    before = key.read_bytes()
    out = tmp_path / ("missing/code.txt" if case == "out directory missing" else "code.txt")
    if case == "out file exists":
        out.write_text("an earlier code\n")
    args: list[str | Path] = ["bootstrap", "--fresh", "--yes", "--recovery-code-out-file", out]
    if case == "weak password":
        r = pk(node, *args, password=False, env=base_env(PK_PASSWORD="short"))
    else:
        r = pk(node, *args)
    assert r.code == 64 and len(r.err.strip().splitlines()) == 1, r.err
    assert key.read_bytes() == before
    assert node.pk("secrets", "get", "keepme:db/pw").out == b"kept value"
    assert not [p for p in node.path.parent.iterdir() if ".new-" in p.name or ".old-" in p.name]
    assert not out.exists() or out.read_text() == "an earlier code\n"


def test_bootstrap_checks_the_node_path_and_code_file_place_first(tmp_path: Path) -> None:
    pw = _pw(tmp_path, "pw", "long enough pw")
    (tmp_path / "a-file").write_text("not a directory")
    r = run_pk("bootstrap", "--node-path", tmp_path / "a-file" / "n", "--password-file", pw)
    assert r.code == 64 and "is not a writable directory" in r.err and "internal error" not in r.err, r.err
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", pw,
               "--recovery-code-out-file", tmp_path / "n" / "code.txt")
    assert r.code == 64 and "must not be inside the node directory" in r.err, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "pw"]


def test_bootstrap_stages_the_node_and_writes_the_code_with_it(tmp_path: Path) -> None:
    pw = _pw(tmp_path, "pw", "long enough pw")
    out = tmp_path / "code.txt"
    r = run_pk("bootstrap", "--node-path", tmp_path / "deep" / "n", "--password-file", pw,
               "--recovery-code-out-file", out, "--format", "json")
    assert r.code == 0, r.err
    assert (tmp_path / "deep" / "n" / "keys" / "node.key").exists() and len(out.read_text().split()) == 24
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["n"]  # no staging directory left


@pytest.mark.parametrize("target", ["an empty directory", "nothing yet"])
def test_bootstrap_into_a_symlinked_node_path_creates_the_node_at_its_target(tmp_path: Path, target: str) -> None:
    # A node path that is a symlink (e.g. to another disk) is used, not an internal error.
    pw = _pw(tmp_path, "pw", "long enough pw")
    real = tmp_path / "elsewhere" / "node"
    real.parent.mkdir()
    if target == "an empty directory":
        real.mkdir()
    (tmp_path / "n").symlink_to(real)
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", pw, "--format", "json")
    assert r.code == 0, r.err
    assert (tmp_path / "n").is_symlink() and (real / "keys" / "node.key").is_file()
    assert [p.name for p in real.parent.iterdir()] == ["node"]  # no staging directory left


_KILLED_MID_REPLACE = """
import os, signal, sys
from pathlib import Path
from polykey import crypto
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir

node = NodeDir(Path(sys.argv[1]))
real_rename = os.rename

def rename(src, dst, *a, **k):  # SIGKILL right after the node path is moved aside
    real_rename(src, dst, *a, **k)
    if Path(src) == node.path:
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename
node.create(KeyPair.generate(), b"long enough pw", crypto.KDF_PROFILES["min"], fresh=True)
"""


def test_fresh_bootstrap_killed_while_swapping_leaves_a_whole_node_at_the_node_path(tmp_path: Path, node: Node) -> None:
    # kill -9 at any instant of --fresh must leave a node at the node path (the old or the new).
    import subprocess
    import sys

    _node_with_secret(node)
    r = subprocess.run([sys.executable, "-c", _KILLED_MID_REPLACE, str(node.path)], capture_output=True, timeout=60)
    assert r.returncode in (0, -9), r.stderr
    assert (node.path / "keys" / "node.key").is_file(), sorted(p.name for p in node.path.parent.iterdir())


# -- item 7: recover --fresh keeps every vault its key can open ------------------------------


def test_recover_fresh_keeps_the_vaults(tmp_path: Path, node: Node) -> None:
    _node_with_secret(node)
    code = _pw(tmp_path, "code.txt", node.recovery_code)
    new_pw = _pw(tmp_path, "new.pw", "a new password")
    r = run_pk("keys", "recover", "--fresh", "--yes", "--recovery-code-file", code, "--node-path", node.path,
               "--password-file", new_pw, "--format", "json")
    assert r.code == 0, r.err
    assert r.json == {"nodeId": node.node_id, "nodePath": str(node.path), "keptExisting": True}
    assert pk(node, "agent", "stop", password=False).code == 0
    # the new password opens the same node with every vault; the old one no longer does
    r = run_pk("secrets", "get", "keepme:db/pw", "--node-path", node.path, "--password-file", new_pw)
    assert (r.code, r.out) == (0, b"kept value"), r.err
    assert pk(node, "agent", "stop", password=False).code == 0
    r = pk(node, "vaults", "list")
    assert r.code == 77 and r.err.strip() == "pk: wrong password"


def test_recover_fresh_over_a_damaged_key_file_keeps_it_aside_and_the_vaults(tmp_path: Path, node: Node) -> None:
    _node_with_secret(node)
    assert pk(node, "agent", "stop", password=False).code == 0
    key = node.path / "keys" / "node.key"
    damaged = key.read_bytes()[:50]
    key.write_bytes(damaged)
    code = _pw(tmp_path, "code.txt", node.recovery_code)
    r = pk(node, "keys", "recover", "--fresh", "--yes", "--recovery-code-file", code)
    assert r.code == 0, r.err
    assert (node.path / "keys" / "node.key.corrupt").read_bytes() == damaged
    assert node.pk("secrets", "get", "keepme:db/pw").out == b"kept value"


def test_recover_fresh_refuses_another_nodes_words(tmp_path: Path, node: Node) -> None:
    other = tmp_path / "other"
    r = run_pk("bootstrap", "--node-path", other, "--password-file", node.password_file, "--format", "json")
    assert r.code == 0, r.err
    _node_with_secret(node)
    key = node.path / "keys" / "node.key"
    before = key.read_bytes()
    code = _pw(tmp_path, "code.txt", r.json["recoveryCode"])
    r = pk(node, "keys", "recover", "--fresh", "--yes", "--recovery-code-file", code)
    assert r.code == 73 and "another --node-path" in r.err and node.node_id in r.err, r.err
    assert key.read_bytes() == before
    assert node.pk("secrets", "get", "keepme:db/pw").out == b"kept value"


def test_recover_fresh_rebuilds_a_lost_key_file_beside_the_vaults(tmp_path: Path, node: Node) -> None:
    # The recovery code is for a lost key file too: the vaults are still there, wrapped to its key.
    r = run_pk("bootstrap", "--node-path", tmp_path / "other", "--password-file", node.password_file, "--format", "json")
    assert r.code == 0, r.err
    other_code = _pw(tmp_path, "other-code.txt", r.json["recoveryCode"])
    _node_with_secret(node)
    assert pk(node, "agent", "stop", password=False).code == 0
    (node.path / "keys" / "node.key").unlink()
    code = _pw(tmp_path, "code.txt", node.recovery_code)
    r = pk(node, "keys", "recover", "--recovery-code-file", code)
    assert r.code == 73 and "--fresh" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = pk(node, "keys", "recover", "--fresh", "--yes", "--recovery-code-file", other_code)
    assert r.code == 73 and "another --node-path" in r.err, r.err  # another node's words: refused
    assert not (node.path / "keys" / "node.key").exists()
    r = pk(node, "keys", "recover", "--fresh", "--yes", "--recovery-code-file", code, "--format", "json")
    assert r.code == 0, r.err
    assert r.json == {"nodeId": node.node_id, "nodePath": str(node.path), "keptExisting": True}
    assert node.pk("secrets", "get", "keepme:db/pw").out == b"kept value"


def test_recover_help_says_what_fresh_discards() -> None:
    text = " ".join(run_pk("keys", "recover", "--help").text.split())
    assert "Only the old key file (its password) is discarded; vaults and every other file are kept" in text


# -- item 10: unlock checks the password even when the agent is unlocked ---------------------


def test_wrong_password_on_an_unlocked_agent_fails_and_changes_nothing(node: Node) -> None:
    assert pk(node, "agent", "start").code == 0
    before = status(node)
    assert before["state"] == "unlocked"
    r = pk(node, "agent", "unlock", password=False, env=base_env(PK_PASSWORD="wrong password"))
    assert r.code == 77 and r.err.strip() == "pk: wrong password"
    after = status(node)
    assert (after["state"], after["pid"]) == ("unlocked", before["pid"])
    assert pk(node, "agent", "unlock").code == 0


# -- item 17: weak passwords and readable password files -------------------------------------


def test_weak_new_passwords_are_refused_unless_allowed(tmp_path: Path, node: Node) -> None:
    weak = _pw(tmp_path, "weak.pw", "1234567")  # 7 characters
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", weak)
    assert r.code == 64 and "--allow-weak-password" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "n").exists()
    key = node.path / "keys" / "node.key"
    before = key.read_bytes()
    r = node.pk("keys", "password", "--new-password-file", weak)
    assert r.code == 64 and "--allow-weak-password" in r.err
    assert key.read_bytes() == before
    code = _pw(tmp_path, "code.txt", node.recovery_code)
    r = run_pk("keys", "recover", "--recovery-code-file", code, "--node-path", tmp_path / "r", "--password-file", weak)
    assert r.code == 64 and "--allow-weak-password" in r.err
    assert not (tmp_path / "r").exists()
    # eight characters (not bytes) are enough; the flag lets a shorter one through
    assert run_pk("bootstrap", "--node-path", tmp_path / "n8", "--password-file", _pw(tmp_path, "8.pw", "ééééé123")).code == 0
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", weak, "--allow-weak-password")
    assert r.code == 0, r.err


@pytest.mark.parametrize("route", ["click", "fast"])
def test_a_password_file_readable_by_others_is_warned_about(tmp_path: Path, node: Node, route: str) -> None:
    _node_with_secret(node)
    assert pk(node, "agent", "stop", password=False).code == 0
    loose = _pw(tmp_path, "loose.pw", "correct horse", mode=0o644)
    env = base_env(PK_NO_FAST_PATH="1") if route == "click" else base_env()
    r = run_pk("secrets", "get", "keepme:db/pw", "--node-path", node.path, "--password-file", loose, env=env)
    assert (r.code, r.out) == (0, b"kept value"), r.err
    assert r.err.splitlines() == [
        f"pk: warning: password file {loose} is readable by group or others (mode 0644): run `chmod 600 {loose}`"
    ]
    loose.chmod(0o600)
    assert pk(node, "agent", "stop", password=False).code == 0
    r = run_pk("secrets", "get", "keepme:db/pw", "--node-path", node.path, "--password-file", loose, env=env)
    assert (r.code, r.err) == (0, "")
