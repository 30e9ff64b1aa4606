"""Every error class: a docstring a user can act on, its exit code in docs/cli.md, a wire round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polykey import errors

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
ALL = errors.error_classes()


def documented_codes() -> dict[str, int]:
    """Class name -> exit code, from the exit-code table of docs/cli.md."""
    codes: dict[str, int] = {}
    for line in CLI_MD.read_text().splitlines():
        m = re.match(r"\| (\d+) \|.*\|(.*)\|\s*$", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                assert name not in codes, f"{name} is listed twice in docs/cli.md"
                codes[name] = int(m.group(1))
    return codes


def test_registry_is_complete() -> None:
    assert len(ALL) >= 50
    assert errors.PolykeyError in ALL and errors.PeerNotFoundError in ALL


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_documented_with_its_code(cls: type[errors.PolykeyError]) -> None:
    assert documented_codes().get(cls.__name__) == cls.exit_code
    assert cls.__doc__ and len(cls.__doc__.strip()) > 20
    assert cls.default_message and "\n" not in cls.default_message


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_round_trips_the_wire(cls: type[errors.PolykeyError]) -> None:
    e = cls("some message", detail=1)
    back = errors.from_wire(e.to_wire())
    assert type(back) is cls and back.message == "some message" and back.data == {"detail": 1}


def test_unknown_or_malformed_wire_errors() -> None:
    assert type(errors.from_wire({"type": "NoSuchError", "message": "m"})) is errors.PolykeyError
    assert errors.from_wire("junk").message == "malformed error from agent"


def test_missing_vault_secret_commit_and_node_have_codes_of_their_own() -> None:
    own = [errors.VaultNotFoundError, errors.SecretNotFoundError, errors.CommitNotFoundError,
           errors.SecretIsDirectoryError, errors.PeerNotFoundError]
    others = [c.exit_code for c in ALL if c not in own and c is not errors.SecretNotDirectoryError]
    for cls in own:
        assert cls.exit_code not in others, cls
    assert len({c.exit_code for c in own}) == len(own)
