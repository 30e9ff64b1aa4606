"""`pk secrets` / `pk vaults` at the edges of their input: odd names, closed stdin, non-UTF-8
arguments, paths with no history, help texts. The real `pk` as a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import Node, base_env, pk_executable


@pytest.fixture
def vnode(node: Node) -> Node:
    assert node.pk("vaults", "create", "work").code == 0
    return node


def _one_line_error(err: str) -> None:
    assert err.startswith("pk: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_secret_named_like_the_directory_marker_is_an_ordinary_secret(vnode: Node) -> None:
    # `.keep` is what marks an empty directory on disk; a user's own `.keep` must not be mistaken for it.
    assert vnode.pk("secrets", "set", "work:.keep", input=b"root keep").code == 0
    assert vnode.pk("secrets", "mkdir", "work:d").code == 0
    assert vnode.pk("secrets", "set", "work:d/.keep", input=b"inner keep").code == 0
    assert vnode.pk("secrets", "set", "work:.pk", input=b"not metadata").code == 0
    assert vnode.pk("secrets", "ls", "-r", "work").text.splitlines() == [".keep", ".pk", "d/", "d/.keep"]
    assert vnode.pk("secrets", "cp", "work:d", "work:e").code == 0
    assert vnode.pk("secrets", "mv", "work:.keep", "work:e").code == 0
    assert vnode.pk("secrets", "get", "work:e/.keep").out == b"root keep"  # replaced by the moved one
    assert vnode.pk("secrets", "get", "work:d/.keep").out == b"inner keep"
    assert vnode.pk("secrets", "get", "work:.pk").out == b"not metadata"
    assert vnode.pk("secrets", "rm", "work:d/.keep").code == 0
    assert vnode.pk("secrets", "ls", "work:d").code == 0  # made by mkdir: still there
    ok = vnode.pk("vaults", "verify", "work")
    assert ok.code == 0, ok.err


def test_set_with_stdin_closed_is_a_usage_error(vnode: Node) -> None:
    cmd = f"exec {pk_executable()} secrets set work:x --node-path {vnode.path} --password-file {vnode.password_file} <&-"
    r = subprocess.run(["sh", "-c", cmd], check=False, capture_output=True, env=base_env(), timeout=60)
    assert r.returncode == 64
    err = r.stderr.decode()
    _one_line_error(err)
    assert "standard input is closed" in err
    assert vnode.pk("secrets", "get", "work:x").code == 81  # nothing written


def test_empty_value_from_stdin_is_stored_as_empty(vnode: Node) -> None:
    r = vnode.pk("secrets", "set", "work:empty", input=b"")
    assert r.code == 0 and "(0 bytes)" in r.text
    assert vnode.pk("secrets", "get", "work:empty").out == b""
    assert vnode.pk("secrets", "stat", "work:empty", "--format", "json").json["size"] == 0  # type: ignore[index]


def test_history_of_a_path_never_written_is_not_found(vnode: Node) -> None:
    r = vnode.pk("secrets", "history", "work:never")
    assert r.code == 81
    _one_line_error(r.err)
    vnode.pk("secrets", "set", "work:gone", input=b"v")
    vnode.pk("secrets", "rm", "work:gone")
    rows = vnode.pk("secrets", "history", "work:gone", "--format", "json").json
    assert [row["action"] for row in rows] == ["removed", "created"]  # type: ignore[index]


def test_arguments_that_are_not_utf8_are_usage_errors(vnode: Node) -> None:
    common = [b"--node-path", bytes(vnode.path), b"--password-file", bytes(vnode.password_file)]
    for args in ([b"secrets", b"set", b"work:bad\xff"], [b"secrets", b"ls", b"w\xffrk"],
                 [b"vaults", b"create", b"n\xffme"], [b"secrets", b"mv", b"work:a", b"b\xff"],
                 [b"secrets", b"generate", b"work:g", b"--charset", b"ab\xff"]):
        r = subprocess.run([pk_executable().encode(), *args, *common], input=b"v", capture_output=True, check=False,
                           env=base_env(), timeout=60)
        assert r.returncode == 64, (args, r.stderr)
        _one_line_error(r.stderr.decode("utf-8", "replace"))
        assert b"not valid UTF-8" in r.stderr


def test_help_names_aliases_and_every_generate_option(node: Node) -> None:
    listing = node.pk("secrets", "--help").text  # the common options are accepted on the group too
    assert "write     Alias of 'set'." in listing and "cat       Alias of 'get'." in listing
    assert node.pk("secrets", "write", "--help").text.startswith("Usage: pk secrets write [OPTIONS] VAULT:PATH")
    assert "Never an argument" in " ".join(node.pk("secrets", "set", "--help").text.split())
    gen = node.pk("secrets", "generate", "--help").text
    assert "Number of characters." in gen and "--reveal" in gen and "digits" in gen
    assert node.pk("secrets", "mv", "--help").text.startswith("Usage: pk secrets mv [OPTIONS] VAULT:SRC [VAULT:]DST")
    assert "-n, --limit N " in node.pk("vaults", "log", "--help").text


def test_generate_says_what_it_did_without_the_value(vnode: Node) -> None:
    first = vnode.pk("secrets", "generate", "work:pw", "--length", "8")
    assert first.text == "Stored a random secret of 8 characters at work:pw (not shown).\n"
    again = vnode.pk("secrets", "generate", "work:pw", "--charset", "hex", "--force")
    assert again.text == "Replaced work:pw with a random secret of 32 characters (not shown).\n"
    value = vnode.pk("secrets", "get", "work:pw").out
    assert len(value) == 32 and set(value) <= set(b"0123456789abcdef")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_edit_killed_while_the_editor_runs_removes_the_clear_copy(vnode: Node, tmp_path: Path, signum: int) -> None:
    vnode.pk("secrets", "set", "work:e", input=b"old value")
    record = tmp_path / "record"
    editor = tmp_path / "editor.py"
    editor.write_text(f"import sys, time\nopen({str(record)!r}, 'w').write(sys.argv[1])\ntime.sleep(60)\n")
    proc = subprocess.Popen(
        [pk_executable(), "secrets", "edit", "work:e", "--node-path", str(vnode.path),
         "--password-file", str(vnode.password_file)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(EDITOR=f"{sys.executable} {editor}", VISUAL=""),
    )
    deadline = time.monotonic() + 30
    while not (record.exists() and record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    copy = Path(record.read_text())
    assert copy.read_bytes() == b"old value"
    proc.send_signal(signum)
    proc.communicate(timeout=30)
    assert proc.returncode == -signum
    assert not copy.parent.exists()
    assert vnode.pk("secrets", "get", "work:e").out == b"old value"


def test_edit_with_an_empty_or_unparsable_editor(vnode: Node) -> None:
    for value, words in (("  ", "is empty"), ("vi 'x", "cannot parse")):
        r = vnode.pk("secrets", "edit", "work:e", env=base_env(EDITOR=value, VISUAL=""))
        assert r.code == 64 and words in r.err, r.err
        _one_line_error(r.err)


def test_rm_of_several_paths_removes_nothing_when_one_is_missing(vnode: Node) -> None:
    vnode.pk("secrets", "set", "work:a", input=b"1")
    vnode.pk("secrets", "set", "work:b", input=b"2")
    r = vnode.pk("secrets", "rm", "work:a", "work:typo", "work:b")
    assert r.code == 81 and "typo" in r.err
    assert vnode.pk("secrets", "ls", "work").text.splitlines() == ["a", "b"]
    ok = vnode.pk("secrets", "rm", "work:a", "work:b")
    assert ok.code == 0 and ok.text == "Removed 2 secrets.\n"
    for paths in (["work:c"], ["work:d", "work:e/"]):  # one JSON shape for one path or several
        for p in paths:
            vnode.pk("secrets", "set", p, input=b"v")
        out = vnode.pk("secrets", "rm", *paths, "--format", "json").json
        assert isinstance(out, dict) and out["removed"] == len(paths)
        assert [(r["vault"], r["path"], r["removed"]) for r in out["results"]] == [
            ("work", p.split(":")[1].strip("/"), 1) for p in paths]
        assert out["commit"] == out["results"][-1]["commit"]


def test_reading_a_path_absent_at_a_commit_names_the_commit(vnode: Node) -> None:
    before = vnode.pk("vaults", "log", "work", "--format", "json").json[0]["commit"]  # type: ignore[index]
    vnode.pk("secrets", "set", "work:later", input=b"v")
    for args in (("secrets", "revert", "work:later", before[:8]), ("secrets", "get", "work:later", "--commit", before)):
        r = vnode.pk(*args)
        assert r.code == 81 and f"as of commit {before[:12]}" in r.err, r.err
        _one_line_error(r.err)
    assert vnode.pk("secrets", "get", "work:later").out == b"v"


def test_edit_of_a_new_secret_left_empty_creates_nothing(vnode: Node) -> None:
    r = vnode.pk("secrets", "edit", "work:typo", env=base_env(EDITOR="true", VISUAL=""))
    assert r.code == 0 and r.text == "Unchanged; nothing written.\n"
    assert vnode.pk("secrets", "get", "work:typo").code == 81


def test_stock_git_verifies_a_vault_written_by_pk_as_docs_cli_says(vnode: Node, tmp_path: Path) -> None:
    for args, value in ((("secrets", "set", "work:db/password-xyzzy"), b"hunter2-plugh"),
                        (("secrets", "mkdir", "work:empty-dir-frobozz"), b""),
                        (("secrets", "mv", "work:db/password-xyzzy", "work:moved-zorkmid"), b""),
                        (("secrets", "rm", "work:empty-dir-frobozz"), b"")):
        assert vnode.pk(*args, input=value).code == 0
    vid = vnode.pk("vaults", "list", "--format", "json").json[0]["vaultId"]  # type: ignore[index]
    repo = vnode.path / "vaults" / f"{vid}.git"
    signers = tmp_path / "allowed_signers"
    key = vnode.pk("keys", "public", "--ssh").text.strip()
    members = vnode.pk("vaults", "members", "work", "--format", "json").json
    signers.write_text("".join(f"{m['nodeId']}@polykey {key}\n" for m in members))  # type: ignore[union-attr,index]
    commits = subprocess.run(["git", "-C", str(repo), "rev-list", "main"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(commits) == 5
    for c in commits:
        r = subprocess.run(["git", "-C", str(repo), "-c", "gpg.format=ssh", "-c",
                            f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", c],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0 and 'Good "git" signature' in r.stderr, r.stderr
    fsck = subprocess.run(["git", "-C", str(repo), "fsck", "--strict"], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    log = subprocess.run(["git", "-C", str(repo), "log", "--stat", "--format=%an %s%n%b", "main"],
                         capture_output=True, text=True, check=True).stdout
    assert "move 1 secret" in log
    for word in ("xyzzy", "plugh", "frobozz", "zorkmid", "password", "work"):
        assert word not in log


def test_a_vault_cannot_be_renamed_to_another_vaults_id(vnode: Node) -> None:
    other = vnode.pk("vaults", "create", "other", "--format", "json").json["vaultId"]  # type: ignore[index]
    r = vnode.pk("vaults", "rename", "work", other)
    assert r.code == 64 and "look like a VaultId" in r.err
    vnode.pk("secrets", "set", f"{other}:k", input=b"to other")
    assert vnode.pk("secrets", "get", "other:k").out == b"to other"
