"""`python -m bench` reads its command line before it runs anything: help, and refusal of an unknown
option or benchmark, never start a (twelve-minute) run."""

from __future__ import annotations

import pytest

from bench.__main__ import available, main


def test_help_lists_the_benchmarks_and_runs_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m bench" in out
    for name in available():
        assert name in out


@pytest.mark.parametrize("argv", [["--nope"], ["keys", "--verbose"], ["no-such-bench"]])
def test_an_unknown_option_or_benchmark_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown" in err


def test_a_numeric_option_needs_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--nodes takes a number"):
        main(["dht-scale", "--nodes", "many"])
