"""Vault and secret errors (docs/spec/vault-format.md, docs/cli.md)."""

from __future__ import annotations

from polykey.errors._base import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOPERM,
    EX_SOFTWARE,
    PolykeyError,
)


# -- vaults and secrets (docs/spec/vault-format.md, docs/cli.md) -------------------

# Codes of their own, so a script can tell "no such vault" from "no such secret".
EX_VAULT_NOT_FOUND = 80
EX_SECRET_NOT_FOUND = 81
EX_PATH_KIND = 82
EX_COMMIT_NOT_FOUND = 83
# 84 is PeerNotFoundError (errors/network.py).
EX_VAULT_ROLLBACK = 85
EX_VAULT_STATE = 86


class VaultError(PolykeyError):
    """A problem with a vault or a secret."""

    exit_code = EX_SOFTWARE
    default_message = "vault error"


class VaultNotFoundError(VaultError):
    """No vault by that name (or VaultId) on this node. `pk vaults list` shows the vaults."""

    exit_code = EX_VAULT_NOT_FOUND
    default_message = "no such vault"


class VaultExistsError(VaultError):
    """A vault with that name already exists on this node. Pick another name or rename the old one."""

    exit_code = EX_CANTCREAT
    default_message = "a vault with that name already exists"


class SecretNotFoundError(VaultError):
    """No secret (or directory) at that path in the vault. `pk secrets ls VAULT:DIR` shows what is there."""

    exit_code = EX_SECRET_NOT_FOUND
    default_message = "no such secret"


class SecretExistsError(VaultError):
    """A directory already exists at that path (`mkdir` of an existing directory). Choose another path."""

    exit_code = EX_CANTCREAT
    default_message = "a secret or directory already exists at that path"


class SecretIsDirectoryError(VaultError):
    """The path is a directory where a secret was expected (or a directory would be replaced by a secret).

    Use a path to a secret, or `-r` where the command offers it.
    """

    exit_code = EX_PATH_KIND
    default_message = "is a directory"


class SecretNotDirectoryError(VaultError):
    """A path component is a secret where a directory was expected (or a secret would be replaced by a directory)."""

    exit_code = EX_PATH_KIND
    default_message = "not a directory"


class CommitNotFoundError(VaultError):
    """No commit by that id in the vault's history. `pk vaults log VAULT` lists the commits."""

    exit_code = EX_COMMIT_NOT_FOUND
    default_message = "no such commit in this vault"


class VaultIntegrityError(VaultError):
    """The vault's data failed an integrity check: an object, a secret or the vault metadata was
    tampered with or corrupted. Nothing was returned from it. Run `pk vaults verify VAULT` and restore
    the vault from a replica or backup.
    """

    exit_code = EX_DATAERR
    default_message = "vault integrity check failed: data was tampered with or corrupted"


class VaultVerificationError(VaultIntegrityError):
    """A commit of the vault is not correctly signed by a member allowed to make it, or breaks the
    vault format's rules (found by `pk vaults verify`, or before the agent used the commit).

    The message names the first bad commit; nothing of it was used. Do not trust history from that
    commit on: restore from a good replica, or as an owner `pk vaults reset VAULT --to COMMIT`.
    """

    exit_code = EX_DATAERR
    default_message = "vault history failed verification"


class VaultPermissionError(VaultError):
    """This node's role in the vault does not allow that change (readers cannot write; only owners change
    membership). Ask an owner.
    """

    exit_code = EX_NOPERM
    default_message = "this node's role in the vault does not allow that"


class VaultAccessError(VaultError):
    """This node is not a member of the vault (no wrapped key for it), so it cannot read it."""

    exit_code = EX_NOPERM
    default_message = "this node is not a member of the vault"


class VaultFormatError(VaultError):
    """The vault is of an unknown format version or its metadata is malformed. Upgrade Polykey or restore it."""

    exit_code = EX_DATAERR
    default_message = "unsupported or malformed vault format"


class VaultIndexError(VaultError):
    """The node's local vault name index is corrupt or was tampered with. Restore the node directory."""

    exit_code = EX_DATAERR
    default_message = "the vault name index is corrupt"


class VaultRollbackError(VaultError):
    """The vault's branch was moved to a commit that does not descend from the head this node last
    verified (an older or a foreign history: a rollback). Nothing of it was used. The message names
    both commits; an owner who wants that state anyway runs `pk vaults reset VAULT --to COMMIT`.
    """

    exit_code = EX_VAULT_ROLLBACK
    default_message = "the vault was rolled back: its head does not descend from the verified head"


class VaultStateError(VaultError):
    """The node's vault state file (`<node>/vaults/state`: the verified head and pinned root of every
    vault) is missing, malformed, or was tampered with, so no vault can be trusted. Restore the node
    directory from a backup; or, as an owner, pin each vault again with `pk vaults reset VAULT --to COMMIT`.
    """

    exit_code = EX_VAULT_STATE
    default_message = "the node's vault state is missing or was tampered with"
