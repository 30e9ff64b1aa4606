"""`pk secrets env` output read back by its consumers: sh for unix and dotenv, python-dotenv for
dotenv, json.loads for json. Every value comes back exactly, or the format refuses it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.cli import hot_env as hot  # the env formats live beside secrets env
from polykey.errors import InvalidInputError

TRICKY = {
    "SQ": "it's",
    "DQ": 'say "hi"',
    "BOTHQ": "it's \"quoted\"",
    "DOLLAR": "$HOME and $(id) and ${HOME}x",
    "TICK": "`id`",
    "BS": "C:\\Users\\x \\n \\t",
    "BSQ": "it's C:\\dir",
    "BS2": "a\\\\b",
    "BSDQ": 'a\\"b',
    "NL": "line1\nline2\n",
    "NLSQ": "it's\nmulti 'line'",
    "EQ": "a=b==c",
    "HASH": "x #not a comment",
    "SPACE": "  padded  ",
    "UNI": "grüße ☃ 日本 \u2028 \x85",
    "EMPTY": "",
    "EXPORT": "export X=1",
    "DASH": "-n",
    "BRACE": "{{ pk://app/x }}",
    "PAREN": "a) b; c & d | e > f",
    "ISSUE": "it's $HOME `id`",
    "TRAILBS": "ends in \\",
    "CR": "a\rb",
}
#: The values no dotenv line carries for both readers (docs/automation.md "Output formats").
NO_DOTENV = {"ISSUE", "TRAILBS", "CR", "DOLLAR"}


def _sh_read(path: Path, names: list[str]) -> list[str]:
    """``set -a; . FILE`` in sh, then each variable's value, NUL-terminated."""
    script = "set -a; . " + str(path) + "; printf '%s\\0' " + " ".join(f'"${name}"' for name in names)
    out = subprocess.run(["sh", "-c", script], capture_output=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("utf-8").split("\0")[:-1]


def _encoded(values: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode("utf-8") for k, v in values.items()}


def _check_round_trip(tmp: Path, values: dict[str, str], fmt: str) -> None:
    text = hot.format_env(_encoded(values), fmt)
    path = tmp / f"out.{fmt}"
    path.write_text(text, encoding="utf-8")
    if fmt == "json":
        assert json.loads(path.read_text(encoding="utf-8")) == values
        return
    names = list(values)
    assert _sh_read(path, names) == [values[n] for n in names]
    if fmt == "dotenv":
        assert dict(dotenv_values(path)) == values  # python-dotenv's defaults: interpolation on


@pytest.mark.parametrize("fmt", ["unix", "json"])
def test_every_value_comes_back_exactly(tmp_path: Path, fmt: str) -> None:
    _check_round_trip(tmp_path, TRICKY, fmt)


def test_dotenv_carries_what_both_readers_read_alike(tmp_path: Path) -> None:
    safe = {k: v for k, v in TRICKY.items() if k not in NO_DOTENV}
    _check_round_trip(tmp_path, safe, "dotenv")
    _check_round_trip(tmp_path, {"DOLLAR": "pa$$word $HOME $(id)"}, "dotenv")  # '$' alone is fine


@pytest.mark.parametrize("name", sorted(NO_DOTENV))
def test_dotenv_refuses_what_it_cannot_carry(name: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        hot.format_env(_encoded({"OK": "fine", name: TRICKY[name]}), "dotenv")
    assert e.value.message.startswith(f"{name}: ") and TRICKY[name] not in e.value.message


def test_sourcing_dotenv_runs_nothing(tmp_path: Path) -> None:
    """The issue's example: a value must never execute when the file is sourced."""
    marker = tmp_path / "ran"
    values = {"A": f"$(touch {marker})", "B": f"`touch {marker}`", "C": f"it's \"`touch {marker}`\""}
    for fmt in ("unix", "dotenv"):
        try:
            text = hot.format_env(_encoded(values), fmt)
        except InvalidInputError:
            assert fmt == "dotenv"
            text = hot.format_env(_encoded({k: values[k] for k in "AB"}), fmt)
        path = tmp_path / "env"
        path.write_text(text)
        _sh_read(path, ["A"])
        assert not marker.exists()


_ALPHABET = st.sampled_from(list("ab '\"$`\\\n\r=#{}()é☃\t ;|&*?~!") + ["${", "\\\\", "'\\''"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_ALPHABET, max_size=12).map("".join), min_size=1, max_size=4))
def test_property_dotenv_is_exact_or_refused(tmp_path_factory: pytest.TempPathFactory, parts: list[str]) -> None:
    values = {f"V{i}": v for i, v in enumerate(parts)}
    tmp = tmp_path_factory.mktemp("env")
    _check_round_trip(tmp, values, "unix")
    try:
        hot.format_env(_encoded(values), "dotenv")
    except InvalidInputError:
        return
    _check_round_trip(tmp, values, "dotenv")


# -- legacy multibyte locales ------------------------------------------------------------
# In Big5, GBK, GB18030 and Shift_JIS a byte >= 0x81 starts a two-byte character whose second
# byte may be 0x5C ('\'). bash in such a locale reads the UTF-8 bytes of the file that way, so
# a backslash written right after a non-ASCII character is swallowed, and an escaped '"' then
# ends the string: the rest of the value would run as commands.

_BIG5_ATTACK = "\u4e21\"; touch {marker} #'"  # UTF-8 E4 B8 A1: A1 + '\' is one Big5 character


def test_dotenv_refuses_an_escape_right_after_a_non_ascii_character() -> None:
    for value in (_BIG5_ATTACK.format(marker="/tmp/x"), "é\\x'", "'é\"", "日本\\\\"):
        with pytest.raises(InvalidInputError) as e:
            hot.format_env(_encoded({"V": value}), "dotenv")
        assert e.value.message.startswith("V: ") and value not in e.value.message
    assert hot.format_env(_encoded({"V": "é x\\\\ 'y\""}), "dotenv") == 'V="é x\\\\\\\\ \'y\\""\n'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("a '\"\\$`\n") + ["é", "\u4e21", "¡", "☃", "ꀀ"]), max_size=10).map("".join))
