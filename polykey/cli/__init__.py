"""The ``pk`` command.

:func:`main` is the console-script entry point. It must stay cheap to import:
the hot machine commands are dispatched without click (see the agent issue);
everything else, ``--help`` included, goes to the click application in
:mod:`polykey.cli.app`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from polykey.cli.fast import dispatch

    code = dispatch(args)
    if code is not None:
        return code
    from polykey.cli.app import run

    return run(args)
