"""`pk secrets import` / `export` end to end, and listings across writes and locks: real `pk` + agent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..conftest import Node, base_env, run_pk


@pytest.fixture
def vnode(node: Node) -> Node:
    assert node.pk("vaults", "create", "app").code == 0
    return node


def _commits(node: Node, vault: str = "app") -> int:
    r = node.pk("vaults", "log", vault, "--format", "json")
    assert r.code == 0, r.err
    rows = r.json
    assert isinstance(rows, list)
    return len(rows)


def _secrets(node: Node, target: str = "app") -> list[str]:
    r = node.pk("secrets", "ls", "-r", target, "--format", "json")
    assert r.code == 0, r.err
    rows = r.json
    assert isinstance(rows, list)
    return [row["path"] for row in rows if row["type"] == "secret"]


def test_dotenv_import_is_one_commit_with_a_summary(vnode: Node, tmp_path: Path) -> None:
    env = tmp_path / "app.env"
    env.write_bytes(b"# settings\nDB_USER=admin\nexport DB_PASS='s3 cr\"et'\nTOKEN=\"a\\nb\"\n")
    before = _commits(vnode)
    r = vnode.pk("secrets", "import", "app:prod", env)
    assert r.code == 0, r.err
    assert r.text.startswith("Imported 3 secrets into app:prod (3 new, 0 replaced) in one commit ")
    assert _commits(vnode) == before + 1
    assert vnode.pk("secrets", "get", "app:prod/DB_PASS").out == b's3 cr"et'
    assert vnode.pk("secrets", "get", "app:prod/TOKEN").out == b"a\nb"
    again = vnode.pk("--format", "json", "secrets", "import", "app:prod", "-", input=b"DB_USER=root\nNEW=1\n")
    assert again.code == 0, again.err
    summary = again.json
    assert isinstance(summary, dict) and summary["commit"]
    assert {k: summary[k] for k in ("vault", "path", "format", "count", "created", "updated", "skipped")} == {
        "vault": "app", "path": "prod", "format": "dotenv", "count": 2, "created": 1, "updated": 1, "skipped": 0}
    assert vnode.pk("secrets", "get", "app:prod/DB_USER").out == b"root"


def test_json_and_directory_imports_and_exports_round_trip(vnode: Node, tmp_path: Path) -> None:
    doc = {"db": {"user": "u", "port": 5432}, "api/key": "k\n", "flag": True}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert vnode.pk("secrets", "import", "app:cfg", tmp_path / "s.json").code == 0
    assert _secrets(vnode) == ["cfg/api/key", "cfg/db/port", "cfg/db/user", "cfg/flag"]
    tree = tmp_path / "tree"
    (tree / "certs").mkdir(parents=True)
    (tree / "certs" / "key.pem").write_bytes(b"-----BEGIN-----\n\x00\x01")
    (tree / "note").write_bytes(b"n")
    assert vnode.pk("secrets", "import", "app:files", tree).code == 0
    assert vnode.pk("secrets", "get", "app:files/certs/key.pem").out == b"-----BEGIN-----\n\x00\x01"
    exported = vnode.pk("secrets", "export", "app:cfg", "--env-format", "json")
    assert exported.code == 0, exported.err
    assert exported.json == {"api/key": "k\n", "db/port": "5432", "db/user": "u", "flag": "true"}
    assert vnode.pk("vaults", "create", "copy").code == 0
    back = vnode.pk("secrets", "import", "copy", "-", input=exported.out)
    assert back.code == 0, back.err
    assert vnode.pk("secrets", "export", "copy", "--env-format", "json").out == exported.out
    # dotenv: what export writes, import reads back exactly
    assert vnode.pk("secrets", "import", "app:env", "-", input=b"A='one'\nB=\"two\\nlines\"\nC=x\n").code == 0
    dotenv = vnode.pk("secrets", "export", "app:env")
    assert dotenv.code == 0, dotenv.err
    assert vnode.pk("vaults", "create", "copy2").code == 0
    assert vnode.pk("secrets", "import", "copy2", "-", "--from", "dotenv", input=dotenv.out).code == 0
    for name, value in (("A", b"one"), ("B", b"two\nlines"), ("C", b"x")):
        assert vnode.pk("secrets", "get", f"copy2:{name}").out == value
    unix = vnode.pk("secrets", "export", "app:env", "--env-format", "unix")
    assert unix.code == 0 and unix.text.startswith("export A='one'\n")
    bad = vnode.pk("secrets", "export", "app:files")  # key.pem is no variable name: the env policy
    assert bad.code == 65 and "'key.pem' is not a valid environment variable name" in bad.err, bad.err
    assert vnode.pk("secrets", "export", "app:files", "--env-invalid", "ignore").out == b"note='n'\n"


def test_bad_input_names_the_line_or_file_and_imports_nothing(vnode: Node, tmp_path: Path) -> None:
    assert vnode.pk("secrets", "set", "app:keep", input=b"k").code == 0
    before = _commits(vnode)
    big = tmp_path / "big.env"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok").write_bytes(b"1")
    os.symlink("/etc/hostname", tree / "link")
    fifo_tree = tmp_path / "fifo"
    fifo_tree.mkdir()
    (fifo_tree / "ok").write_bytes(b"1")
    os.mkfifo(fifo_tree / "pipe")
    cases: list[tuple[tuple[str | Path, ...], bytes, int, str]] = [
        (("-",), b"A=1\nA=2\n", 65, "<stdin>:2: A is set more than once (first at <stdin>:1)"),
        (("-",), b"A=1\n\xffB=2\n", 64, "<stdin>:2: not valid UTF-8"),
        (("-",), b"A=1\nB='open\n", 64, "<stdin>:2: the 'quoted' value is not closed"),
        (("-",), b"A=1\n1B=2\n", 65, "<stdin>:2: '1B' is not a valid variable name"),
        (("-",), b'{"ok": "1", "bad": {"..": "x"}}', 65, 'key "bad".".."'),
        (("-",), b'{"a": "1", "a": "2"}', 65, "a is set more than once"),
        (("-",), b'{"a": "1", "a/b": "2"}', 64, "a is both a secret and a directory"),
        ((big,), b"", 64, "larger than the 64 MiB import limit"),
        ((tree,), b"", 64, f"{tree / 'link'}: a symbolic link"),
        ((fifo_tree,), b"", 64, f"{fifo_tree / 'pipe'}: not a regular file"),
        (("-",), b"# nothing\n", 64, "nothing to import"),
    ]
    for args, stdin, code, words in cases:
        r = vnode.pk("secrets", "import", "app:new", *args, input=stdin)
        assert (r.code, words in r.err) == (code, True), (args, r.code, r.err)
        assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert _commits(vnode) == before
    assert _secrets(vnode) == ["keep"]


def test_name_policies_are_those_of_secrets_env(vnode: Node) -> None:
    r = vnode.pk("secrets", "import", "app", "-", "--env-duplicate", "keep", "--env-invalid", "warn",
                 input=b"A=first\nA=second\nbad-name=x\nB=b\n")
    assert r.code == 0, r.err
    assert "warning: <stdin>:3: 'bad-name' is not a valid variable name; skipped" in r.err
    assert "2 skipped" in r.text
    assert vnode.pk("secrets", "get", "app:A").out == b"first"
    assert _secrets(vnode) == ["A", "B"]


def test_an_import_larger_than_a_frame_goes_in_parts_as_one_commit(vnode: Node, tmp_path: Path) -> None:
    tree = tmp_path / "big"
    tree.mkdir()
    for i in range(3):  # 3 x 5 MiB: more than one 8 MiB request
        (tree / f"blob{i}").write_bytes(bytes([i]) * (5 * 1024 * 1024))
    before = _commits(vnode)
    r = vnode.pk("--format", "json", "secrets", "import", "app:b", tree)
    assert r.code == 0, r.err
    assert _commits(vnode) == before + 1
    assert vnode.pk("secrets", "get", "app:b/blob2").out == bytes([2]) * (5 * 1024 * 1024)


def test_listing_follows_writes_and_a_locked_agent_lists_nothing(vnode: Node) -> None:
    items = "".join(f"S{i}=v{i}\n" for i in range(200)).encode()
    assert vnode.pk("secrets", "import", "app:d", "-", input=items).code == 0
    first = _secrets(vnode)
    assert len(first) == 200 and _secrets(vnode) == first
    assert vnode.pk("secrets", "rm", "app:d/S0").code == 0
    assert vnode.pk("secrets", "mv", "app:d/S1", "app:moved/S1").code == 0
    assert vnode.pk("secrets", "set", "app:d/S2", input=b"changed").code == 0
    got = _secrets(vnode)
    assert "d/S0" not in got and "d/S1" not in got and "moved/S1" in got and len(got) == 199
    assert vnode.pk("agent", "lock").code == 0
    env = base_env()  # no password anywhere: a locked agent must refuse, not answer from a cache
    locked = run_pk("secrets", "ls", "-r", "app", "--node-path", vnode.path, env=env)
    assert locked.code == 75 and "locked" in locked.err, (locked.code, locked.err)
    assert locked.out == b""
    assert _secrets(vnode) == got  # unlocked again with the password file: the same listing


def test_progress_on_a_terminal_and_none_on_a_pipe(vnode: Node, tmp_path: Path) -> None:
    from ..conftest import run_on_pty

    env_file = tmp_path / "p.env"
    env_file.write_bytes(b"A=1\nB=2\n")
    code, output = run_on_pty(["secrets", "import", "app", str(env_file), "--node-path", str(vnode.path),
                               "--password-file", str(vnode.password_file)], [])
    assert code == 0, output
    assert b"pk: writing 2 secrets" in output and b"Imported 2 secrets into app" in output
    piped = vnode.pk("secrets", "import", "app", env_file, "--env-duplicate", "overwrite")
    assert piped.code == 0 and piped.err == ""
