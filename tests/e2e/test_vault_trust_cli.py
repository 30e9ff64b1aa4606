"""Nothing unverified is ever used (issue 11 items 1, 5, 7), through real agents and the real `pk`.

Each bad head is built on disk with stock git while the agent is stopped, as an attacker with
write access to the vault directory would; the next command starts a real agent. Each must be
refused by reads, writes and `pk vaults verify` alike: one line, its exit code, nothing on
stdout, nothing written (the branch stays where the attacker left it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults import index
from polykey.vaults.identity import NodeKey

from ..conftest import Node, run_on_pty
from . import vault_forge as forge
from .agent_util import pk


def _make(node: Node, name: str = "app") -> Path:
    created = pk(node, "vaults", "create", name, "--format", "json")
    assert created.code == 0, created.err
    assert pk(node, "secrets", "set", f"{name}:db/password", input=b"good").code == 0
    return forge.repo_of(node, created.json["vaultId"])  # type: ignore[index]


def _stop(node: Node) -> None:
    assert pk(node, "agent", "stop", password=False).code == 0


def _refused(node: Node, code: int, *words: str) -> None:
    """Reads, a write and `verify` all fail with ``code`` and one line holding ``words``."""
    for args, given in ((["secrets", "get", "app:db/password"], None), (["secrets", "ls", "app"], None),
                        (["secrets", "set", "app:db/other"], b"v"), (["vaults", "log", "app"], None),
                        (["vaults", "verify", "app"], None)):
        r = pk(node, *args, input=given)
        assert (r.code, r.out) == (code, b""), (args, r.code, r.out, r.err)
        assert len(r.err.splitlines()) == 1 and all(w in r.err for w in words), (args, r.err)


def _attack(node: Node, repo: Path, signer: KeyPair | None) -> str:
    """The attacker's vault state on `main`: readable by the node, value `evil`."""
    vault_id = repo.name.removesuffix(".git")
    tree = forge.attacker_vault_tree(repo, vault_id, node.node_id, ("db", "password"), b"evil")
    who = signer.node_id if signer is not None else NodeId.from_text(node.node_id)
    bad = forge.commit(repo, tree, [forge.head(repo)], who, signer)
    forge.move_main(repo, bad)
    return bad


def test_an_unsigned_head_is_never_served(node: Node) -> None:
    repo = _make(node)
    good = forge.head(repo)
    _stop(node)
    bad = _attack(node, repo, None)
    _refused(node, 65, bad, "not signed")
    assert forge.head(repo) == bad  # nothing was written on top of it
    # The owner's way out: reset to the good commit (it asks; without a terminal it needs --yes).
    r = pk(node, "vaults", "reset", "app", "--to", good)
    assert r.code == 64 and "--yes" in r.err
    r = pk(node, "vaults", "reset", "app", "--to", good, "--yes", "--format", "json")
    assert r.code == 0, r.err
    assert r.json["commit"] == good and r.json["previous"] == bad  # type: ignore[index]
    assert r.json["verified"] == good  # type: ignore[index]
    assert pk(node, "secrets", "get", "app:db/password").out == b"good"
    assert pk(node, "vaults", "verify", "app").code == 0


def test_a_head_signed_by_a_non_member_is_never_served(node: Node) -> None:
    repo = _make(node)
    _stop(node)
    bad = _attack(node, repo, KeyPair.generate())
    _refused(node, 65, bad, "not a member")


def test_a_rollback_is_refused_naming_both_commits(node: Node) -> None:
    repo = _make(node)
    old = forge.head(repo)
    assert pk(node, "secrets", "set", "app:db/password", input=b"newer").code == 0
    new = forge.head(repo)
    _stop(node)
    forge.move_main(repo, old)  # an older, correctly signed commit
    _refused(node, 85, old, new)
    # The owner may accept the old state explicitly; then it is served, and writes go on from it.
    r = pk(node, "vaults", "reset", "app", "--to", old, "--yes")
    assert r.code == 0, r.err
    assert f"branch was at {old}" in r.out.decode() and f"last verified was {new}" in r.out.decode()
    assert pk(node, "secrets", "get", "app:db/password").out == b"good"
    assert pk(node, "secrets", "set", "app:db/password", input=b"again").code == 0
    assert pk(node, "vaults", "verify", "app").code == 0


