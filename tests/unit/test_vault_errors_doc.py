"""Vault error classes: each has a docstring and its own documented exit code in docs/cli.md."""

from __future__ import annotations

import re
from pathlib import Path

from polykey import errors

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
VAULT_ERRORS = [c for c in errors.error_classes() if issubclass(c, errors.VaultError) or c is errors.CommitNotFoundError]


def test_vault_errors_documented_with_their_codes() -> None:
    codes: dict[str, int] = {}
    for line in CLI_MD.read_text().splitlines():
        m = re.match(r"\| (\d+) \|.*\|(.*)\|\s*$", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                codes[name] = int(m.group(1))
    assert len(VAULT_ERRORS) >= 14
    for cls in VAULT_ERRORS:
        assert cls.__doc__ and len(cls.__doc__) > 30, cls
        assert codes.get(cls.__name__) == cls.exit_code, cls


def test_missing_vault_secret_and_commit_have_codes_of_their_own() -> None:
    own = [errors.VaultNotFoundError, errors.SecretNotFoundError, errors.CommitNotFoundError,
           errors.SecretIsDirectoryError]
    others = [c.exit_code for c in errors.error_classes() if c not in own and c is not errors.SecretNotDirectoryError]
    for cls in own:
        assert cls.exit_code not in others, cls
    assert len({c.exit_code for c in own}) == len(own)


def test_errors_round_trip_the_wire_with_data() -> None:
    e = errors.VaultVerificationError("commit abc: bad", commit="abc", reason="bad")
    back = errors.from_wire(e.to_wire())
    assert type(back) is errors.VaultVerificationError and back.data == {"commit": "abc", "reason": "bad"}
