"""The click-free dispatcher: what it takes itself and what it leaves to click."""

from __future__ import annotations

from pathlib import Path

import pytest

from polykey.cli import fast, hot, hot_env
from polykey.cli.hot_env import parse_env_file, parse_reference
from polykey.errors import EnvNameError, InvalidInputError, SecretReferenceError

GET, ENV = ("secrets", "get"), ("secrets", "env")


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["secrets", "get", "a:b"], (GET, {}, ["a:b"], None)),
        (["secrets", "cat", "a:b", "--format", "json"], (("secrets", "cat"), {"format": "json"}, ["a:b"], None)),
        (["--node-path", "/n", "secrets", "get", "--commit=abcd", "a:b"], (GET, {"node_path": "/n", "commit": "abcd"}, ["a:b"], None)),
        (["--node-path=/x", "secrets", "get", "a:b", "--node-path", "/y"], (GET, {"node_path": "/y"}, ["a:b"], None)),
        (["secrets", "env", "a:b=X", "a:c", "--", "sh", "-c", "echo --"], (ENV, {}, ["a:b=X", "a:c"], ["sh", "-c", "echo --"])),
        (["secrets", "env", "--env-format", "dotenv", "--env-duplicate=keep", "a"], (ENV, {"env_format": "dotenv", "duplicate": "keep"}, ["a"], None)),
        (["secrets", "set", "a:b", "--from-file", "/nonexistent"], (("secrets", "set"), {"from_file": "/nonexistent"}, ["a:b"], None)),
        (["secrets", "ls", "-r", "a", "--recursive"], (("secrets", "ls"), {"recursive": True}, ["a"], None)),
        (["secrets", "rm", "a:x", "a:y"], (("secrets", "rm"), {}, ["a:x", "a:y"], None)),
        (["secrets", "rm", "-r", "a:x", "--yes"], (("secrets", "rm"), {"recursive": True, "yes": True}, ["a:x"], None)),
        (["run", "--env-file", "/e1", "--env-file=/e2", "--", "env"], (("run",), {"env_files": ["/e1", "/e2"]}, [], ["env"])),
        (["inject", "-i", "-", "--out-file", "/o"], (("inject",), {"in_file": "-", "out_file": "/o"}, [], None)),
        (["--format", "json", "vaults", "list"], (("vaults", "list"), {"format": "json"}, [], None)),
        (["agent", "status", "--node-path", "/n"], (("agent", "status"), {"node_path": "/n"}, [], None)),
    ],
)
def test_taken(argv: list[str], expected: tuple[object, ...]) -> None:
    assert fast.parse(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["secrets"],
        ["secrets", "--help"],
        ["secrets", "get", "--help"],
        ["secrets", "get", "-h", "a:b"],
        ["secrets", "get"],
        ["secrets", "get", "a:b", "c:d"],
        ["secrets", "get", "a:b", "--format", "yaml"],
        ["secrets", "get", "a:b", "--format"],
        ["secrets", "get", "a:b", "--node-path="],
        ["secrets", "--node-path", "/n", "get", "a:b"],
        ["secrets", "get", "a:b", "--bogus"],
        ["secrets", "env"],
        ["secrets", "env", "--", "cmd"],
        ["secrets", "env", "a", "--env-format", "yaml"],
        ["secrets", "env", "a", "--commit", "x"],
        ["--version"],
        ["--password-file", "secrets", "get", "a:b"],
        ["secrets", "rm", "-ry", "a:b"],
        ["secrets", "ls", "a", "--recursive=yes"],
        ["secrets", "ls", "a", "-rx"],
        ["secrets", "mv", "a:b", "a:c"],
        ["secrets", "get", "--", "a:b"],
        ["run", "--", "env"],
        ["run", "--env-file", "/e", "x", "--", "env"],
        ["inject", "-i=/t"],
        ["inject", "-i/t"],
        ["inject", "extra"],
        ["vaults", "list", "extra"],
        ["vaults", "create", "x"],
        ["agent", "status", "--bogus"],
        ["agent", "stop"],
        ["--node-path", "/n"],
    ],
)
def test_left_to_click(argv: list[str]) -> None:
    with pytest.raises(fast._Fallback):
        fast._runner(*fast.parse(argv))


def test_path_options_click_would_refuse_are_left_to_click(tmp_path: Path) -> None:
    file = str(tmp_path / "f")
    open(file, "w").close()
    for argv in (["--node-path", file, "secrets", "get", "a:b"],
                 ["secrets", "get", "a:b", "--password-file", str(tmp_path)],
                 ["secrets", "set", "a:b", "--from-file", str(tmp_path)],
                 ["run", "--env-file", str(tmp_path), "--", "env"]):
        with pytest.raises(fast._Fallback):
            fast.parse(argv)


def test_no_fast_path_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PK_NO_FAST_PATH", "1")
    assert fast.dispatch(["secrets", "get", "a:b"]) is None


def test_env_targets() -> None:
    assert hot_env.parse_env_target("app:db/password=DB_PASSWORD") == ("app", "db/password", "DB_PASSWORD")
    assert hot_env.parse_env_target("app:db") == ("app", "db", None)
    assert hot_env.parse_env_target("app") == ("app", "", None)
    with pytest.raises(InvalidInputError):
        hot_env.parse_env_target("app:db=")
    with pytest.raises(InvalidInputError):
        hot_env.parse_env_target(":db")


