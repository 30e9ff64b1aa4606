"""Destructive commands ask first (issue 8, item 8): y/N on a terminal, --yes (or --force) without one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .agent_util import pk
from ..conftest import Node, run_on_pty


@pytest.fixture
def work(node: Node) -> Node:
    assert node.pk("vaults", "create", "work").code == 0
    for path, value in (("db/pw", b"one"), ("db/user", b"two"), ("api", b"three")):
        assert node.pk("secrets", "set", f"work:{path}", input=value).code == 0
    return node


def _vaults(node: Node) -> list[str]:
    rows = node.pk("vaults", "list", "--format", "json").json
    assert isinstance(rows, list)
    return [r["name"] for r in rows]


def _value(node: Node, path: str) -> bytes:
    return node.pk("secrets", "get", f"work:{path}").out


# Each case: the command (after `pk`), how it is confirmed, and a check that it did nothing /
# that it did its work.
Check = Callable[[Node], bool]
CASES: dict[str, tuple[list[str], str, Check, Check]] = {
    "vaults delete": (["vaults", "delete", "work"], "--yes",
                      lambda n: _vaults(n) == ["work"], lambda n: _vaults(n) == []),
    "secrets rm -r": (["secrets", "rm", "-r", "work:db"], "--yes",
                      lambda n: _value(n, "db/pw") == b"one", lambda n: n.pk("secrets", "get", "work:db/pw").code == 81),
    "generate over a secret": (["secrets", "generate", "work:api"], "--force",
                               lambda n: _value(n, "api") == b"three", lambda n: len(_value(n, "api")) == 32),
}


@pytest.mark.parametrize("name", CASES)
def test_without_a_terminal_they_refuse_unless_confirmed(work: Node, name: str) -> None:
    args, flag, unchanged, done = CASES[name]
    r = work.pk(*args)
    assert r.code == 64 and len(r.err.strip().splitlines()) == 1, r.err
    assert f"pass {flag}" in r.err
    assert unchanged(work)
    r = work.pk(*args, flag)
    assert r.code == 0, r.err
    assert done(work)


def test_short_flags_and_generate_of_a_new_secret(work: Node) -> None:
    assert work.pk("secrets", "generate", "work:fresh-one").code == 0  # nothing to overwrite: no question
    assert work.pk("secrets", "generate", "work:fresh-one", "-f").code == 0
    assert work.pk("secrets", "rm", "work:api").code == 0  # one secret, no -r: stays in history, no question
    assert work.pk("secrets", "rm", "-r", "-y", "work:db").code == 0
    assert work.pk("vaults", "delete", "-y", "work").code == 0


def test_rm_r_of_a_missing_path_removes_nothing_and_asks_nothing(work: Node) -> None:
    r = work.pk("secrets", "rm", "-r", "--yes", "work:db", "work:typo")
    assert r.code == 81
    assert _value(work, "db/pw") == b"one"


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("answer", [b"n", b"", b"y"])
def test_on_a_terminal_they_ask(work: Node, name: str, answer: bytes) -> None:
    args, _, unchanged, done = CASES[name]
    code, out = run_on_pty([*args, "--node-path", str(work.path), "--password-file", str(work.password_file)],
                           [answer])
    assert b"[y/N]" in out, out
    if answer == b"y":
        assert code == 0, out
        assert done(work)
    else:
        assert code == 130 and b"aborted; nothing was changed" in out, out
        assert unchanged(work)


def test_fresh_bootstrap_and_recover_ask_on_a_terminal(tmp_path: Path, work: Node) -> None:
    key = work.path / "keys" / "node.key"
    before = key.read_bytes()
    common = ["--node-path", str(work.path), "--password-file", str(work.password_file)]
    code, out = run_on_pty(["bootstrap", "--fresh", *common], [b"n"])
    assert code == 130 and b"Its keys, vaults and every other file in it are lost" in out, out
    assert key.read_bytes() == before
    code_file = tmp_path / "code.txt"
    code_file.write_text(work.recovery_code)
    code_file.chmod(0o600)
    recover = ["keys", "recover", "--fresh", "--recovery-code-file", str(code_file), *common]
    code, out = run_on_pty(recover, [b"no"])
    assert code == 130 and b"Its vaults are kept" in out, out
    assert key.read_bytes() == before
    # without a terminal: refused at once, naming --yes
    for args in (["bootstrap", "--fresh"], recover[:-4]):
        r = pk(work, *args)
        assert r.code == 64 and "pass --yes" in r.err and len(r.err.strip().splitlines()) == 1, r.err
        assert key.read_bytes() == before
    code, out = run_on_pty(recover, [b"y"])
    assert code == 0, out
    assert key.read_bytes() != before and _value(work, "db/pw") == b"one"
    code, out = run_on_pty(["bootstrap", "--fresh", *common], [b"yes"])
    assert code == 0 and b"Recovery code" in out, out
    assert _vaults(work) == []
