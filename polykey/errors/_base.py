"""The error root, its registry and wire form, and the usage, crypto and key errors.

Every error a user can see is a :class:`PolykeyError`. Each subclass carries an
``exit_code`` (sysexits-style, see ``docs/cli.md``) and a docstring that says
what the user can do about it. The CLI maps errors to exit codes and one-line
messages in exactly one place (``polykey.cli.errors``). Errors cross the agent
socket and the peer transport as ``{type, message, data}`` (:meth:`PolykeyError.to_wire`) and
are rebuilt into the same class with :func:`from_wire`.

Messages never contain a secret value, a password or key material.
"""

from __future__ import annotations

from typing import Any, ClassVar

# sysexits.h values, as the original Polykey CLI uses them.
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_NOHOST = 68
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

_REGISTRY: dict[str, type["PolykeyError"]] = {}


class PolykeyError(Exception):
    """Something went wrong in Polykey. The message says what."""

    exit_code: ClassVar[int] = EX_SOFTWARE
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message if message is not None else self.default_message
        self.data: dict[str, Any] = data
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in _REGISTRY:
            raise TypeError(f"duplicate error class name {cls.__name__}")
        _REGISTRY[cls.__name__] = cls

    def within(self, context: str, advice: str = "") -> PolykeyError:
        """This error with ``context`` (what the user named: a reference, a file line, a vault) before
        its message and ``advice`` after it; same type, so the same exit code. Returns ``self``."""
        self.message = f"{context}: {self.message}{advice}"
        self.args = (self.message,)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The ``{type, message, data}`` form that crosses the agent socket and the peer transport."""
        return {"type": type(self).__name__, "message": self.message, "data": self.data}


_REGISTRY[PolykeyError.__name__] = PolykeyError


def from_wire(obj: object) -> PolykeyError:
    """Rebuild an error sent as ``{type, message, data}``; unknown types become PolykeyError."""
    if not isinstance(obj, dict):
        return PolykeyError("malformed error from agent")
    name = obj.get("type")
    message = obj.get("message")
    data = obj.get("data")
    cls = _REGISTRY.get(name, PolykeyError) if isinstance(name, str) else PolykeyError
    err = cls(message if isinstance(message, str) else None)
    if isinstance(data, dict):
        err.data = dict(data)
    return err


def error_classes() -> list[type[PolykeyError]]:
    """Every registered error class (for documentation tests)."""
    return list(_REGISTRY.values())


# -- usage ---------------------------------------------------------------------


class InvalidInputError(PolykeyError):
    """An argument or input is malformed (a NodeId, a path, a number). Fix the input and retry."""

    exit_code = EX_USAGE
    default_message = "invalid input"


class PasswordRequiredError(PolykeyError):
    """A password is needed but none was given and there is no terminal to ask on.

    Give ``--password-file FILE`` or set ``PK_PASSWORD``.
    """

    exit_code = EX_USAGE
    default_message = "a password is required: use --password-file or PK_PASSWORD (no terminal to prompt on)"


class ConfirmationRequiredError(InvalidInputError):
    """A command that destroys data was run without a terminal to ask on and without ``--yes``.

    Pass ``--yes`` (``--force`` for ``pk secrets generate`` over an existing secret) to confirm.
    """

    exit_code = EX_USAGE
    default_message = "this command destroys data: pass --yes to confirm (no terminal to ask on)"


class WeakPasswordError(InvalidInputError):
    """A new node password is shorter than 8 characters. Choose a longer one (a passphrase of a few
    words is best), or pass ``--allow-weak-password`` if you really mean it."""

    exit_code = EX_USAGE
    default_message = "the password is shorter than 8 characters: choose a longer one, or pass --allow-weak-password"


class AbortedError(PolykeyError):
    """You answered no (or nothing) when asked to confirm. Nothing was changed."""

    exit_code = 130
    default_message = "aborted; nothing was changed"


# -- crypto --------------------------------------------------------------------


class CryptoError(PolykeyError):
    """A cryptographic operation failed."""

    exit_code = EX_DATAERR
    default_message = "cryptographic operation failed"


class AuthenticationError(CryptoError):
    """Decryption or signature verification failed: the data was tampered with or the key is wrong.

    Every authentication failure is this one error; it never says which byte was wrong.
    """

    exit_code = EX_DATAERR
    default_message = "authentication failed: data was tampered with or the key is wrong"


class NotForThisKeyError(CryptoError):
    """The data is sealed for another key; try another one."""

    exit_code = EX_NOPERM
    default_message = "not sealed for this key"


# -- keys and node -------------------------------------------------------------


class KeysError(PolykeyError):
    """A problem with the node's keys."""

    exit_code = EX_SOFTWARE
    default_message = "key error"


class WrongPasswordError(KeysError):
    """The password does not unlock the node's key. Nothing was changed; try again."""

    exit_code = EX_NOPERM
    default_message = "wrong password"


class KeyFileError(KeysError):
    """A key file is truncated, tampered with or of an unknown version. Restore it or run `pk keys recover`."""

    exit_code = EX_DATAERR
    default_message = "key file is corrupt"


class RecoveryCodeError(KeysError):
    """The recovery code is not 24 valid BIP39 words with a correct checksum. Check the words."""

    exit_code = EX_DATAERR
    default_message = "invalid recovery code"


class NodeExistsError(KeysError):
    """A node already exists at this path. Use another --node-path, or --fresh to replace it."""

    exit_code = EX_CANTCREAT
    default_message = "a node already exists here (use --fresh to replace it)"


class NodeNotFoundError(KeysError):
    """There is no node at this path. Run `pk bootstrap` or give the right --node-path."""

    exit_code = EX_NOINPUT
    default_message = "no node here: run `pk bootstrap` first"
