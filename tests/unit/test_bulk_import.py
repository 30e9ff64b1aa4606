"""The import parsers (.env, JSON, directory trees) and the staging of large imports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.cli import bulk
from polykey.cli.hot_env import format_env
from polykey.errors import EnvNameError, InvalidInputError
from polykey.keys.keypair import KeyPair
from polykey.vaults.service import VaultService
from polykey.vaults.staging import ImportStaging


def _dotenv(text: bytes, **policy: str) -> dict[str, bytes]:
    out = bulk.Collector(**policy)
    bulk.parse_dotenv(text, "f.env", out)
    return {k: v for k, (v, _w) in out.items.items()}


def _json(text: bytes, **policy: str) -> dict[str, bytes]:
    out = bulk.Collector(**policy)
    bulk.parse_json(text, "f.json", out)
    return {k: v for k, (v, _w) in out.items.items()}


def test_dotenv_grammar() -> None:
    text = (b"# comment\n\nA=1\nexport B = two words  \nC='lit \\n $X'\nD=\"esc \\\" \\\\ \\n \\q\"\n"
            b"E=plain # trailing\nF=\nG=#kept\nH= #gone\nM=\"multi\nline\" # c\nN='a\nb'\r\nX=a=b\n")
    assert _dotenv(text) == {
        "A": b"1", "B": b"two words", "C": b"lit \\n $X", "D": b'esc " \\ \n \\q', "E": b"plain", "F": b"",
        "G": b"#kept", "H": b"", "M": b"multi\nline", "N": b"a\nb", "X": b"a=b",
    }


@pytest.mark.parametrize(("text", "words"), [
    (b"A=1\nnovalue\n", "f.env:2: expected NAME=VALUE"),
    (b"A=1\nB='open\n", "f.env:2: the 'quoted' value is not closed"),
    (b"A=\"x\" y\n", "f.env:1: unexpected text after the closing quote"),
    (b"A=1\n\xffB=2\n", "f.env:2: not valid UTF-8"),
])
def test_dotenv_malformed(text: bytes, words: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        _dotenv(text)
    assert str(e.value) == words or words in str(e.value)


def test_dotenv_name_policies() -> None:
    with pytest.raises(EnvNameError, match=r"f.env:2: A is set more than once \(first at f.env:1\)"):
        _dotenv(b"A=1\nA=2\n")
    assert _dotenv(b"A=1\nA=2\n", duplicate="keep") == {"A": b"1"}
    assert _dotenv(b"A=1\nA=2\n", duplicate="overwrite") == {"A": b"2"}
    with pytest.raises(EnvNameError, match="f.env:1: 'a.b' is not a valid variable name"):
        _dotenv(b"a.b=1\nB=2\n")
    assert _dotenv(b"a.b=1\nB=2\n", invalid="ignore") == {"B": b"2"}


text_values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), text_values, max_size=6))
def test_dotenv_reads_back_what_the_dotenv_encoder_writes(env: dict[str, str]) -> None:
    raw = {k: v.encode() for k, v in env.items()}
    try:
        text = format_env(raw, "dotenv")
    except InvalidInputError:
        return  # a value the encoder refuses (it has no safe dotenv form): nothing to read back
    assert _dotenv(text.encode()) == raw


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,5}(/[a-z]{1,5}){0,2}", fullmatch=True), text_values, max_size=6))
def test_json_reads_back_what_the_json_encoder_writes(env: dict[str, str]) -> None:
    raw = {k: v.encode() for k, v in env.items()}
    out = bulk.Collector()
    bulk.parse_json(format_env(raw, "json").encode(), "x.json", out)
    try:
        out.check_shape(())
    except InvalidInputError:
        return  # "a" and "a/b" both: not a vault
    assert {k: v for k, (v, _w) in out.items.items()} == raw


def test_json_nested_flat_and_values() -> None:
    got = _json(b'{"db": {"user": "u", "port": 5432, "tls": true}, "a/b": "x", "r": 1.5}')
    assert got == {"db/user": b"u", "db/port": b"5432", "db/tls": b"true", "a/b": b"x", "r": b"1.5"}


@pytest.mark.parametrize(("text", "words"), [
    (b'{"a": 1,}', "f.json:1: not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"a": null}', 'key "a": a value must be a string'),
    (b'{"a": [1]}', 'key "a": a value must be a string'),
    (b'{"a": NaN}', "NaN is not allowed"),
    (b'{"a": {"..": "x"}}', 'key "a".".."'),
    (b"[" * 100_000, "f.json"),
    (b'{"a": "\\ud800"}', "not valid UTF-8"),
])
def test_json_malformed(text: bytes, words: str) -> None:
    with pytest.raises((InvalidInputError, EnvNameError)) as e:
        _json(text)
    assert words in str(e.value)


def test_json_duplicates_follow_the_policy() -> None:
    with pytest.raises(EnvNameError, match="a/b is set more than once"):
        _json(b'{"a": {"b": "1"}, "a/b": "2"}')
    assert _json(b'{"k": "1", "k": "2"}', duplicate="overwrite") == {"k": b"2"}


def test_secret_and_directory_at_once_is_an_error() -> None:
    out = bulk.Collector()
    bulk.parse_json(b'{"a": "x", "a/b": "y"}', "f.json", out)
    with pytest.raises(InvalidInputError, match="a is both a secret and a directory"):
        out.check_shape(())


def test_directory_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "db").mkdir(parents=True)
    (root / "db" / "password").write_bytes(b"\x00bin")
    (root / "top").write_bytes(b"t")
    out = bulk.Collector()
    bulk.read_tree(root, out)
    assert {k: v for k, (v, _w) in out.items.items()} == {"db/password": b"\x00bin", "top": b"t"}


def test_directory_tree_refuses_links_and_special_files(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "ok").write_bytes(b"1")
    os.symlink("/etc/passwd", root / "link")
    with pytest.raises(InvalidInputError, match=r"t/link: a symbolic link"):
        bulk.read_tree(root, bulk.Collector())
    os.unlink(root / "link")
    os.mkfifo(root / "fifo")
    with pytest.raises(InvalidInputError, match=r"t/fifo: not a regular file"):
        bulk.read_tree(root, bulk.Collector())
    os.unlink(root / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
        with pytest.raises(InvalidInputError, match=r"t/sock: not a regular file"):
            bulk.read_tree(root, bulk.Collector())


def test_directory_tree_bad_names(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "ok").write_bytes(b"1")
    bad = os.fsencode(root) + b"/bad\xff"
    with open(bad, "wb") as f:
        f.write(b"x")
    with pytest.raises(InvalidInputError, match=r"bad\\xff: the file name is not valid UTF-8"):
        bulk.read_tree(root, bulk.Collector())
    os.unlink(bad)
    (root / "ctl\x01").write_bytes(b"x")
    with pytest.raises(EnvNameError, match="control character"):
        bulk.read_tree(root, bulk.Collector())
    out = bulk.Collector(invalid="ignore")
    bulk.read_tree(root, out)
    assert list(out.items) == ["ok"] and out.skipped == 1


def test_oversized_input_says_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "big.env"
    with open(f, "wb") as h:
        h.truncate(bulk.MAX_IMPORT_BYTES + 1)
    with open(f, "rb") as h, pytest.raises(InvalidInputError, match="larger than the 64 MiB import limit"):
        bulk.read_limited(h, str(f))


def test_staging_bounds_and_all_or_nothing() -> None:
    tokens = iter(f"t{i}" for i in range(100))
    staging = ImportStaging(lambda: next(tokens))
    token, n = staging.add(None, {("a",): b"1"})
    assert (token, n) == ("t0", 1)
    assert staging.add(token, {("b",): b"2"}) == ("t0", 2)
    with pytest.raises(InvalidInputError, match="appears twice"):
        staging.add(token, {("a",): b"again"})
    with pytest.raises(InvalidInputError, match="no import in progress"):
        staging.take(token)  # the failed part dropped the whole import
    for _ in range(4):
        staging.add(None, {("x",): b"1"})
    with pytest.raises(InvalidInputError, match="already in progress"):
        staging.add(None, {("x",): b"1"})
    staging.clear()
    assert len(staging) == 0
    from polykey.vaults.staging import MAX_IMPORT_BYTES

    half = b"x" * (MAX_IMPORT_BYTES // 2 + 1)
    staging.add(None, {("one",): half})
    with pytest.raises(InvalidInputError, match="already; try again"):
        staging.add(None, {("two",): half})  # all imports in progress together are bounded too


def test_staged_import_is_one_commit_and_dropped_on_close(tmp_path: Path) -> None:
    kp = KeyPair.generate()
    svc = VaultService(tmp_path / "node", kp)
    svc.create_vault("w")
    token = svc.stage_import({"a/1": b"1", "a/2": b"2"})["token"]
    assert svc.stage_import({"b": b"3"}, token) == {"token": token, "count": 3}
    before = len(svc.log("w"))
    out = svc.import_secrets("w", {"c": b"4"}, stage=token)
    assert (out["count"], out["created"]) == (4, 4) and len(svc.log("w")) == before + 1
    assert [r["path"] for r in svc.list_secrets("w", "", recursive=True) if r["type"] == "secret"] == ["a/1", "a/2", "b", "c"]
    pending = svc.stage_import({"z": b"9"})["token"]
    svc.close()  # the agent locking
    again = VaultService(tmp_path / "node", kp)
    with pytest.raises(InvalidInputError, match="no import in progress"):
        again.import_secrets("w", {}, stage=pending)
    again.close()


def _scan_only(text: bytes) -> object:
    """What the general scanner alone makes of ``text`` (the one-line fast path switched off)."""
    import re

    saved = bulk._SIMPLE_LINE
    bulk._SIMPLE_LINE = re.compile(r"(?!)")
    try:
        return _outcome(text)
    finally:
        bulk._SIMPLE_LINE = saved


def _outcome(text: bytes) -> object:
    try:
        out = bulk.Collector(duplicate="overwrite", invalid="ignore")
        bulk.parse_dotenv(text, "f", out)
        return {k: (v, w) for k, (v, w) in out.items.items()}
    except InvalidInputError as e:
        return str(e)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="AB_=' \"#\\\tx\r", max_size=12), max_size=6))
def test_the_one_line_fast_path_reads_as_the_scanner_does(lines: list[str]) -> None:
    text = "\n".join(lines).encode()
    assert _outcome(text) == _scan_only(text)
