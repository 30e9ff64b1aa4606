"""The one place where errors become one-line messages and exit codes (docs/cli.md).

Both routes into ``pk`` use :func:`run_guarded`: the click application and the
click-free fast path for the hot machine commands (``polykey.cli.fast``). Click is
therefore never imported here: its exceptions can only exist once the click app
has imported it, so they are looked up in ``sys.modules`` when an error happens.
The error table (:mod:`polykey.errors`) is imported only when an error happens too:
the fast path's happy path never needs it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_INTERRUPTED = 130


def _say(message: str) -> None:
    sys.stderr.write(f"pk: {message}\n")
    sys.stderr.flush()


def _click_exit_code(e: BaseException) -> int | None:
    """The exit code for a click exception, or None if ``e`` is not one."""
    click = sys.modules.get("click")
    if click is None:
        return None
    from polykey.errors import EX_USAGE

    if isinstance(e, click.exceptions.Exit):
        return int(e.exit_code)
    if isinstance(e, click.exceptions.Abort):
        _say("aborted")
        return EXIT_INTERRUPTED
    if isinstance(e, click.exceptions.UsageError):
        e.show(file=sys.stderr)
        return EX_USAGE
    if isinstance(e, click.ClickException):
        _say(e.format_message())
        return EX_USAGE
    return None


def run_guarded(invoke: Callable[[], object]) -> int:
    """Run ``invoke`` (the click app in non-standalone mode, or a fast-path command) and map every
    outcome to an exit code."""
    try:
        result = invoke()
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Reader went away (e.g. `pk ... | head`): not an error worth a traceback.
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as e:  # noqa: BLE001 - last line of defence, never a traceback with data
        from polykey.errors import EX_SOFTWARE, PolykeyError

        if isinstance(e, PolykeyError):
            _say(e.message)
            return e.exit_code
        code = _click_exit_code(e)
        if code is not None:
            return code
        from polykey.agent_client.paths import getenv

        if getenv("PK_DEBUG"):
            raise
        _say(f"internal error ({type(e).__name__}); rerun with PK_DEBUG=1 for details")
        return EX_SOFTWARE
    return int(result) if isinstance(result, int) else 0
