"""`pk bootstrap` and `pk keys` through the real entry point, as a subprocess."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from polykey.keys import recovery
from polykey.keys.keypair import KeyPair

from ..conftest import Node, base_env, run_pk


def test_bootstrap_json_and_recover_gives_same_node_id(tmp_path: Path, node: Node) -> None:
    assert node.node_id.startswith("v") and len(node.recovery_code.split()) == 24
    code_file = tmp_path / "code.txt"
    code_file.write_text(node.recovery_code + "\n")
    code_file.chmod(0o600)
    other = tmp_path / "other"
    r = run_pk("keys", "recover", "--recovery-code-file", code_file, "--node-path", other,
               "--password-file", node.password_file, "--format", "json")
    assert r.code == 0, r.err
    assert r.json["nodeId"] == node.node_id
    r = run_pk("keys", "public", "--node-path", other, "--format", "json")
    assert r.json["nodeId"] == node.node_id


def test_human_bootstrap_shows_code_once(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("long enough pw")
    pw.chmod(0o600)
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", pw)
    assert r.code == 0, r.err
    lines = r.text.splitlines()
    assert lines[1].startswith("NodeId: v")
    words = lines[-1].split()
    assert len(words) == 24 and recovery.parse_code(lines[-1]) == words
    assert r.text.count(lines[-1]) == 1


def test_recovery_code_out_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("long enough pw")
    pw.chmod(0o600)
    out = tmp_path / "code"
    r = run_pk("bootstrap", "--node-path", tmp_path / "n", "--password-file", pw,
               "--recovery-code-out-file", out, "--format", "json")
    assert r.code == 0, r.err
    assert "recoveryCode" not in r.json
    words = out.read_text().split()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert str(KeyPair.from_seed(recovery.code_to_ed25519_seed(words)).node_id) == r.json["nodeId"]
    # never overwrites an existing code file
    r = run_pk("bootstrap", "--node-path", tmp_path / "m", "--password-file", pw, "--recovery-code-out-file", out)
    assert r.code == 64 and "already exists" in r.err


def test_refuses_existing_node_without_fresh(node: Node) -> None:
    before = (node.path / "keys" / "node.key").read_bytes()
    r = node.pk("bootstrap")
    assert r.code == 73 and "--fresh" in r.err
    assert (node.path / "keys" / "node.key").read_bytes() == before
    r = node.pk("bootstrap", "--fresh", "--yes", "--format", "json")
    assert r.code == 0, r.err
    assert r.json["nodeId"] != node.node_id
    assert not [p for p in node.path.parent.iterdir() if ".old-" in p.name or ".new-" in p.name]


def test_refuses_non_node_directory(tmp_path: Path) -> None:
    d = tmp_path / "stuff"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    pw = tmp_path / "pw"
    pw.write_text("long enough pw")
    pw.chmod(0o600)
    r = run_pk("bootstrap", "--node-path", d, "--password-file", pw, "--fresh")
    assert r.code == 73 and "not a Polykey node" in r.err
    assert (d / "precious.txt").read_text() == "keep me"


def test_password_change(tmp_path: Path, node: Node) -> None:
    new = tmp_path / "new.pw"
    new.write_text("new password\n")
    new.chmod(0o600)
    r = node.pk("keys", "password", "--new-password-file", new)
    assert r.code == 0, r.err
    key = node.path / "keys" / "node.key"
    before = key.read_bytes()
    # the old password no longer unlocks; the key file is untouched by the failure
    r = node.pk("keys", "password", "--new-password-file", new)
    assert r.code == 77 and r.err.strip() == "pk: wrong password"
    assert key.read_bytes() == before
    # the new one does
    r = run_pk("keys", "password", "--node-path", node.path, "--password-file", new,
               "--new-password-file", node.password_file)
    assert r.code == 0, r.err


def test_password_from_environment(tmp_path: Path, node: Node) -> None:
    new = tmp_path / "new.pw"
    new.write_text("x-but-long-enough")
    new.chmod(0o600)
    r = run_pk("keys", "password", "--new-password-file", new,
               env=base_env(PK_NODE_PATH=str(node.path), PK_PASSWORD="wrong"))
    assert r.code == 77
    r = run_pk("keys", "password", "--new-password-file", new,
               env=base_env(PK_NODE_PATH=str(node.path), PK_PASSWORD="correct horse"))
    assert r.code == 0, r.err


def test_no_password_source_fails_fast(tmp_path: Path) -> None:
    r = run_pk("bootstrap", "--node-path", tmp_path / "n")
    assert r.code == 64
    assert len(r.err.strip().splitlines()) == 1 and "PK_PASSWORD" in r.err
    assert not (tmp_path / "n").exists()


def test_private_key_never_on_disk_in_clear(node: Node) -> None:
    seed = recovery.code_to_ed25519_seed(node.recovery_code.split())
    needles = [seed, seed.hex().encode(), base64.b64encode(seed), node.recovery_code.encode()]
    for path in node.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path
    assert stat.S_IMODE(node.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((node.path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((node.path / "keys" / "node.key").stat().st_mode) == 0o600


def test_keys_public_needs_no_password_and_ssh_line(node: Node) -> None:
    r = run_pk("keys", "public", "--node-path", node.path)
    assert r.code == 0, r.err
    assert f"NodeId: {node.node_id}" in r.text
    r = run_pk("--node-path", node.path, "keys", "public", "--ssh")
    algo, blob, comment = r.text.split()
    assert algo == "ssh-ed25519" and comment == node.node_id
    raw = base64.b64decode(blob)
    assert raw[:4] == (11).to_bytes(4, "big") and raw[4:15] == b"ssh-ed25519" and len(raw) == 51


def test_corrupt_key_file_names_the_file(node: Node) -> None:
    key = node.path / "keys" / "node.key"
    key.write_bytes(key.read_bytes()[:50])
    r = node.pk("keys", "password", "--new-password-file", node.password_file)
    assert r.code == 65
    assert str(key) in r.err and "Traceback" not in r.err
    r = run_pk("keys", "public", "--node-path", node.path)
    assert r.code == 65 and len(r.err.strip().splitlines()) == 1


def test_invalid_recovery_codes(tmp_path: Path, node: Node) -> None:
    words = node.recovery_code.split()
    wordlist = recovery.wordlist()
    # Flip the lowest bit of the last word: that bit is checksum, so the checksum must fail.
    flipped = wordlist[wordlist.index(words[-1]) ^ 1]
    cases = {
        "checksum": " ".join(words[:-1] + [flipped]),
        "expected 24 words": " ".join(words[:12]),
    }
    for expected, text in cases.items():
        f = tmp_path / "code"
        f.write_text(text)
        r = run_pk("keys", "recover", "--recovery-code-file", f, "--node-path", tmp_path / "x",
                   "--password-file", node.password_file)
        assert r.code == 65 and expected in r.err, r.err
        assert not (tmp_path / "x").exists()


def test_no_node(tmp_path: Path) -> None:
    r = run_pk("keys", "public", "--node-path", tmp_path / "none")
    assert r.code == 66 and "pk bootstrap" in r.err


def test_help_and_version() -> None:
    r = run_pk("--help")
    assert r.code == 0 and "bootstrap" in r.text and "keys" in r.text
    r = run_pk("keys", "recover", "--help")
    assert r.code == 0 and "--recovery-code-file" in r.text and "--node-path" in r.text
    r = run_pk("--version")
    assert r.code == 0 and "pk" in r.text
    r = run_pk("keys", "nonsense")
    assert r.code == 64


def test_default_node_path_from_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("long enough pw")
    pw.chmod(0o600)
    env = base_env(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("PK_NODE_PATH", None)
    r = run_pk("bootstrap", "--password-file", pw, "--format", "json", env=env)
    assert r.code == 0, r.err
    assert r.json["nodePath"] == os.path.join(str(tmp_path / "xdg"), "polykey")


def test_fresh_replacement_stops_the_old_nodes_agent(tmp_path: Path, node: Node) -> None:
    assert node.pk("vaults", "create", "old").code == 0  # starts the agent on demand
    assert node.pk("agent", "status", "--format", "json").json["state"] == "unlocked"
    r = node.pk("bootstrap", "--fresh", "--yes", "--format", "json")
    assert r.code == 0, r.err
    new_id = r.json["nodeId"]
    # no agent of the old identity is left serving the new node
    assert node.pk("agent", "status", "--format", "json").json["state"] == "stopped"
    assert node.pk("vaults", "list", "--format", "json").json == []
    assert node.pk("agent", "status", "--format", "json").json["nodeId"] == new_id
