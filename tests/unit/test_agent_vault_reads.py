"""A read that must first verify new commits leaves the agent's event loop (issue 11 phase 2b)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from polykey.ids import VaultId
from polykey.vaults import ops
from polykey.vaults.vault import Vault

from ..conftest import until
from .test_agent_core import ctx, make_agent


def test_a_long_verification_does_not_stall_other_clients(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    service = agent.vaults
    for name in ("big", "other"):
        service.create_vault(name)
        service.set_secret(name, "k", name.encode())
    # New commits arrive past the verified head (as sync will bring them; here another writer).
    raw = service._vault("big")  # noqa: SLF001
    outside = Vault(raw.repo.path, raw.vault_id, service.node_key, time.time, os.urandom)
    ops.set_secret(outside, ("new",), b"arrived")
    outside.close()
    verifying, release = threading.Event(), threading.Event()
    real_check, real_get = service._trust.check, service.get_secret  # noqa: SLF001
    read_threads: list[str] = []

    def slow_check(v: Vault, head: str) -> None:  # a long verification (10,000 commits, say)
        verifying.set()
        release.wait(10)
        real_check(v, head)

    def spy_get(vault: str, path: str, commit: str | None = None) -> bytes:
        read_threads.append(threading.current_thread().name)
        return real_get(vault, path, commit)

    service._trust.check = slow_check  # type: ignore[method-assign]  # noqa: SLF001
    service.get_secret = spy_get  # type: ignore[method-assign]

    async def call(method: str, params: dict[str, Any]) -> Any:
        return await agent.dispatch(ctx(method, []), params)

    async def main() -> None:
        first = asyncio.create_task(call("secrets.get", {"vault": "big", "path": "new"}))
        await until(verifying.is_set, "the verification to start")
        # Another client is answered while the verification runs (the loop is free).
        assert await call("secrets.get", {"vault": "other", "path": "k"}) == b"other"
        assert not first.done()
        release.set()
        assert await first == b"arrived"
        assert await call("secrets.get", {"vault": "big", "path": "k"}) == b"big"  # verified now: inline

    asyncio.run(main())
    assert [t.startswith("keynode-worker") for t in read_threads] == [True, True, False]
    assert read_threads[2] == "MainThread"


def test_a_verified_vault_is_read_inline_when_first_opened(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    service = agent.vaults
    vault_id = service.create_vault("app")["vaultId"]
    service.set_secret("app", "k", b"v")
    service._forget(VaultId.from_text(vault_id))  # noqa: SLF001 - as if evicted, or after a start
    real_get = service.get_secret
    read_threads: list[str] = []

    def spy_get(vault: str, path: str, commit: str | None = None) -> bytes:
        read_threads.append(threading.current_thread().name)
        return real_get(vault, path, commit)

    service.get_secret = spy_get  # type: ignore[method-assign]
    assert asyncio.run(agent.dispatch(ctx("secrets.get", []), {"vault": "app", "path": "k"})) == b"v"
    assert read_threads == ["MainThread"]  # its head is the verified one: nothing to verify first