def test_property_dotenv_backslashes_follow_ascii_bytes(value: str) -> None:
    """Each backslash in a double-quoted dotenv value follows an ASCII byte, never one a legacy
    multibyte charset takes as the first byte of a character (in single quotes a backslash
    escapes nothing: swallowed or not, the bytes are kept)."""
    try:
        line = hot.format_env(_encoded({"V": value}), "dotenv").encode("utf-8")
    except InvalidInputError:
        return
    if line.startswith(b'V="'):
        assert all(line[i - 1] < 0x80 for i in range(len(line)) if line[i] == 0x5C)


@pytest.fixture(scope="module")
def big5_locale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose bash runs in zh_TW.BIG5 (compiled here with localedef)."""
    import shutil

    if not all(shutil.which(tool) for tool in ("localedef", "locale", "bash")):
        pytest.skip("needs localedef, locale and bash to compile and use a Big5 locale")
    root = tmp_path_factory.mktemp("locales")
    made = subprocess.run(["localedef", "-i", "zh_TW", "-f", "BIG5", str(root / "zh_TW.BIG5")],
                          capture_output=True, timeout=120)
    if not (root / "zh_TW.BIG5").exists():
        pytest.skip(f"localedef cannot build zh_TW.BIG5: {made.stderr[-200:]!r}")
    env = {"PATH": "/usr/bin:/bin", "LOCPATH": str(root), "LC_ALL": "zh_TW.BIG5"}
    charmap = subprocess.run(["bash", "-c", "locale charmap"], capture_output=True, env=env, timeout=30)
    assert charmap.stdout.strip() == b"BIG5"
    return env


@pytest.mark.parametrize("fmt", ["dotenv", "unix"])
def test_sourcing_in_a_big5_locale_runs_nothing(tmp_path: Path, big5_locale: dict[str, str], fmt: str) -> None:
    marker = tmp_path / "ran"
    values = {"V": _BIG5_ATTACK.format(marker=marker), "W": "\u4e21\\\\\"; touch " + str(marker) + " #'"}
    for name, value in values.items():
        try:
            text = hot.format_env(_encoded({name: value}), fmt)
        except InvalidInputError:
            assert fmt == "dotenv"
            continue
        path = tmp_path / "env"
        path.write_text(text, encoding="utf-8")
        out = subprocess.run(["bash", "-c", f"set -a; . {path}; printf '%s' \"${name}\""],
                             capture_output=True, env=big5_locale, timeout=30)
        assert not marker.exists()
        assert out.stdout == value.encode("utf-8")
