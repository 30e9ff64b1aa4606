"""The ``pk`` command.

:func:`main` is the entry point (the installed ``pk`` script, see ``scripts/pk``). It must stay
cheap to import: the everyday commands are dispatched without click (:mod:`polykey.cli.fast`);
everything else, ``--help`` included, goes to the click application in :mod:`polykey.cli.app`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from polykey.cli.fast import dispatch

    code = dispatch(args)
    if code is not None:
        return code
    if sys.flags.no_site and "site" not in sys.modules:
        # Started by the installed script without `site` (scripts/pk): the click application and
        # its dependencies want the full environment (.pth files and all), as any program has.
        import site

        site.main()
    from polykey.cli.app import run

    return run(args)
