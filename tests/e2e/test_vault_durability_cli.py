"""Faults and confidentiality on disk: kill -9 during writes; no secret name or value in clear."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from polykey.keys.store import NodeDir
from polykey.vaults.service import VaultService

from ..conftest import Node, base_env, pk_executable

WRITER = r"""
import sys
from pathlib import Path
from polykey.keys.store import NodeDir
from polykey.vaults.service import VaultService

node, pw, start = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes().strip(), int(sys.argv[3])
svc = VaultService(node, NodeDir(node).unlock(pw))
print("ready", flush=True)
i = start
while True:
    if i % 7 == 0:
        svc.import_secrets("work", {f"k/{(i + j) % 40}": f"value-{i}".encode() for j in range(3)})
    else:
        svc.set_secret("work", f"k/{i % 40}", f"value-{i}".encode())
    print(i, flush=True)  # reported done only after set_secret returned
    i += 1
"""


def _keys_of(i: int) -> list[int]:
    return [(i + j) % 40 for j in range(3)] if i % 7 == 0 else [i % 40]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def test_kill_9_during_writes_loses_nothing_reported(node: Node, tmp_path: Path) -> None:
    assert node.pk("vaults", "create", "work").code == 0
    vid = node.pk("vaults", "list", "--format", "json").json[0]["vaultId"]  # type: ignore[index]
    repo = node.path / "vaults" / f"{vid}.git"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(1234)
    latest: dict[int, int] = {}  # key -> the last write to it that was reported done
    start = 1
    for _round in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(node.path), str(node.password_file), str(start)],
                                stdout=subprocess.PIPE, env=base_env())
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read().decode()
        proc.wait()
        done = [int(line) for line in out.split()]
        for i in done:
            for k in _keys_of(i):
                latest[k] = i
        start = (done[-1] if done else start) + 2  # skip the write that may have been in flight

        fsck = _git(repo, "fsck", "--strict", "--no-dangling")
        assert fsck.returncode == 0 and not fsck.stdout, fsck.stdout + fsck.stderr
        svc = VaultService(node.path, NodeDir(node.path).unlock(node.password_file.read_bytes().strip()))
        try:
            for k, i in latest.items():
                got = int(svc.get_secret("work", f"k/{k}").decode().removeprefix("value-"))
                assert got >= i, (k, got, i)  # the reported write, or a later one that was in flight
        finally:
            svc.close()

    assert len(latest) > 10
    assert node.pk("secrets", "get", f"work:k/{max(latest, key=latest.__getitem__)}").code == 0
    assert node.pk("vaults", "verify", "work").code == 0


def test_kill_9_of_the_cli_leaves_a_clean_vault(node: Node) -> None:
    assert node.pk("vaults", "create", "work").code == 0
    vid = node.pk("vaults", "list", "--format", "json").json[0]["vaultId"]  # type: ignore[index]
    args = ["--node-path", str(node.path), "--password-file", str(node.password_file)]
    rng = random.Random(99)
    for n in range(6):
        proc = subprocess.Popen([pk_executable(), "secrets", "set", f"work:cli/{n}", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=base_env())
        assert proc.stdin is not None
        proc.stdin.write(b"v")
        proc.stdin.close()
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        if code == 0:
            assert node.pk("secrets", "get", f"work:cli/{n}").out == b"v"
    r = _git(node.path / "vaults" / f"{vid}.git", "fsck", "--strict", "--no-dangling")
    assert r.returncode == 0, r.stdout + r.stderr
    assert node.pk("secrets", "set", "work:after", input=b"ok").code == 0
    assert node.pk("vaults", "verify", "work").code == 0


def test_no_name_or_value_in_clear_under_the_node_dir(node: Node, tmp_path: Path) -> None:
    vault = "VaultNameZebra"
    secrets = {
        "DirPlatypus/SecretNarwhal": b"ValueQuokka-1",
        "DirPlatypus/Inner/SecretAxolotl": b"ValueCapybara-2",
        "SecretOkapi": b"ValuePangolin-3",
    }
    assert node.pk("vaults", "create", vault).code == 0
    for path, value in secrets.items():
        assert node.pk("secrets", "set", f"{vault}:{path}", input=value).code == 0
    node.pk("secrets", "mkdir", f"{vault}:DirTardigrade")
    node.pk("secrets", "cp", f"{vault}:SecretOkapi", f"{vault}:DirTardigrade")
    node.pk("secrets", "mv", f"{vault}:DirPlatypus/Inner", f"{vault}:DirMeerkat")
    node.pk("secrets", "generate", f"{vault}:SecretWombat")
    generated = node.pk("secrets", "get", f"{vault}:SecretWombat").out
    words = [vault, "Platypus", "Narwhal", "Axolotl", "Okapi", "Tardigrade", "Meerkat", "Wombat",
             "Quokka", "Capybara", "Pangolin"]
    needles = [w.encode() for w in words] + [w.lower().encode() for w in words] + [generated]

    files = [p for p in node.path.rglob("*") if p.is_file()]
    assert any("objects" in p.parts for p in files)
    for p in node.path.rglob("*"):
        assert not any(w.lower() in str(p.relative_to(node.path)).lower() for w in words), p
    for p in files:
        data = p.read_bytes()
        for needle in needles:
            assert needle not in data, (p, needle)

    # Git objects are zlib-compressed on disk: also read every object's decompressed content.
    for repo in (node.path / "vaults").glob("*.git"):
        batch = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
                               capture_output=True, check=True).stdout
        assert len(batch) > 1000
        for needle in needles:
            assert needle not in batch, needle
    assert os.stat(node.path / "vaults").st_mode & 0o077 == 0


CONCURRENT = r"""
import sys
from pathlib import Path
from polykey.keys.store import NodeDir
from polykey.vaults.service import VaultService

