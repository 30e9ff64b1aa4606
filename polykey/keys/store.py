"""The node directory and the key file inside it (docs/spec/keys.md section 1).

Layout of ``$PK_NODE_PATH`` (0700)::

    keys/          0700
      node.key     0600  the wrapped root key (polykey.keys.keyfile)
    ...            other parts of Polykey add their own files beside these

A node exists when ``keys/node.key`` exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from polykey import crypto, fsutil
from polykey.agent import paths as _paths
from polykey.errors import KeyFileError, NodeExistsError, NodeNotFoundError
from polykey.keys import keyfile
from polykey.keys.keypair import KeyPair

KEYS_DIR = "keys"
KEY_FILE = "node.key"
_KEYFILE_LIMIT = 4096


def default_node_path() -> Path:
    """``$PK_NODE_PATH``, else the user's data dir: :func:`polykey.agent.paths.default_node_path`."""
    return Path(_paths.default_node_path())


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

    def unlock(self, password: bytes) -> KeyPair:
        return self.read_keyfile().unlock(password)

    def _write_key(self, root: Path, pair: KeyPair, password: bytes, limits: crypto.KdfLimits) -> None:
        fsutil.ensure_private_dir(root)
        fsutil.ensure_private_dir(root / KEYS_DIR)
        fsutil.atomic_write(root / KEYS_DIR / KEY_FILE, keyfile.encode(pair, password, limits))

    def create(self, pair: KeyPair, password: bytes, limits: crypto.KdfLimits, *, fresh: bool = False) -> None:
        """Create a node holding ``pair``. With ``fresh``, replace an existing node atomically."""
        if self.path.exists() and any(self.path.iterdir()):
            if not self.exists():
                raise NodeExistsError(f"{self.path} is not empty and is not a Polykey node; refusing to use it")
            if not fresh:
                raise NodeExistsError(f"a node already exists at {self.path} (use --fresh to replace it)")
            self._replace(pair, password, limits)
            return
        self._write_key(self.path, pair, password, limits)

    def _replace(self, pair: KeyPair, password: bytes, limits: crypto.KdfLimits) -> None:
        # Build the new node beside the old one, then swap: a crash leaves one whole node.
        token = crypto.random_bytes(4).hex()
        new = self.path.with_name(f".{self.path.name}.new-{token}")
        old = self.path.with_name(f".{self.path.name}.old-{token}")
        try:
            self._write_key(new, pair, password, limits)
            os.rename(self.path, old)
            os.rename(new, self.path)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            if old.exists() and not self.path.exists():
                os.rename(old, self.path)
            raise
        fsutil.fsync_dir(self.path.parent)
        shutil.rmtree(old, ignore_errors=True)

    def change_password(self, old_password: bytes, new_password: bytes, limits: crypto.KdfLimits | None = None) -> None:
        """Re-wrap the key under a new password; WrongPasswordError leaves the file untouched."""
        current = self.read_keyfile()
        pair = current.unlock(old_password)
        fsutil.atomic_write(self.key_path, keyfile.encode(pair, new_password, limits or current.limits))
