"""Backup replicas (docs/spec/vault-format.md section 4.4): ``.pk/replicas``.

The NodeIds an owner allows to hold and serve the vault's ciphertext without being members. Only an
owner changes the list (it lives in ``.pk/``, so the verification rule asks an owner for it, as for
``.pk/members``). No command sets it yet: the sharing issue builds what uses it.
"""

from __future__ import annotations

from typing import Any

from polykey.errors import InvalidInputError, VaultFormatError
from polykey.ids import NodeId
from polykey.vaults.format import V2, Replicas
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.vault import PK_DIR, Parts, Snapshot, Vault

FILE = (PK_DIR, "replicas")


def replicas_of(v: Vault, snap: Snapshot) -> tuple[NodeId, ...]:
    """The replicas listed as of ``snap`` (none without a ``.pk/replicas``)."""
    e = v.repo.entry(snap.tree, "/".join(FILE))
    return () if e is None else Replicas.decode(v.repo.read_blob(e.oid)).nodes


def set_replicas(v: Vault, nodes: list[NodeId]) -> dict[str, Any]:
    """Replace the replica list (owners only; one signed commit). Returns ``{"commit", "replicas"}``."""

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, Any]]:
        if snap.info.version < V2:
            raise VaultFormatError("a format version 1 vault has no replicas (it is upgraded when an owner opens it)")
        if any(snap.members.role_of(n) is not None for n in nodes):
            raise InvalidInputError("a member of the vault cannot also be listed as a replica")
        data = Replicas(tuple(nodes)).encode() if nodes else None
        change = Entry(BLOB, v.repo.write_blob(data)) if data is not None else None
        listed = sorted(str(n) for n in set(nodes))
        return {FILE: change}, "set replicas\n", {"replicas": listed}

    return v.write_metadata(build)