def test_env_formats_keep_values_exact() -> None:
    env = {"A": b"it's", "B": b"line1\nline2", "C": b"plain"}
    assert hot_env.format_env(env, "unix") == "export A='it'\\''s'\nexport B='line1\nline2'\nexport C='plain'\n"
    assert hot_env.format_env(env, "dotenv") == 'A="it\'s"\nB=\'line1\nline2\'\nC=\'plain\'\n'
    assert hot_env.format_env(env, "json") == '{"A": "it\'s", "B": "line1\\nline2", "C": "plain"}\n'
    with pytest.raises(InvalidInputError):
        hot_env.format_env({"A": b"\xff"}, "json")
    with pytest.raises(InvalidInputError):
        hot_env.format_env({"A": b"a\0b"}, "unix")


def test_references() -> None:
    assert parse_reference("pk://app/db/password", "x") == ("app", "db/password")
    for bad in ("pk://app", "pk://app/", "pk:///x", "pk://a b/c", "http://app/x"):
        with pytest.raises(SecretReferenceError):
            parse_reference(bad, "x")


def test_env_file() -> None:
    text = "# comment\n\nexport DB=pk://app/db/password\nPLAIN='x y'\nURL=\"pk://app/url\"\n"
    assert parse_env_file(text, ".env") == [("DB", ("app", "db/password")), ("PLAIN", "x y"), ("URL", ("app", "url"))]
    with pytest.raises(EnvNameError):
        parse_env_file("1BAD=x\n", ".env")
    with pytest.raises(InvalidInputError):
        parse_env_file("NOEQUALS\n", ".env")
    with pytest.raises(SecretReferenceError):
        parse_env_file("A=pk://novault\n", ".env")


def test_env_file_errors_never_echo_the_line() -> None:
    """A mistyped line of an env file may hold a literal value (NAME=value lines are allowed):
    the error names the file and line, never the text, which may be a secret."""
    for line in ("DB_URL postgres://admin:hunter2@db/app?sslmode=require", "PASSWORD: hunter2=x", "hunter2 x=y"):
        with pytest.raises(EnvNameError) as e:
            parse_env_file(f"# header\n{line}\n", ".env")
        assert e.value.message.startswith(".env line 2: ") and "hunter2" not in e.value.message


from pathlib import PurePosixPath  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.text(alphabet="/.ab~", max_size=12))
def test_paths_print_as_click_prints_them(text: str) -> None:
    assert hot.as_path_text(text) == str(PurePosixPath(text)) if text else hot.as_path_text(text) == "."


# -- the hand-written scanners match the patterns they replace (no `re` on the fast path) ----------

import json  # noqa: E402
import re  # noqa: E402

from polykey.agent_client import protocol, strict_json  # noqa: E402

_TEXT = st.text(alphabet="pk:/{} \t\n\u2003ab_1=-.", max_size=40)


@given(_TEXT)
def test_template_scanner_is_the_pattern(text: str) -> None:
    pattern = re.compile(r"\{\{\s*(pk://[^\s{}]*)\s*\}\}")
    assert hot_env.template_references(text) == [(m.start(), m.end(), m.group(1)) for m in pattern.finditer(text)]
    assert hot_env.template_references("{{" + text + "}}") == [
        (m.start(), m.end(), m.group(1)) for m in pattern.finditer("{{" + text + "}}")]


@given(_TEXT)
def test_reference_rule_is_the_pattern(text: str) -> None:
    for candidate in (text, "pk://" + text):
        m = re.fullmatch(r"pk://([^/\s{}]+)/([^\s{}]+)", candidate)
        want = (m.group(1), m.group(2)) if m and m.group(2).strip("/") else None
        try:
            got: tuple[str, str] | None = parse_reference(candidate, "x")
        except SecretReferenceError:
            got = None
        assert got == want


@given(_TEXT)
def test_env_name_rule_is_the_pattern(text: str) -> None:
    assert hot_env.is_env_name(text) == bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON, st.booleans(), st.booleans(), st.sampled_from([(", ", ": "), (",", ":")]))
def test_lean_json_is_json(value: object, sort_keys: bool, ensure_ascii: bool, separators: tuple[str, str]) -> None:
    want = json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=separators)
    assert strict_json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=separators) == want
    assert json.dumps(strict_json.parse(" \n" + want + "\t")) == json.dumps(json.loads(want))


@pytest.mark.parametrize("text", ["", " ", "{", "[1,]", "{} x", "\ufeff{}", "nul", '"\x01"', "[1] [2]"])
def test_lean_json_rejects_what_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        strict_json.parse(text)


def test_lean_json_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError):
        strict_json.dumps({"a": b"bytes"})
    with pytest.raises(ValueError):
        strict_json.dumps(float("nan"), allow_nan=False)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        strict_json.dumps(loop)


def test_secret_size_limit_is_the_vaults_limit() -> None:
    from polykey.vaults.format import MAX_SECRET_BYTES

    assert hot.MAX_SECRET_BYTES == MAX_SECRET_BYTES


def _has_bytes_key(value: object) -> bool:
    if isinstance(value, dict):
        return "$b" in value or any(_has_bytes_key(v) for v in value.values())
    return isinstance(value, list) and any(_has_bytes_key(v) for v in value)


_KEYED = st.recursive(st.text(alphabet="$b\u00e9", max_size=3),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["$b", "$", "b", "x", "\u00e9"]), inner, max_size=3),
                      max_leaves=10)


@given(_KEYED, st.booleans())
def test_the_bytes_shortcut_never_skips_a_bytes_object(value: object, ascii_only: bool) -> None:
    body = strict_json.dumps({"id": 1, "result": value}, ensure_ascii=ascii_only).encode()
    if _has_bytes_key(value):
        assert protocol._may_hold_bytes(body)


@given(st.text(alphabet="a\u00e9\u4e2d\\\"'$", max_size=12))
def test_escape_rule_is_the_pattern(text: str) -> None:
    assert hot_env._escape_after_non_ascii(text) == bool(re.search(r'[^\x00-\x7f][\\"]', text))