node, pw, tag = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes().strip(), sys.argv[3]
svc = VaultService(node, NodeDir(node).unlock(pw))
for i in range(25):
    svc.set_secret("work", f"{tag}/{i}", f"{tag}-{i}".encode())
    assert svc.get_secret("work", f"{tag}/{i}") == f"{tag}-{i}".encode()
"""


def test_two_processes_writing_one_vault_lose_nothing(node: Node, tmp_path: Path) -> None:
    assert node.pk("vaults", "create", "work").code == 0
    script = tmp_path / "concurrent.py"
    script.write_text(CONCURRENT)
    procs = [subprocess.Popen([sys.executable, str(script), str(node.path), str(node.password_file), tag],
                              env=base_env()) for tag in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    listing = node.pk("secrets", "ls", "-r", "work", "--format", "json").json
    assert len([e for e in listing if e["type"] == "secret"]) == 75  # type: ignore[union-attr, index]
    assert node.pk("secrets", "get", "work:b/24").out == b"b-24"
    assert len(node.pk("vaults", "log", "work", "--format", "json").json) == 76  # type: ignore[arg-type]
    assert node.pk("vaults", "verify", "work").code == 0


def test_the_agent_removes_what_interrupted_writes_left(node: Node) -> None:
    """A create killed before its rename, a delete killed before its rmtree and an atomic write
    killed before its replace leave dot-entries behind; the next agent start removes them and
    touches nothing else."""
    assert node.pk("vaults", "create", "keep").code == 0
    assert node.pk("secrets", "set", "keep:a", input=b"kept").code == 0
    assert node.pk("agent", "stop").code == 0
    vaults = node.path / "vaults"
    before = sorted(p.name for p in vaults.iterdir())
    for name in (".tmp-vdeadbeef.git", ".trash-vcafe.git"):
        (vaults / name / "objects").mkdir(parents=True)
        (vaults / name / "objects" / "x").write_bytes(b"half-built")
    (vaults / ".index.0123456789ab.tmp").write_bytes(b"half-written")
    assert node.pk("vaults", "list").code == 0  # starts the agent again
    assert sorted(p.name for p in vaults.iterdir()) == before
    assert node.pk("secrets", "get", "keep:a").out == b"kept"
    log = (node.path / "agent.log").read_text()
    assert "removed 3 leftover(s) of interrupted vault writes" in log
