"""The in-place upgrade of a format version 1 vault (docs/spec/vault-format.md section 12).

A vault written by format version 1 has a random VaultId and no key commitment. The first owner
whose agent opens it on a verified head makes one signed commit that rewrites only ``.pk/``:
``.pk/vault`` as version 2 with origin ``UPGRADED``, and the current epoch's keys file as version 2
with the commitment of the secret this node unwraps (the same wraps). Its commits before that stay
verifiable by the version 1 rules. A node that is not an owner, or holds no wrap, leaves the vault
as it is and reads it by the version 1 rules.
"""

from __future__ import annotations

from typing import Any

from polykey.crypto import memory
from polykey.vaults.format import OWNER, V1, WrappedKeys, key_commitment, keys_file_name
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.vault import PK_DIR, Parts, Snapshot, Vault

MESSAGE = "upgrade vault format to version 2\n"


class _Current(Exception):
    """The vault was upgraded meanwhile (another process): nothing to write."""


def upgrade(v: Vault) -> str | None:
    """Upgrade ``v`` if it is a version 1 vault this node owns; the upgrade commit, or None."""
    with v.repo.read_lock():
        snap = v.snapshot()
    if snap.info.version != V1 or snap.keys is None or snap.members.role_of(v.me) != OWNER:
        return None

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, Any]]:
        if snap.info.version != V1 or snap.keys is None:
            raise _Current
        name = keys_file_name(snap.info.epoch)
        e = v.repo.entry(snap.tree, f"{PK_DIR}/keys/{name}")
        assert e is not None  # snap.keys came from it
        old = WrappedKeys.decode(v.repo.read_blob(e.oid))
        secret = old.unwrap(v.key)
        try:
            commitment = key_commitment(v.vault_id, old.epoch, secret)
        finally:
            memory.wipe(secret)
        keys = WrappedKeys(old.epoch, old.wraps, commitment)  # every member's wrap kept as it is
        changes: dict[Parts, Change] = {
            (PK_DIR, "vault"): Entry(BLOB, v.repo.write_blob(snap.info.upgraded().encode())),
            (PK_DIR, "keys", name): Entry(BLOB, v.repo.write_blob(keys.encode())),
        }
        return changes, MESSAGE, {}

    try:
        return str(v.write_metadata(build)["commit"])
    except _Current:
        return None
