"""Sharing and unsharing a vault (DESIGN.md section 6; docs/spec/vault-format.md sections 4.2, 4.3, 8.2).

Each change is one signed commit by an owner (:meth:`Vault.write_metadata`; section 8 rule 5):

- :func:`share` adds a member with a wrap of the *current* epoch secret (the same secret and key
  commitment, one more wrap), or changes the role of a member (no new wrap).
- :func:`unshare` removes a member and, in the same commit, starts epoch ``e + 1`` with a fresh
  random secret wrapped only for the remaining members (older keys files stay: history stays
  readable to whoever had it), and re-encrypts the whole current tree under the new keys (every
  name, secret blob and directory marker at its new path). It returns the *rotation list*: every
  secret the removed node could read at that moment, which should be changed.

Commit messages name the operation only (never a node's secret or a secret's name).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from polykey import crypto
from polykey.crypto import memory
from polykey.errors import (
    CryptoError,
    InvalidInputError,
    NotForThisKeyError,
    VaultAccessError,
    VaultFormatError,
)
from polykey.ids import NodeId
from polykey.vaults.format import (
    DIR_MARKER,
    MAX_MEMBERS,
    OWNER,
    ROLES,
    V2,
    EpochKeys,
    Members,
    WrappedKeys,
    join_path,
    keys_file_name,
)
from polykey.vaults.replicas import replicas_of
from polykey.vaults.repo import BLOB, TREE, Change, Entry
from polykey.vaults.vault import MARKER, PK_DIR, Parts, Snapshot, Vault

JSON = dict[str, Any]
SHARE_MESSAGE = "share vault\n"
UNSHARE_MESSAGE = "unshare vault\n"
MAX_EPOCH = 0xFFFF_FFFF  # an epoch is a u32 in .pk/vault, keys files, names' and blobs' associated data


class _Unchanged(Exception):
    """The node already holds that role: nothing to commit (the head is the answer)."""

    def __init__(self, head: str) -> None:
        super().__init__(head)
        self.head = head


def _keys_file(v: Vault, snap: Snapshot) -> tuple[str, WrappedKeys]:
    """The name and content of the current epoch's keys file of ``snap``."""
    name = keys_file_name(snap.info.epoch)
    e = v.repo.entry(snap.tree, f"{PK_DIR}/keys/{name}")
    if e is None or e.kind != BLOB:
        raise VaultFormatError(f"the vault has no wrapped keys for epoch {snap.info.epoch}")
    return name, WrappedKeys.decode(v.repo.read_blob(e.oid))


def _seal_for(node: NodeId, secret: bytes) -> bytes:
    try:
        return crypto.seal(node.public_key, secret)
    except CryptoError:
        raise InvalidInputError(f"{node} is not a valid node identity (not an Ed25519 public key)") from None


def _members(roles: dict[NodeId, str]) -> Members:
    return Members(tuple(sorted(roles.items(), key=lambda r: r[0].raw)))


def _blob(v: Vault, data: bytes) -> Entry:
    return Entry(BLOB, v.repo.write_blob(data))


def share(v: Vault, node: NodeId, role: str) -> JSON:
    """Make ``node`` a member of ``v`` with ``role`` (owner, writer or reader), in one commit by this
    node, which MUST be an owner (VaultPermissionError otherwise).

    A new member gets a wrap of the current epoch's secret (the keys file keeps its epoch, secret
    and commitment); a member's role is changed in place. Refused (InvalidInputError): a bad role,
    this node itself, a node listed as a backup replica (remove it from ``.pk/replicas`` first), a
    vault of :data:`MAX_MEMBERS` members. Returns ``{"commit", "nodeId", "role", "changed"}`` with
    ``changed`` ``"added"``, ``"role"``, or ``"unchanged"`` (no commit: ``commit`` is the head).
    """
    if role not in ROLES:
        raise InvalidInputError(f"a member's role is one of {', '.join(ROLES)}")
    if node == v.me:
        raise InvalidInputError("a vault cannot be shared with this node itself")

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        if node in replicas_of(v, snap):
            raise InvalidInputError(f"{node} is a backup replica of this vault; remove it from the replicas first")
        roles = dict(snap.members.roles)
        before = roles.get(node)
        if before == role:
            raise _Unchanged(snap.commit)
        roles[node] = role
        changes: dict[Parts, Change] = {(PK_DIR, "members"): _blob(v, _members(roles).encode())}
        if before is None:
            if len(roles) > MAX_MEMBERS:
                raise InvalidInputError(f"a vault has at most {MAX_MEMBERS} members")
            name, wrapped = _keys_file(v, snap)
            try:
                secret = wrapped.open(v.key, v.vault_id)  # checked against the commitment
            except NotForThisKeyError:
                raise VaultAccessError("this node holds no key of the vault's current epoch") from None
            try:
                sealed = _seal_for(node, secret)
            finally:
                memory.wipe(secret)
            keys = WrappedKeys(wrapped.epoch, wrapped.wraps + ((node, sealed),), wrapped.commitment)
            changes[(PK_DIR, "keys", name)] = _blob(v, keys.encode())
        result: JSON = {"nodeId": str(node), "role": role, "changed": "added" if before is None else "role"}
        return changes, SHARE_MESSAGE, result

    try:
        return v.write_metadata(build)
    except _Unchanged as same:
        return {"commit": same.head, "nodeId": str(node), "role": role, "changed": "unchanged"}


