"""One damaged vault never takes the node's listing or its other vaults down (issue 8 item 3).

Each kind of damage is made on disk while the agent is stopped; the next command starts a real
agent on demand, which finds the damage when it opens the vault.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import Node, base_env
from .agent_util import pk

IDX_SHA_TABLE = 8 + 256 * 4  # pack index v2: magic, version, fanout; then the sorted object ids


def _flip_idx_byte(repo: Path) -> None:
    """Flip one byte of the head commit's id in the pack index that lists it."""
    head = bytes.fromhex((repo / "refs" / "heads" / "main").read_text().strip())
    for idx in (repo / "objects" / "pack").glob("*.idx"):
        data = bytearray(idx.read_bytes())
        count = int.from_bytes(data[IDX_SHA_TABLE - 4 : IDX_SHA_TABLE], "big")  # fanout[255]
        ids = [bytes(data[IDX_SHA_TABLE + 20 * i : IDX_SHA_TABLE + 20 * i + 20]) for i in range(count)]
        if head in ids:
            data[IDX_SHA_TABLE + 20 * ids.index(head) + 19] ^= 0x01
            idx.write_bytes(bytes(data))
            return
    raise AssertionError("the head commit is in no pack index")


def _delete_pack(repo: Path) -> None:
    sorted((repo / "objects" / "pack").glob("*.pack"))[0].unlink()


def _ref_to_missing_object(repo: Path) -> None:
    (repo / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")


def _garbage_ref(repo: Path) -> None:
    (repo / "refs" / "heads" / "main").write_bytes(b"garbage \xff\x00 not a ref\n")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "flipped-idx-byte": _flip_idx_byte,
    "deleted-pack": _delete_pack,
    "ref-to-missing-object": _ref_to_missing_object,
    "garbage-ref": _garbage_ref,
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_one_damaged_vault(node: Node, tmp_path: Path, kind: str) -> None:
    ids = {}
    for name in ("alpha", "broken", "zeta"):
        created = pk(node, "vaults", "create", name, "--format", "json")
        assert created.code == 0, created.err
        ids[name] = created.json["vaultId"]  # type: ignore[index]
        assert pk(node, "secrets", "set", f"{name}:db/password", input=f"{name}-pw".encode()).code == 0
    assert pk(node, "agent", "stop").code == 0
    DAMAGE[kind](node.path / "vaults" / f"{ids['broken']}.git")

    # The listing shows every vault and marks the damaged one (exit 0).
    r = pk(node, "vaults", "list", "--format", "json")
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in r.json}  # type: ignore[union-attr]
    assert sorted(rows) == ["alpha", "broken", "zeta"]
    for healthy in ("alpha", "zeta"):
        assert rows[healthy] == {"name": healthy, "vaultId": ids[healthy], "role": "owner", "state": "ok"}
    broken = rows["broken"]
    assert broken["state"] == "damaged" and broken["role"] is None and broken["vaultId"] == ids["broken"]
    assert isinstance(broken["reason"], str) and broken["reason"]
    human = pk(node, "vaults", "list")
    assert human.code == 0
    lines = {line.split("\t")[0]: line for line in human.text.splitlines()}
    assert "DAMAGED" in lines["broken"] and broken["reason"] in lines["broken"]
    assert "DAMAGED" not in lines["alpha"] + lines["zeta"]
    assert pk(node, "secrets", "ls").out == human.out

    # Every command on the other vaults keeps working, on both routes into pk.
    assert pk(node, "secrets", "get", "alpha:db/password").out == b"alpha-pw"
    assert pk(node, "secrets", "get", "zeta:db/password", env=base_env(PK_NO_FAST_PATH="1")).out == b"zeta-pw"
    assert pk(node, "secrets", "set", "alpha:new", input=b"n").code == 0
    assert pk(node, "secrets", "ls", "alpha").text == "db/\nnew\n"
    assert pk(node, "vaults", "log", "zeta").code == 0
    assert pk(node, "vaults", "verify", "alpha").code == 0
    env = pk(node, "secrets", "env", "alpha:db", "zeta:db/password=Z", "--env-format", "json")
    assert json.loads(env.out) == {"password": "alpha-pw", "Z": "zeta-pw"}
    assert pk(node, "inject", input=b"{{ pk://zeta/db/password }}").out == b"zeta-pw"

    # Commands on the damaged vault: one line naming it, exit 65 (EX_DATAERR), nothing printed.
    for args in (
        ["secrets", "get", "broken:db/password"],
        ["secrets", "ls", "broken"],
        ["secrets", "set", "broken:x"],
        ["vaults", "log", "broken"],
        ["vaults", "members", "broken"],
        ["secrets", "stat", "broken:db/password"],
        ["secrets", "env", "broken:db/password"],
    ):
        r = pk(node, *args, input=b"v")
        assert (r.code, r.out) == (65, b""), (args, r.err)
        assert len(r.err.splitlines()) == 1 and "vault 'broken' is damaged" in r.err, (args, r.err)
    r = pk(node, "vaults", "verify", "broken")
    assert r.code == 65 and len(r.err.splitlines()) == 1

    # The remedy works on it: it can be renamed and deleted; the others stay.
    assert pk(node, "vaults", "rename", "broken", "old-broken").code == 0
    assert pk(node, "vaults", "delete", "old-broken", "--yes").code == 0
    assert [row["name"] for row in pk(node, "vaults", "list", "--format", "json").json] == ["alpha", "zeta"]  # type: ignore[union-attr, index]


def _rm_objects(repo: Path) -> None:
    import shutil

    shutil.rmtree(repo / "objects")


def _rm_repo(repo: Path) -> None:
    import shutil

    shutil.rmtree(repo)


def _repo_is_a_file(repo: Path) -> None:
    _rm_repo(repo)
    repo.write_text("not a repository\n")


@pytest.mark.parametrize("damage", [_rm_objects, _rm_repo, _repo_is_a_file], ids=["objects", "repo", "repo-is-a-file"])
def test_a_vault_damaged_under_a_running_agent(node: Node, damage: Callable[[Path], None]) -> None:
    """The repository's files go away while the agent has the vault open: a write to it fails
    with the damaged vault's one line and exit 65 (it was 'internal error', exit 70, and a
    traceback in agent.log); the other vaults keep working."""
    ids = {}
    for name in ("alpha", "broken"):
        created = pk(node, "vaults", "create", name, "--format", "json")
        assert created.code == 0, created.err
        ids[name] = created.json["vaultId"]  # type: ignore[index]
        assert pk(node, "secrets", "set", f"{name}:db/password", input=b"pw").code == 0
    damage(node.path / "vaults" / f"{ids['broken']}.git")
    r = pk(node, "secrets", "set", "broken:db/other", input=b"v")
    assert (r.code, r.out) == (65, b""), r.err
    assert len(r.err.splitlines()) == 1 and "vault 'broken' is damaged" in r.err, r.err
    assert pk(node, "secrets", "set", "alpha:db/other", input=b"v").code == 0
    assert pk(node, "secrets", "get", "alpha:db/other").out == b"v"
    assert "Traceback" not in (node.path / "agent.log").read_text()
