"""`pk vaults ...` end to end: the real `pk` as a subprocess on a bootstrapped node."""

from __future__ import annotations

import subprocess

from ..conftest import Node


def test_vault_lifecycle(node: Node) -> None:
    r = node.pk("vaults", "create", "work", "--format", "json")
    assert r.code == 0, r.err
    vid = r.json["vaultId"]  # type: ignore[index]
    assert node.pk("vaults", "create", "home").code == 0
    listing = node.pk("vaults", "list", "--format", "json").json
    assert [(v["name"], v["role"]) for v in listing] == [("home", "owner"), ("work", "owner")]  # type: ignore[index]
    assert vid in node.pk("vaults", "list").text

    dup = node.pk("vaults", "create", "work")
    assert dup.code == 73 and "already exists" in dup.err

    assert node.pk("vaults", "rename", "work", "job").code == 0
    assert node.pk("secrets", "set", "job:k", input=b"v").code == 0
    assert node.pk("secrets", "get", f"{vid}:k").out == b"v"  # the VaultId works as a name

    missing = node.pk("vaults", "log", "work")
    assert missing.code == 80 and missing.err.startswith("pk: no vault named 'work'")

    assert node.pk("vaults", "delete", "job", "--yes").code == 0
    assert node.pk("vaults", "list", "--format", "json").json == [
        {"name": "home", "role": "owner", "state": "ok", "vaultId": listing[0]["vaultId"]}  # type: ignore[index]
    ]
    assert not (node.path / "vaults" / f"{vid}.git").exists()
    assert node.pk("secrets", "get", "job:k").code == 80


def test_log_version_members_verify(node: Node) -> None:
    node.pk("vaults", "create", "work")
    node.pk("secrets", "set", "work:a", input=b"1")
    first = node.pk("vaults", "log", "work", "--format", "json").json[0]["commit"]  # type: ignore[index]
    node.pk("secrets", "set", "work:b/c", input=b"2")
    node.pk("secrets", "rm", "work:a")

    log = node.pk("vaults", "log", "work", "--format", "json").json
    assert [c["message"] for c in log] == [  # type: ignore[index]
        "remove secret (1 secret)", "set secret", "set secret", "create vault"]
    assert all(c["author"] == node.node_id for c in log)  # type: ignore[union-attr]
    assert len(node.pk("vaults", "log", "work", "-n", "2").text.splitlines()) == 2

    v = node.pk("vaults", "version", "work", first[:10])
    assert v.code == 0 and v.text.splitlines()[1:] == ["a"]
    assert node.pk("secrets", "get", "work:a", "--commit", first).out == b"1"
    assert node.pk("secrets", "get", "work:a").code == 81
    bad = node.pk("vaults", "version", "work", "abcdef12")
    assert bad.code == 83 and "no commit" in bad.err

    members = node.pk("vaults", "members", "work", "--format", "json").json
    assert members == [{"nodeId": node.node_id, "role": "owner", "self": True, "lastSync": None}]

    ok = node.pk("vaults", "verify", "work")
    assert ok.code == 0 and "4 commits" in ok.out.decode()


def test_verify_reports_tampering(node: Node) -> None:
    node.pk("vaults", "create", "work")
    node.pk("secrets", "set", "work:a", input=b"1")
    vid = node.pk("vaults", "list", "--format", "json").json[0]["vaultId"]  # type: ignore[index]
    repo = node.path / "vaults" / f"{vid}.git"
    # Rewrite the head commit's message with stock git: the object is new, its signature no longer matches.
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True).stdout.strip()
    raw = subprocess.run(["git", "-C", str(repo), "cat-file", "commit", head], capture_output=True).stdout
    forged = raw.replace(b"set secret", b"set secreT")
    new = subprocess.run(["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--stdin"], input=forged,
                         capture_output=True).stdout.decode().strip()
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/heads/main", new], check=True)
    r = node.pk("vaults", "verify", "work")
    assert r.code == 65
    assert f"commit {new}: the signature is invalid" in r.err