def _symlink(repo: Path, root: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return sorted(root + [("120000", "a" * 26, forge.write(repo, "blob", b"/etc/passwd"))], key=lambda e: e[1])


def _gitlink(repo: Path, root: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return sorted(root + [("160000", "a" * 26, forge.head(repo))], key=lambda e: e[1])


def _unsorted(repo: Path, root: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    extra = ("100644", "0" * 26, forge.write(repo, "blob", b""))
    return list(reversed(sorted(root + [extra], key=lambda e: e[1])))


@pytest.mark.parametrize("bad_tree", [_symlink, _gitlink, _unsorted], ids=["symlink", "gitlink", "unsorted"])
def test_a_malformed_tree_signed_by_the_owner_is_refused(node: Node, bad_tree) -> None:  # type: ignore[no-untyped-def]
    repo = _make(node)
    owner = forge.owner_key(node)
    _stop(node)
    parent = forge.head(repo)
    root = forge.entries(repo, forge.git(repo, "rev-parse", f"{parent}^{{tree}}"))
    bad = forge.commit(repo, forge.tree(repo, bad_tree(repo, root)), [parent], owner.node_id, owner)
    forge.move_main(repo, bad)
    _refused(node, 65, bad, "malformed")


def test_an_extra_commit_header_is_refused(node: Node) -> None:
    repo = _make(node)
    owner = forge.owner_key(node)
    _stop(node)
    parent = forge.head(repo)
    tree = forge.git(repo, "rev-parse", f"{parent}^{{tree}}")
    bad = forge.commit(repo, tree, [parent], owner.node_id, owner, extra_header="encoding UTF-8\n")
    forge.move_main(repo, bad)
    _refused(node, 65, bad, "headers")


def test_a_tampered_or_missing_state_file_is_reported(node: Node) -> None:
    repo = _make(node)
    head = forge.head(repo)
    state = node.path / "vaults" / "state"
    _stop(node)
    data = bytearray(state.read_bytes())
    data[-1] ^= 0x01
    state.write_bytes(bytes(data))
    _refused(node, 86, "state")
    _stop(node)
    state.unlink()
    _refused(node, 86, "state file is missing")
    # An owner pins the vault again; the state file is rebuilt.
    r = pk(node, "vaults", "reset", "app", "--to", head, "--yes")
    assert r.code == 0, r.err
    assert pk(node, "secrets", "get", "app:db/password").out == b"good"
    assert state.exists()


def test_a_normal_vault_keeps_working_across_agent_restarts(node: Node) -> None:
    _make(node)
    for value in (b"one", b"two"):
        _stop(node)
        assert pk(node, "secrets", "get", "app:db/password").code == 0
        assert pk(node, "secrets", "set", "app:db/password", input=value).code == 0
    _stop(node)
    assert pk(node, "secrets", "get", "app:db/password").out == b"two"
    assert pk(node, "vaults", "verify", "app").code == 0


def _as_before_the_state_file(node: Node) -> None:
    """What today's `main` leaves: no state file, a version 1 name index."""
    _stop(node)
    (node.path / "vaults" / "state").unlink()
    key = NodeKey(forge.owner_key(node)).derive(index.KEY_INFO, 32)
    path = node.path / "vaults" / "index"
    path.write_bytes(index.encode(key, index.decode(key, path.read_bytes())))


def test_a_vault_written_before_the_state_file_is_adopted(node: Node) -> None:
    repo = _make(node)
    _make(node, "other")
    _as_before_the_state_file(node)
    assert pk(node, "secrets", "get", "app:db/password").out == b"good"
    assert (node.path / "vaults" / "state").exists()
    _stop(node)
    forge.move_main(repo, forge.git(repo, "rev-parse", "HEAD~1"))  # now pinned: a rollback is seen
    r = pk(node, "secrets", "get", "app:db/password")
    assert r.code == 85, r.err
    assert pk(node, "secrets", "get", "other:db/password").out == b"good"  # adopted at its first open


def test_an_unsigned_head_on_a_vault_being_adopted_is_refused(node: Node) -> None:
    repo = _make(node)
    _as_before_the_state_file(node)
    bad = _attack(node, repo, None)
    _refused(node, 65, bad, "not signed")


@pytest.mark.parametrize("answer", [b"n", b"y"])
def test_reset_asks_on_a_terminal(node: Node, answer: bytes) -> None:
    repo = _make(node)
    first = forge.head(repo)
    assert pk(node, "secrets", "set", "app:db/password", input=b"newer").code == 0
    code, out = run_on_pty(["vaults", "reset", "app", "--to", first, "--node-path", str(node.path),
                            "--password-file", str(node.password_file)], [answer])
    assert b"[y/N]" in out, out
    if answer == b"y":
        assert code == 0 and pk(node, "secrets", "get", "app:db/password").out == b"good", out
    else:
        assert code == 130 and pk(node, "secrets", "get", "app:db/password").out == b"newer", out
