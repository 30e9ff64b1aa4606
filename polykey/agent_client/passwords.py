"""Password sources for starting or unlocking the agent, without click.

The same rules as ``polykey.cli.common`` (docs/cli.md "Common options"):
``--password-file`` (at most 4 KiB, one trailing newline stripped), else
``PK_PASSWORD``, else a hidden prompt on the terminal, else
PasswordRequiredError at once (never a hang).
"""

from __future__ import annotations

import os
import stat
import sys

from polykey.errors import InvalidInputError, PasswordRequiredError, WeakPasswordError

PASSWORD_FILE_LIMIT = 4096
#: New node passwords shorter than this (in characters) need ``--allow-weak-password``.
MIN_PASSWORD_CHARS = 8


def warn(message: str) -> None:
    """One warning line on stderr, as every ``pk`` message: ``pk: warning: ...``."""
    try:
        sys.stderr.write(f"pk: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no stderr (closed, or started without one)
        pass


def read_password_file(path: str, what: str = "password file") -> bytes:
    """The password (or recovery code) in ``path``: at most 4 KiB, one trailing newline stripped.

    Warns (one line) when the file is readable by group or others, as ssh does for keys.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(PASSWORD_FILE_LIMIT + 1)
    except OSError as e:
        raise InvalidInputError(f"cannot read {what} {path}: {e.strerror}") from None
    if stat.S_ISREG(mode) and mode & 0o044:
        warn(f"{what} {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}): run `chmod 600 {path}`")
    if len(data) > PASSWORD_FILE_LIMIT:
        raise InvalidInputError(f"{what} {path} is larger than {PASSWORD_FILE_LIMIT} bytes")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise InvalidInputError(f"{what} {path} is empty")
    return data


def have_tty() -> bool:
    try:
        with open("/dev/tty"):
            return sys.stdin is not None and sys.stdin.isatty()
    except OSError:
        return False


class PasswordSource:
    """Where the node password comes from; read lazily, at most once."""

    def __init__(self, password_file: str | None = None, *, prompt: str = "Node password: ",
                 confirm: bool = False) -> None:
        self.password_file = password_file
        self.prompt = prompt
        self.confirm = confirm
        self._cached: bytes | None = None

    def available(self) -> bool:
        """True when :meth:`get` can succeed without failing for lack of a source."""
        return self.password_file is not None or bool(os.environ.get("PK_PASSWORD")) or have_tty()

    def get(self) -> bytes:
        if self._cached is None:
            self._cached = self._read()
        return self._cached

    def _read(self) -> bytes:
        if self.password_file is not None:
            return read_password_file(self.password_file)
        env = os.environ.get("PK_PASSWORD")
        if env:
            return env.encode("utf-8")
        return prompt_password(self.prompt, confirm=self.confirm)


def prompt_password(prompt: str, *, confirm: bool = False) -> bytes:
    """Ask on the terminal (hidden); twice when ``confirm``. PasswordRequiredError without a TTY."""
    if not have_tty():
        raise PasswordRequiredError()
    import getpass

    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat to confirm: ") != value:
        raise InvalidInputError("the passwords do not match")
    if not value:
        raise InvalidInputError("the password must not be empty")
    return value.encode("utf-8")


def check_new_password(password: bytes, *, allow_weak: bool = False) -> bytes:
    """``password`` if it may become a node password: WeakPasswordError if it is shorter than
    :data:`MIN_PASSWORD_CHARS` characters (bytes, if it is not UTF-8), unless ``allow_weak``."""
    try:
        length = len(password.decode("utf-8"))
    except UnicodeDecodeError:
        length = len(password)
    if length < MIN_PASSWORD_CHARS and not allow_weak:
        raise WeakPasswordError()
    return password