def unshare(v: Vault, node: NodeId) -> JSON:
    """Remove ``node`` from the members of ``v``, start a new epoch and re-encrypt the current tree
    under it, all in one commit by this node, which MUST be an owner (VaultPermissionError).

    The new epoch ``e + 1`` has a fresh random secret wrapped for exactly the remaining members
    (a version 2 keys file with its commitment when the vault is version 2); ``.pk/vault`` names
    it; the keys files of older epochs stay, so what ``node`` already had stays readable to it.
    Refused (InvalidInputError): ``node`` is not a member, or is the last owner. This node may remove
    itself while another owner remains (it can no longer read the vault afterwards). Returns
    ``{"commit", "nodeId", "epoch", "rotate"}``: ``rotate`` is the sorted plain path of every secret
    of the vault at that moment, all of which ``node`` could read (the rotation list).
    """

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        roles = dict(snap.members.roles)
        if node not in roles:
            raise InvalidInputError(f"{node} is not a member of this vault")
        if roles[node] == OWNER and sum(r == OWNER for r in roles.values()) == 1:
            raise InvalidInputError("the last owner cannot be removed")
        del roles[node]
        old = v.epoch_keys(snap)  # VaultAccessError: an owner without a wrap cannot re-encrypt
        epoch = snap.info.epoch + 1
        if epoch > MAX_EPOCH:
            raise VaultFormatError("the vault has used every key epoch (a u32); it cannot be re-keyed again")
        secret = v.rng(32)
        try:
            wrapped = WrappedKeys.create(epoch, secret, list(roles), v.vault_id if snap.info.version >= V2 else None)
            new = EpochKeys.derive(v.vault_id, epoch, secret)
        finally:
            memory.wipe(secret)
        try:
            changes, rotate = _reencrypt(v, snap, old, new)
        finally:
            memory.wipe(new.content_key)
            memory.wipe(new.name_key)
        changes[(PK_DIR, "vault")] = _blob(v, replace(snap.info, epoch=epoch).encode())
        changes[(PK_DIR, "members")] = _blob(v, _members(roles).encode())
        changes[(PK_DIR, "keys", keys_file_name(epoch))] = _blob(v, wrapped.encode())
        return changes, UNSHARE_MESSAGE, {"nodeId": str(node), "epoch": epoch, "rotate": rotate}

    return v.write_metadata(build)


def _reencrypt(v: Vault, snap: Snapshot, old: EpochKeys, new: EpochKeys) -> tuple[dict[Parts, Change], list[str]]:
    """The changes (by stored path) that replace every entry of the root tree but ``.pk`` with the
    same tree under ``new``: each name encrypted anew, each secret decrypted under ``old`` and
    encrypted under ``new`` at its path, each directory marker at the directory's new path. Also
    the sorted plain paths of the secrets."""
    changes: dict[Parts, Change] = {(name,): None for name, _e in v.repo.list_tree(snap.tree) if name != PK_DIR}
    rotate: list[str] = []
    empty: str | None = None
    names: dict[str, str] = {}  # plain component -> its name under ``new`` (each encrypted once)

    def stored(parts: Parts) -> Parts:
        return tuple(names[p] if p in names else names.setdefault(p, new.encrypt_name(p)) for p in parts)

    for parts, e in v.walk(snap, snap.tree, (), True, markers=True):
        if e.kind == TREE:
            continue  # a directory is made by what it holds (its secrets, or its marker)
        if parts[-1] == MARKER:
            empty = empty or v.empty_blob()
            changes[stored(parts[:-1]) + (DIR_MARKER,)] = Entry(BLOB, empty)
            continue
        path = join_path(parts)
        value = old.decrypt_secret(path, v.repo.read_blob(e.oid))
        try:
            blob = new.encrypt_secret(path, value, rng=v.rng)
        finally:
            memory.wipe(value)
        changes[stored(parts)] = _blob(v, blob)
        rotate.append(path)
    rotate.sort()
    return changes, rotate

