"""Talking to the node's agent (the keynode daemon) over its Unix socket.

Everything in this package imports only the standard library, so the ``pk`` fast
path and :class:`polykey.Client` stay cheap: no click, asyncio, pygit2, nacl or
cryptography here, and on the fast path not even ``json``, ``socket``, ``typing``
or :mod:`polykey.errors` until something goes wrong (docs/performance.md "Fast path").
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from typing import Any

    from polykey.errors import PolykeyError


class LazyError:
    """Stands for the ``polykey.errors`` class ``name`` in ``raise LazyError(name)(message)``:
    the error table is imported only when an error is raised."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, message: str | None = None, **data: Any) -> PolykeyError:
        import polykey.errors

        cls: type[PolykeyError] = getattr(polykey.errors, self.name)
        return cls(message, **data)


def is_error(e: BaseException, name: str) -> bool:
    """``isinstance(e, polykey.errors.<name>)``, without importing the error table: no Polykey
    error can exist before it was imported."""
    errors = sys.modules.get("polykey.errors")
    return errors is not None and isinstance(e, getattr(errors, name))
