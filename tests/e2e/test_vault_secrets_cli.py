"""`pk secrets ...` end to end: the real `pk` as a subprocess (and on a real pty where it matters)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ..conftest import Node, base_env, run_on_pty


@pytest.fixture
def vnode(node: Node) -> Node:
    assert node.pk("vaults", "create", "work").code == 0
    return node


def test_set_get_binary_from_stdin_and_file(vnode: Node, tmp_path: Path) -> None:
    value = bytes(range(256)) + b"\n\x00end"
    r = vnode.pk("secrets", "set", "work:bin/blob", input=value)
    assert r.code == 0, r.err
    got = vnode.pk("secrets", "get", "work:bin/blob")
    assert got.code == 0 and got.out == value  # raw bytes, no newline added on a pipe
    assert vnode.pk("secrets", "cat", "work:bin/blob").out == value
    f = tmp_path / "v"
    f.write_bytes(b"from file")
    assert vnode.pk("secrets", "write", "work:f", "--from-file", f).code == 0
    assert vnode.pk("secrets", "get", "work:f").out == b"from file"
    assert vnode.pk("secrets", "get", "work:f", "--format", "json").json == {"path": "f", "value": "from file"}
    j = vnode.pk("secrets", "get", "work:bin/blob", "--format", "json").json
    assert "valueBase64" in j  # type: ignore[operator]


def test_errors_and_exit_codes(vnode: Node) -> None:
    vnode.pk("secrets", "set", "work:db/password", input=b"p")
    cases = [
        (("secrets", "get", "work:nope"), 81, "no secret 'nope'"),
        (("secrets", "get", "nope:x"), 80, "no vault named 'nope'"),
        (("secrets", "set", "work:db"), 82, "is a directory"),
        (("secrets", "set", "work:db/password/x"), 82, "is a secret, not a directory"),
        (("secrets", "get", "work:db"), 82, "is a directory"),
        (("secrets", "rm", "work:db"), 82, "use -r"),
        (("secrets", "mkdir", "work:db"), 73, "already exists"),
        (("secrets", "mkdir", "work:db/password"), 82, "cannot make a directory over it"),
        (("secrets", "cp", "work:db", "work:db/password"), 64, "into itself"),
        (("secrets", "get", "work"), 64, "VAULT:PATH"),
        (("secrets", "get", "work:../x"), 64, "'..'"),
    ]
    for args, code, words in cases:
        r = vnode.pk(*args, input=b"x")
        assert (r.code, words in r.err) == (code, True), (args, r.code, r.err)
        assert r.err.count("\n") == 1 and "Traceback" not in r.err


def test_tree_operations(vnode: Node) -> None:
    for path, value in (("a/1", b"1"), ("a/b/2", b"2"), ("top", b"t")):
        assert vnode.pk("secrets", "set", f"work:{path}", input=value).code == 0
    assert vnode.pk("secrets", "mkdir", "work:empty").code == 0
    assert vnode.pk("secrets", "ls", "work").text.splitlines() == ["a/", "empty/", "top"]
    assert vnode.pk("secrets", "ls", "-r", "work:a").text.splitlines() == ["1", "b/", "b/2"]
    assert vnode.pk("secrets", "cp", "work:a", "work:c").code == 0
    assert vnode.pk("secrets", "mv", "work:top", "empty").code == 0
    assert vnode.pk("secrets", "get", "work:empty/top").out == b"t"
    assert vnode.pk("secrets", "get", "work:c/b/2").out == b"2"
    assert vnode.pk("secrets", "rm", "-r", "--yes", "work:a").code == 0
    assert vnode.pk("secrets", "ls", "-r", "work", "--format", "json").json == [
        {"name": "c", "path": "c", "type": "dir"},
        {"name": "1", "path": "c/1", "type": "secret"},
        {"name": "b", "path": "c/b", "type": "dir"},
        {"name": "2", "path": "c/b/2", "type": "secret"},
        {"name": "empty", "path": "empty", "type": "dir"},
        {"name": "top", "path": "empty/top", "type": "secret"},
    ]
    assert vnode.pk("secrets", "mv", "work:c", "other:x").code == 64


def test_stat_history_revert(vnode: Node) -> None:
    vnode.pk("secrets", "set", "work:k", input=b"one")
    first = vnode.pk("vaults", "log", "work", "--format", "json").json[0]["commit"]  # type: ignore[index]
    vnode.pk("secrets", "set", "work:k", input=b"second")
    st = vnode.pk("secrets", "stat", "work:k", "--format", "json").json
    assert st["size"] == 6 and st["revisions"] == 2 and st["author"] == vnode.node_id  # type: ignore[index]
    assert "revisions: 2" in vnode.pk("secrets", "stat", "work:k").text
    hist = vnode.pk("secrets", "history", "work:k", "--format", "json").json
    assert [(h["action"], h["size"]) for h in hist] == [("modified", 6), ("created", 3)]  # type: ignore[index]
    r = vnode.pk("secrets", "revert", "work:k", first[:12])
    assert r.code == 0, r.err
    assert vnode.pk("secrets", "get", "work:k").out == b"one"
    assert len(vnode.pk("secrets", "history", "work:k").text.splitlines()) == 3


def test_generate_never_prints_unless_asked(vnode: Node) -> None:
    r = vnode.pk("secrets", "generate", "work:pw", "--length", "24", "--charset", "digits")
    assert r.code == 0
    value = vnode.pk("secrets", "get", "work:pw").out
    assert len(value) == 24 and value.isdigit()
    assert value not in r.out and value.decode() not in r.err
    shown = vnode.pk("secrets", "generate", "work:pw2", "--reveal")
    assert shown.out == vnode.pk("secrets", "get", "work:pw2").out and len(shown.out) == 32


def test_edit_uses_a_private_tmpfs_file_and_removes_it(vnode: Node, tmp_path: Path) -> None:
    record = tmp_path / "record"
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import os, stat, sys\n"
        "f = sys.argv[1]\n"
        "d = os.path.dirname(f)\n"
        f"open({str(record)!r}, 'w').write(f + '\\n' + oct(stat.S_IMODE(os.stat(d).st_mode)) + '\\n'"
        " + oct(stat.S_IMODE(os.stat(f).st_mode)) + '\\n' + open(f).read())\n"
        "open(f, 'w').write('edited value')\n"
    )
    env = base_env(EDITOR=f"{sys.executable} {editor}", VISUAL="")
    vnode.pk("secrets", "set", "work:e", input=b"old value")
    r = vnode.pk("secrets", "edit", "work:e", env=env)
    assert r.code == 0, r.err
    path, dmode, fmode, seen = record.read_text().split("\n", 3)
    assert seen == "old value" and (dmode, fmode) == ("0o700", "0o600")
    if os.path.isdir("/dev/shm"):
        assert path.startswith("/dev/shm/")
    assert not os.path.exists(os.path.dirname(path))
    assert vnode.pk("secrets", "get", "work:e").out == b"edited value"
    assert vnode.pk("secrets", "edit", "work:new/one", env=env).code == 0  # created when missing
    assert vnode.pk("secrets", "get", "work:new/one").out == b"edited value"
    failing = base_env(EDITOR="false", VISUAL="")
    assert vnode.pk("secrets", "edit", "work:e", env=failing).code == 64


def test_tty_prompt_is_hidden_and_get_adds_a_newline(vnode: Node) -> None:
    common = ["--node-path", str(vnode.path), "--password-file", str(vnode.password_file)]
    code, out = run_on_pty(["secrets", "set", "work:typed", *common], [b"t0p-s3cret", b"t0p-s3cret"])
    assert code == 0, out
    assert b"Secret value:" in out and b"t0p-s3cret" not in out
    code, out = run_on_pty(["secrets", "get", "work:typed", *common], [])
    assert code == 0 and out.endswith(b"t0p-s3cret\r\n")

