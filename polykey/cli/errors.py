"""The one place where errors become one-line messages and exit codes (docs/cli.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from polykey.errors import EX_SOFTWARE, EX_USAGE, PolykeyError

EXIT_INTERRUPTED = 130


def _say(message: str) -> None:
    sys.stderr.write(f"pk: {message}\n")
    sys.stderr.flush()


def run_guarded(invoke: Callable[[], object]) -> int:
    """Run ``invoke`` (the click app in non-standalone mode) and map every outcome to an exit code."""
    try:
        result = invoke()
    except PolykeyError as e:
        _say(e.message)
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        _say("aborted")
        return EXIT_INTERRUPTED
    except click.exceptions.UsageError as e:
        e.show(file=sys.stderr)
        return EX_USAGE
    except click.ClickException as e:
        _say(e.format_message())
        return EX_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Reader went away (e.g. `pk ... | head`): not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as e:  # noqa: BLE001 - last line of defence, never a traceback with data
        if os.environ.get("PK_DEBUG"):
            raise
        _say(f"internal error ({type(e).__name__}); rerun with PK_DEBUG=1 for details")
        return EX_SOFTWARE
    return int(result) if isinstance(result, int) else 0
