"""Confirmation for commands that destroy data (docs/cli.md "Confirmation").

One rule for every destructive command, on both routes into ``pk`` (the click application and
the click-free fast path), so standard library only:

- ``--yes`` / ``-y`` (``--force`` / ``-f`` for ``pk secrets generate`` over an existing secret)
  confirms: nothing is asked.
- Else, on a terminal, the command asks ``... [y/N]`` on ``/dev/tty``; anything but ``y`` or
  ``yes`` is AbortedError (exit 130) and nothing is changed.
- Else (no terminal) it refuses at once with ConfirmationRequiredError (exit 64), one line
  saying to pass the flag, before it touches anything.

Use :func:`must_ask` before the command does any work (it refuses without a terminal), then
:func:`ask` once the command knows what it would destroy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from polykey.agent_client.passwords import have_tty
from polykey.errors import AbortedError, ConfirmationRequiredError

_ANSWER_LIMIT = 256


def must_ask(confirmed: bool, action: str, flag: str = "--yes") -> bool:
    """Whether the user must still be asked before ``action`` ("delete vault 'x'").

    False when ``confirmed`` (the flag was given); True on a terminal; without one,
    ConfirmationRequiredError naming ``flag``.
    """
    if confirmed:
        return False
    if not have_tty():
        raise ConfirmationRequiredError(f"refusing to {action} without confirmation: pass {flag} (no terminal to ask on)")
    return True


def ask(question: str) -> None:
    """Ask ``question [y/N]`` on the terminal; AbortedError unless the answer is y or yes."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        raise AbortedError("aborted: cannot ask on the terminal; nothing was changed") from None
    try:
        os.write(fd, f"{question} [y/N] ".encode("utf-8", "replace"))
        answer = os.read(fd, _ANSWER_LIMIT)  # the terminal hands over one whole line (canonical mode)
    except OSError:
        raise AbortedError("aborted: cannot ask on the terminal; nothing was changed") from None
    finally:
        os.close(fd)
    if answer.strip().lower() not in (b"y", b"yes"):
        raise AbortedError()


def confirm(confirmed: bool, action: str, question: str, flag: str = "--yes") -> None:
    """:func:`must_ask` and :func:`ask` in one step, for a command that knows at once what it would
    destroy."""
    if must_ask(confirmed, action, flag):
        ask(question)


class RemoveConfirmation:
    """``pk secrets rm``: ``-r`` asks first (both routes into ``pk`` use this).

    Construct it before touching the agent (it refuses at once without a terminal or ``--yes``);
    once every target is known to exist, call :meth:`ask`.
    """

    def __init__(self, targets: Sequence[str], recursive: bool, yes: bool) -> None:
        self.targets = list(targets)
        self.needed = recursive and must_ask(yes, "remove recursively (-r)")

    def ask(self) -> None:
        if self.needed:
            them = "them" if len(self.targets) > 1 else "it"
            ask(f"Remove {', '.join(self.targets)} and everything in {them}?")
