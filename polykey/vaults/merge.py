"""STUB of the merge of sync (issue 12), to be replaced by the real module of the sync-merge branch.

Only what :meth:`polykey.vaults.service.VaultService.receive` needs to run until the real merge
lands: "up-to-date" (theirs is in our history), "fast-forward" (ours is in theirs), and anything
else "kept" with reason "diverged". It writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polykey.vaults.vault import Vault


@dataclass(frozen=True)
class Outcome:
    """What integrating another member's verified head did (the real module's API)."""

    head: str  # the commit the branch should point at
    action: str  # "up-to-date" | "fast-forward" | "merged" | "adopted" | "rebased" | "kept"
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reapplied: int = 0
    reason: str | None = None
    written: list[str] = field(default_factory=list)  # commits this call wrote (the caller self-checks them)


def integrate(v: Vault, ours: str, theirs: str) -> Outcome:
    """Bring verified head ``theirs`` into ``ours`` (both in ``v``'s repository). Stub: no merge."""
    if v.repo.is_ancestor(theirs, ours):
        return Outcome(ours, "up-to-date")
    if v.repo.is_ancestor(ours, theirs):
        return Outcome(theirs, "fast-forward")
    return Outcome(ours, "kept", reason="diverged")
