"""The node directory and the key file inside it (docs/spec/keys.md section 1).

Layout of ``$PK_NODE_PATH`` (0700)::

    keys/          0700
      node.key     0600  the wrapped root key (polykey.keys.keyfile)
    ...            other parts of Polykey add their own files beside these

A node exists when ``keys/node.key`` exists.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from polykey import crypto, fsutil
from polykey.errors import InvalidInputError, KeyFileError, NodeExistsError, NodeNotFoundError
from polykey.ids import NodeId
from polykey.keys import keyfile
from polykey.keys.keypair import KeyPair

KEYS_DIR = "keys"
KEY_FILE = "node.key"
_KEYFILE_LIMIT = 4096


class NodeDir:
    """A node directory on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def key_path(self) -> Path:
        return self.path / KEYS_DIR / KEY_FILE

    def exists(self) -> bool:
        return self.key_path.exists()

    def read_keyfile(self) -> keyfile.KeyFile:
        try:
            data = fsutil.read_limited(self.key_path, _KEYFILE_LIMIT)
        except FileNotFoundError:
            raise NodeNotFoundError(f"no node at {self.path}: run `pk bootstrap` first") from None
        except ValueError:
            raise KeyFileError(f"key file {self.key_path} is too large to be a Polykey key file") from None
        return keyfile.decode(data, name=f"key file {self.key_path}")

    def public_key(self) -> bytes:
        return self.read_keyfile().public_key

    def unlock(self, password: crypto.Secret) -> KeyPair:
        return self.read_keyfile().unlock(password)

    def _write_key(self, root: Path, pair: KeyPair, password: bytes, limits: crypto.KdfLimits) -> None:
        fsutil.ensure_private_dir(root)
        fsutil.ensure_private_dir(root / KEYS_DIR)
        fsutil.atomic_write(root / KEYS_DIR / KEY_FILE, keyfile.encode(pair, password, limits))

    def check_creatable(self, *, fresh: bool = False) -> bool:
        """Raise NodeExistsError unless a node may be created here; True if one would be replaced
        (only with ``fresh``). Nothing is written."""
        if self.path.exists() and not self.path.is_dir():
            raise NodeExistsError(f"{self.path} exists and is not a directory; refusing to use it")
        ancestor = self.path.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise InvalidInputError(f"cannot create a node at {self.path}: {ancestor} is not a writable directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not self.exists():
                raise NodeExistsError(f"{self.path} is not empty and is not a Polykey node; refusing to use it")
            if not fresh:
                raise NodeExistsError(f"a node already exists at {self.path} (use --fresh to replace it)")
            return True
        return False

    def create(
        self,
        pair: KeyPair,
        password: bytes,
        limits: crypto.KdfLimits,
        *,
        fresh: bool = False,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Create a node holding ``pair``, all or nothing; with ``fresh``, replace an existing one.

        The new node is staged in a temporary directory beside the node path and renamed into
        place at the end, so a failure (or a crash) leaves no key file, and an existing node is
        only ever replaced whole by a complete one. ``before_commit`` runs once the node is staged,
        just before it is put in place; if it raises, nothing is changed.
        """
        replacing = self.check_creatable(fresh=fresh)
        # A node path that is a symlink (e.g. to another disk) stays one: the node goes where it
        # points, staged beside that target so the final rename stays on one file system.
        dest = Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path.absolute()
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=parent))
        old: Path | None = None
        swapped = False
        try:
            self._write_key(staged, pair, password, limits)
            if before_commit is not None:
                before_commit()
            # Replacing: swap both names in one step where the system can, so a crash at any
            # instant leaves a whole node (the old or the new) at the node path.
            if replacing and fsutil.exchange(staged, dest):
                swapped = True
            else:
                if replacing:
                    old = dest.with_name(f".{dest.name}.old-{crypto.random_bytes(4).hex()}")
                    os.rename(dest, old)
                try:
                    os.rename(staged, dest)  # onto nothing, or an empty directory
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise NodeExistsError(f"{self.path} was filled while the node was created; nothing was changed") from None
        except BaseException:
            if not swapped:
                shutil.rmtree(staged, ignore_errors=True)
            if old is not None and old.exists() and not dest.exists():
                os.rename(old, dest)
            raise
        fsutil.fsync_dir(parent)
        if swapped:
            shutil.rmtree(staged, ignore_errors=True)  # it now holds the old node
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _current_keyfile(self) -> keyfile.KeyFile | None:
        """The key file, or None if it is damaged or missing."""
        try:
            return self.read_keyfile()
        except (KeyFileError, NodeNotFoundError):
            return None

    def check_own_key(self, pair: KeyPair) -> None:
        """NodeExistsError unless ``pair`` is this node's keypair (or its key file is damaged or
        missing, so nobody can tell: recovering is what that needs)."""
        current = self._current_keyfile()
        if current is not None and not crypto.constant_time_eq(current.public_key, pair.public_key):
            raise NodeExistsError(
                f"the recovery code is for node {pair.node_id}, but {self.path} holds node "
                f"{NodeId(current.public_key)}; recover into another --node-path"
            )

    def rekey(self, pair: KeyPair, password: bytes, limits: crypto.KdfLimits) -> None:
        """Write a new key file for this node's own keypair (recovery under a new password).

        Everything else in the node directory (vaults, node graph, trust, ...) is kept: it belongs
        to the same key. NodeExistsError if ``pair`` is another node's key. A damaged key file is
        kept beside the new one as ``node.key.corrupt``.
        """
        self.check_own_key(pair)
        data = keyfile.encode(pair, password, limits)
        if self.key_path.exists() and self._current_keyfile() is None:
            os.replace(self.key_path, self.key_path.with_name(KEY_FILE + ".corrupt"))
        fsutil.ensure_private_dir(self.path)
        fsutil.ensure_private_dir(self.path / KEYS_DIR)
        fsutil.atomic_write(self.key_path, data)

    def change_password(self, old_password: bytes, new_password: bytes, limits: crypto.KdfLimits | None = None) -> None:
        """Re-wrap the key under a new password; WrongPasswordError leaves the file untouched."""
        current = self.read_keyfile()
        pair = current.unlock(old_password)
        fsutil.atomic_write(self.key_path, keyfile.encode(pair, new_password, limits or current.limits))
