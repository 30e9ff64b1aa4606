"""Per-vault write locks of the agent (asyncio), shared by the vault methods and sync.

Writes to a vault are serialised per VaultId (text), index changes (create, rename, delete,
clone) node-wide. The locks exist only while a write uses or waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator


class VaultLocks:
    """Writes serialised per VaultId, index changes node-wide; counts the writes in flight."""

    def __init__(self) -> None:
        self.index = asyncio.Lock()
        self._vaults: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        #: Writes, index operations and pooled reads waiting or running: reads leave the loop meanwhile.
        self.in_flight = 0

    @contextlib.contextmanager
    def pooled(self) -> Iterator[None]:
        """Count a read running in the pool (it holds its vault's thread lock meanwhile)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @contextlib.asynccontextmanager
    async def writing(self, vault: str | None) -> AsyncIterator[None]:
        """Hold the write lock of the vault whose VaultId (text) is ``vault`` (None: the vault index)."""
        if vault is None:
            lock = self.index
        else:
            lock = self._vaults.setdefault(vault, asyncio.Lock())
            self._users[vault] = self._users.get(vault, 0) + 1
        self.in_flight += 1
        try:
            async with lock:
                yield
        finally:
            self.in_flight -= 1
            if vault is not None:
                self._users[vault] -= 1
                if not self._users[vault]:  # nobody holds or waits for it: forget it
                    del self._users[vault], self._vaults[vault]
