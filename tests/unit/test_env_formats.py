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

from polykey.cli import hot
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
