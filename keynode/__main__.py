"""``python -m keynode``: the Polykey daemon."""

from __future__ import annotations

import sys

from keynode import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("--version", "-V"):
        print(f"keynode {__version__}")
        return 0
    print(f"keynode {__version__}: the daemon is started by `pk agent start`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
