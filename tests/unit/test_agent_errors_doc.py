"""The agent's error classes: documented in docs/cli.md with their exit codes, rebuilt from the wire."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polykey import errors

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
AGENT_ERRORS = [
    errors.AgentError,
    errors.AgentUnavailableError,
    errors.AgentLockedError,
    errors.AgentRunningError,
    errors.AgentProtocolError,
    errors.AgentPermissionError,
    errors.UnknownMethodError,
    errors.EnvNameError,
    errors.SecretReferenceError,
    errors.CommandNotFoundError,
]


def documented_codes() -> dict[str, int]:
    codes: dict[str, int] = {}
    for line in CLI_MD.read_text().splitlines():
        m = re.match(r"\| (\d+) \|.*\|(.*)\|\s*$", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                codes[name] = int(m.group(1))
    return codes


def test_every_documented_class_has_its_code() -> None:
    codes = documented_codes()
    by_name = {c.__name__: c for c in errors.error_classes()}
    wrong = {n: (c, by_name[n].exit_code) for n, c in codes.items() if n in by_name and by_name[n].exit_code != c}
    assert not wrong


@pytest.mark.parametrize("cls", AGENT_ERRORS, ids=lambda c: c.__name__)
def test_agent_error_documented_and_round_trips(cls: type[errors.PolykeyError]) -> None:
    assert documented_codes().get(cls.__name__) == cls.exit_code
    assert cls.__doc__ and len(cls.__doc__) > 20
    e = cls("some message", detail=1)
    back = errors.from_wire(e.to_wire())
    assert type(back) is cls and back.message == "some message" and back.data == {"detail": 1}
