"""One bounded log line about a failure while serving one connection or datagram.

No outside input may end the agent (docs/spec/agent-protocol.md section 2): every
connection and datagram has one guard that catches what its handling raised and logs it
with :func:`describe`: the exception's type and, for a :class:`PolykeyError`, its message
(written never to hold a secret) or else where it was raised. Never the exception's own
text, which may quote the input, and never a traceback thousands of lines long.
"""

from __future__ import annotations

import os

from polykey.errors import PolykeyError

MAX_REASON = 200


def describe(exc: BaseException) -> str:
    """``Type: message`` for a PolykeyError, ``Type at file.py:line in function`` otherwise."""
    if isinstance(exc, PolykeyError):
        text = f"{type(exc).__name__}: {exc.message}"
    else:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        text = type(exc).__name__
        if tb is not None:
            code = tb.tb_frame.f_code
            text += f" at {os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
        del tb
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
