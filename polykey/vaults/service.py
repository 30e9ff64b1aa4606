"""VaultService: the one API every vault and secret operation goes through.

The ``pk`` CLI calls it in-process today (opening the node with the password);
the agent (keynode) will hold one instance per unlocked node and call the same
methods on behalf of socket clients. Contract:

- Constructed as ``VaultService(node_path, keypair)``; :meth:`close` releases
  open repositories. Also a context manager.
- Every argument and return value is a plain JSON-able value (str, int, bool,
  None, list, dict), except secret values, which are ``bytes``.
- A vault is named by its local name or by its VaultId text (``v...``).
  Secret paths are ``a/b/c`` (no leading ``/`` needed; ``""`` or ``"/"`` is the
  vault root). Commits are named by a full or abbreviated (>= 4 hex) id.
- Thread-compatibility: calls on *different* vaults may run in different
  threads at once; calls on one vault are serialised by a per-vault lock
  inside the service (the agent may serialise them too). No global mutable
  state. Writes also take a per-repository file lock, so two processes never
  interleave writes to one vault.
- A write returns only after its objects and its ref update are on disk.
- Errors are :class:`polykey.errors.PolykeyError` subclasses (VaultNotFoundError,
  SecretNotFoundError, ...); they cross the agent socket as ``{type, message, data}``.

Signature changes after the first commit of this file are noted here:
- (none yet)
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from polykey.keys.keypair import KeyPair

JSON = dict[str, Any]

#: Characters ``generate`` draws from, by name; any other string is used as the literal set.
CHARSETS: dict[str, str] = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "alpha": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "digits": "0123456789",
    "hex": "0123456789abcdef",
    "symbols": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~",
}
DEFAULT_CHARSET = "alnum"
DEFAULT_LENGTH = 32


class VaultService:
    """All vault and secret operations of one node, for one unlocked keypair."""

    def __init__(self, node_path: Path, keypair: KeyPair) -> None:
        self.node_path = Path(node_path)
        self.keypair = keypair

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Release open repositories and cached keys. The service is unusable afterwards."""

    def __enter__(self) -> VaultService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- vaults --------------------------------------------------------------------

    def create_vault(self, name: str) -> JSON:
        """Create an empty vault with this node as sole owner.

        Returns ``{"name", "vaultId", "commit"}``. VaultExistsError if the name is taken,
        InvalidInputError for a bad name (1..128 chars, no control chars, not ``v`` + a VaultId).
        """
        raise NotImplementedError

    def list_vaults(self) -> list[JSON]:
        """Every vault on this node, sorted by name: ``[{"name", "vaultId", "role"}]``."""
        raise NotImplementedError

    def rename_vault(self, old: str, new: str) -> JSON:
        """Rename a vault in the local index (its VaultId and history are unchanged).

        Returns ``{"name", "vaultId"}``. VaultNotFoundError, VaultExistsError.
        """
        raise NotImplementedError

    def delete_vault(self, name: str) -> JSON:
        """Delete a vault and its repository from this node. Returns ``{"name", "vaultId"}``."""
        raise NotImplementedError

    def log(self, vault: str, limit: int | None = None) -> list[JSON]:
        """Commits from HEAD backwards (newest first), at most ``limit``.

        Each: ``{"commit", "parents": [...], "author" (NodeId text), "time" (unix seconds),
        "message"}``.
        """
        raise NotImplementedError

    def version(self, vault: str, commit: str) -> JSON:
        """The vault as of ``commit``, read-only.

        Returns ``{"commit", "author", "time", "message", "secrets": [{"path", "type"}]}``, the whole
        tree listed recursively (``type`` is ``"secret"`` or ``"dir"``). Values at that commit are read
        with ``get_secret(vault, path, commit=...)``. CommitNotFoundError.
        """
        raise NotImplementedError

    def members(self, vault: str) -> list[JSON]:
        """The member list at HEAD: ``[{"nodeId", "role", "self": bool}]``, owners first."""
        raise NotImplementedError

    def verify(self, vault: str) -> JSON:
        """Walk the whole history and check every commit (signature, author's role as of its parents).

        Returns ``{"ok": True, "commits": n, "head"}``; raises VaultVerificationError naming the first
        bad commit (oldest first) with ``data = {"commit", "reason"}``, or VaultIntegrityError.
        """
        raise NotImplementedError

    # -- secrets -------------------------------------------------------------------

    def set_secret(self, vault: str, path: str, value: bytes) -> JSON:
        """Create or replace one secret (one commit). Parent directories are created.

        Returns ``{"path", "commit", "created": bool}``. SecretIsDirectoryError if ``path`` is a
        directory, SecretNotDirectoryError if a parent is a secret.
        """
        raise NotImplementedError

    def get_secret(self, vault: str, path: str, commit: str | None = None) -> bytes:
        """The value of a secret (at HEAD, or as of ``commit``).

        SecretNotFoundError, SecretIsDirectoryError, VaultIntegrityError if it fails authentication.
        """
        raise NotImplementedError

    def list_secrets(
        self, vault: str, path: str = "", recursive: bool = False, commit: str | None = None
    ) -> list[JSON]:
        """Entries under directory ``path``, sorted: ``[{"path", "name", "type"}]``.

        ``type`` is ``"secret"`` or ``"dir"``; with ``recursive`` every descendant is listed.
        Listing a secret's path returns just that secret.
        """
        raise NotImplementedError

    def remove(self, vault: str, path: str, recursive: bool = False) -> JSON:
        """Remove a secret, or a directory with ``recursive`` (or an empty one without).

        Returns ``{"commit", "removed": n_secrets}``.
        """
        raise NotImplementedError

    def move(self, vault: str, src: str, dst: str) -> JSON:
        """Rename a secret or directory (one commit). Into ``dst`` if it is an existing directory.

        Returns ``{"commit", "path"}`` (the final path).
        """
        raise NotImplementedError

    def copy(self, vault: str, src: str, dst: str) -> JSON:
        """Copy a secret or directory (one commit); like :meth:`move` for the destination."""
        raise NotImplementedError

    def mkdir(self, vault: str, path: str, parents: bool = True) -> JSON:
        """Create an (empty) directory. Returns ``{"commit", "path"}``; SecretExistsError if present."""
        raise NotImplementedError

    def stat(self, vault: str, path: str) -> JSON:
        """``{"path", "type", "size", "created", "modified", "author", "revisions", "commit"}``.

        ``created``/``modified`` are unix seconds of the first/last commit that wrote it, ``author``
        the NodeId of the last writer, ``revisions`` the number of commits that changed it.
        """
        raise NotImplementedError

    def history(self, vault: str, path: str, limit: int | None = None) -> list[JSON]:
        """Revisions of one secret, newest first: ``[{"commit", "time", "author", "size", "action"}]``.

        ``action`` is ``"created"``, ``"modified"`` or ``"removed"``.
        """
        raise NotImplementedError

    def revert(self, vault: str, path: str, commit: str) -> JSON:
        """Write the secret's value as of ``commit`` back as a new commit. Returns ``{"commit", "path"}``."""
        raise NotImplementedError

    def generate(
        self,
        vault: str,
        path: str,
        length: int = DEFAULT_LENGTH,
        charset: str = DEFAULT_CHARSET,
        reveal: bool = False,
    ) -> JSON:
        """Store a random password of ``length`` characters from ``charset`` (a name in CHARSETS or a
        literal set). Returns ``{"path", "commit", "length"}`` plus ``"value"`` only when ``reveal``.
        """
        raise NotImplementedError

    def import_secrets(self, vault: str, items: dict[str, bytes]) -> JSON:
        """Write many secrets in one commit. Returns ``{"commit", "count"}``."""
        raise NotImplementedError
