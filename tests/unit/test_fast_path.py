"""The click-free dispatcher: what it takes itself and what it leaves to click."""

from __future__ import annotations

import pytest

from polykey.cli import fast, hot
from polykey.cli.automation import parse_env_file, parse_reference
from polykey.errors import EnvNameError, InvalidInputError, SecretReferenceError


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["secrets", "get", "a:b"], ("get", {}, ["a:b"], None)),
        (["secrets", "cat", "a:b", "--format", "json"], ("get", {"format": "json"}, ["a:b"], None)),
        (["--node-path", "/n", "secrets", "get", "--commit=abcd", "a:b"], ("get", {"node_path": "/n", "commit": "abcd"}, ["a:b"], None)),
        (["--node-path=/x", "secrets", "get", "a:b", "--node-path", "/y"], ("get", {"node_path": "/y"}, ["a:b"], None)),
        (["secrets", "env", "a:b=X", "a:c", "--", "sh", "-c", "echo --"], ("env", {}, ["a:b=X", "a:c"], ["sh", "-c", "echo --"])),
        (["secrets", "env", "--env-format", "dotenv", "--env-duplicate=keep", "a"], ("env", {"env_format": "dotenv", "duplicate": "keep"}, ["a"], None)),
    ],
)
def test_taken(argv: list[str], expected: tuple[object, ...]) -> None:
    assert fast._parse(argv) == expected


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
        ["secrets", "set", "a:b"],
        ["secrets", "env"],
        ["secrets", "env", "--", "cmd"],
        ["secrets", "env", "a", "--env-format", "yaml"],
        ["secrets", "env", "a", "--commit", "x"],
        ["--version"],
        ["vaults", "list"],
        ["--password-file", "secrets", "get", "a:b"],
    ],
)
def test_left_to_click(argv: list[str]) -> None:
    with pytest.raises(fast._Fallback):
        fast._parse(argv)


def test_no_fast_path_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PK_NO_FAST_PATH", "1")
    assert fast.dispatch(["secrets", "get", "a:b"]) is None


def test_env_targets() -> None:
    assert hot.parse_env_target("app:db/password=DB_PASSWORD") == ("app", "db/password", "DB_PASSWORD")
    assert hot.parse_env_target("app:db") == ("app", "db", None)
    assert hot.parse_env_target("app") == ("app", "", None)
    with pytest.raises(InvalidInputError):
        hot.parse_env_target("app:db=")
    with pytest.raises(InvalidInputError):
        hot.parse_env_target(":db")


def test_env_formats_keep_values_exact() -> None:
    env = {"A": b"it's", "B": b"line1\nline2", "C": b"plain"}
    assert hot.format_env(env, "unix") == "export A='it'\\''s'\nexport B='line1\nline2'\nexport C='plain'\n"
    assert hot.format_env(env, "dotenv") == 'A="it\'s"\nB=\'line1\nline2\'\nC=\'plain\'\n'
    assert hot.format_env(env, "json") == '{"A": "it\'s", "B": "line1\\nline2", "C": "plain"}\n'
    with pytest.raises(InvalidInputError):
        hot.format_env({"A": b"\xff"}, "json")
    with pytest.raises(InvalidInputError):
        hot.format_env({"A": b"a\0b"}, "unix")


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
