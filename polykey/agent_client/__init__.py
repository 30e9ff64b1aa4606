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

    from polykey.errors import InvalidInputError, PolykeyError, SecretReferenceError


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


# -- naming a secret: VAULT:PATH and pk://VAULT/PATH (docs/cli.md, docs/automation.md) ----------
# The one parser of both forms: the CLI, the fast path, env files, templates and polykey.Client.

if not TYPE_CHECKING:
    InvalidInputError = LazyError("InvalidInputError")
    SecretReferenceError = LazyError("SecretReferenceError")


def split_secret_path(text: str, *, need_path: bool = True) -> tuple[str, str]:
    """``VAULT:PATH`` -> ``(vault, path)``; without ``need_path`` also ``VAULT`` or ``VAULT:``
    (path ``""``). InvalidInputError otherwise."""
    vault, sep, path = text.partition(":")
    if not vault:
        raise InvalidInputError(f"{text!r} must be written VAULT:PATH")
    if not sep or not path.strip("/"):
        if need_path:
            raise InvalidInputError(f"{text!r} must be written VAULT:PATH (e.g. myvault:db/password)")
        path = ""
    return vault, path


def _ref_part_ok(text: str) -> bool:
    """``[^\\s{}]+``: non-empty, no whitespace, no brace."""
    return bool(text) and not any(c.isspace() or c in "{}" for c in text)


def parse_reference(text: str, where: str) -> tuple[str, str]:
    """``pk://VAULT/PATH`` -> ``(vault, path)``; SecretReferenceError (naming ``where``) otherwise.

    The rule is the pattern ``pk://([^/\\s{}]+)/([^\\s{}]+)`` over the whole text, with a PATH
    that is not only slashes."""
    vault, sep, path = text[len("pk://"):].partition("/")
    if not (text.startswith("pk://") and sep and _ref_part_ok(vault) and _ref_part_ok(path) and path.strip("/")):
        raise SecretReferenceError(f"{where}: malformed reference (write pk://VAULT/PATH)")
    return vault, path


def parse_secret_ref(text: str) -> tuple[str, str]:
    """Either form -> ``(vault, path)``: ``pk://`` by :func:`parse_reference`, else ``VAULT:PATH``."""
    if text.startswith("pk://"):
        return parse_reference(text, repr(text))
    return split_secret_path(text)
