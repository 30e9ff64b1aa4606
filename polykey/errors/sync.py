"""Sharing and sync errors (docs/spec/sync.md, docs/cli.md)."""

from __future__ import annotations

from polykey.errors._base import EX_DATAERR, PolykeyError

# 84 is PeerNotFoundError, 85 VaultRollbackError, 86 VaultStateError.
EX_SYNC_REFUSED = 87
EX_SYNC_REJECTED = 88


class SyncError(PolykeyError):
    """Sharing or syncing a vault with another node failed. The message says with whom and why."""

    exit_code = EX_DATAERR
    default_message = "vault sync failed"


class SyncRefusedError(SyncError):
    """The other node does not share that vault with this one (never shared, or this node was removed
    from it; the answer is the same for a vault it does not hold). Ask one of its owners to share it.
    """

    exit_code = EX_SYNC_REFUSED
    default_message = "the node does not share that vault with this node"


class SyncRejectedError(SyncError):
    """What the other node sent failed the checks (a malformed or unexpected object, a commit that does
    not verify, another history). Nothing of it was used and the vault is unchanged; the agent's log
    names the node and the reason. Sync with another member, or tell the owner.
    """

    exit_code = EX_SYNC_REJECTED
    default_message = "the transfer from the other node was rejected; nothing was changed"


class SyncCursorError(SyncError):
    """A paged transfer's cursor is unknown or expired (the serving node restarted, or the transfer
    stalled too long). Run the pull again."""

    exit_code = EX_DATAERR
    default_message = "the transfer cursor is unknown or expired"
