"""The Agent object in-process on a real node: progress heartbeats, lock vs in-flight work, idle lock."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from polykey import crypto
from polykey.agent_client import protocol
from polykey.errors import AgentLockedError, InvalidInputError, PolykeyError
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir
from keynode.methods import vaults as vault_handlers
from keynode.agent.core import Agent, AgentConfig
from keynode.handlers import LocalCaller, RequestContext

from ..conftest import until

PASSWORD = b"pw"


def make_agent(tmp_path: Path, **config: Any) -> Agent:
    pair = KeyPair.generate()
    NodeDir(tmp_path / "node").create(pair, PASSWORD, crypto.KDF_PROFILES["min"])
    agent = Agent(AgentConfig(tmp_path / "node", **config), pair)
    vault_handlers.install(agent)
    return agent


def ctx(method: str, progress: list[Any]) -> RequestContext:
    async def record(obj: Any) -> None:
        progress.append(obj)

    return RequestContext(1, method, LocalCaller(0, 0), record)


def test_long_operations_send_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vault_handlers, "PROGRESS_INTERVAL", 0.02)
    agent = make_agent(tmp_path)
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "done"

    async def main() -> tuple[Any, list[Any]]:
        progress: list[Any] = []
        task = asyncio.create_task(vault_handlers._blocking(agent, ctx("x.y", progress), lambda **_: slow(), {}))
        await until(lambda: len(progress) >= 3, "three progress reports")
        release.set()
        return await task, progress

    result, progress = asyncio.run(main())
    assert result == "done" and all(set(p) == {"elapsed"} for p in progress)


def test_lock_waits_for_requests_in_flight_then_refuses(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)

    async def main() -> list[str]:
        events: list[str] = []
        async with agent.using_keys():
            locking = asyncio.create_task(agent.lock("test"))
            await until(lambda: agent.locked, "the lock to begin")  # it then waits for this request
            for _ in range(20):  # and stays waiting however often the loop runs
                await asyncio.sleep(0)
            events.append("in-flight done" if not locking.done() else "locked too early")
            with pytest.raises(AgentLockedError):
                _ = agent.vaults  # new work is refused while locking
        await locking
        events.append(agent.status()["state"])
        with pytest.raises(AgentLockedError):
            await agent.dispatch(ctx("vaults.list", []), {})
        await agent.unlock(PASSWORD)
        events.append(agent.status()["state"])
        return events

    assert asyncio.run(main()) == ["in-flight done", "locked", "unlocked"]


def test_idle_lock_uses_the_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return now[0]

    pair = KeyPair.generate()
    NodeDir(tmp_path / "node").create(pair, PASSWORD, crypto.KDF_PROFILES["min"])
    agent = Agent(AgentConfig(tmp_path / "node", idle_lock=0.2), pair, clock=clock)

    async def main() -> str:
        loop_task = asyncio.create_task(agent._idle_lock_loop(0.2))
        checked = reads[0]
        await until(lambda: reads[0] >= checked + 3, "the idle-lock loop to read the clock three times")
        assert not agent.locked  # the fake clock has not moved
        now[0] += 0.5
        await until(lambda: agent.locked, "the idle lock")
        loop_task.cancel()
        return str(agent.status()["state"])

    assert asyncio.run(main()) == "locked"


def test_reads_leave_the_loop_while_a_write_runs_and_only_real_vaults_show(tmp_path: Path) -> None:
    """A read naming the vault by VaultId while a write (by name) holds the vault must not block
    the event loop; a vault name that does not exist is never listed as open."""
    agent = make_agent(tmp_path)
    service = agent.vaults
    vault_id = service.create_vault("app")["vaultId"]
    service.set_secret("app", "k", b"v")
    release, writing = threading.Event(), threading.Event()
    real_set, real_get = service.set_secret, service.get_secret
    read_threads: list[str] = []

    def slow_set(vault: str, path: str, value: bytes) -> Any:
        writing.set()
        release.wait(10)
        return real_set(vault, path, value)

    def spy_get(vault: str, path: str, commit: str | None = None) -> bytes:
        read_threads.append(threading.current_thread().name)
        return real_get(vault, path, commit)

    service.set_secret, service.get_secret = slow_set, spy_get  # type: ignore[method-assign]

    async def call(method: str, params: dict[str, Any]) -> Any:
        return await agent.dispatch(ctx(method, []), params)

    async def main() -> None:
        write = asyncio.create_task(call("secrets.set", {"vault": "app", "path": "k2", "value": b"w"}))
        await until(writing.is_set, "the write to start")
        assert await call("secrets.get", {"vault": vault_id, "path": "k"}) == b"v"
        release.set()
        await write
        assert await call("secrets.get", {"vault": "app", "path": "k2"}) == b"w"  # inline again
        for bogus in ("nope1", "nope2"):
            with pytest.raises(PolykeyError):
                await call("secrets.get", {"vault": bogus, "path": "k"})

    asyncio.run(main())
    assert read_threads[0].startswith("keynode-worker") and read_threads[1] == "MainThread"
    assert agent.status()["openVaults"] == ["app"]  # one entry per vault, by name (issue 8 item 11)


def test_secrets_list_answers_compact_only_when_asked(tmp_path: Path) -> None:
    """``compact`` (spec s.6) changes the answer's form, not its rows; it must be a boolean."""
    agent = make_agent(tmp_path)
    agent.vaults.create_vault("app")
    for path in ("b/x", "a", "b/y"):
        agent.vaults.set_secret("app", path, b"v")

    async def call(params: dict[str, Any]) -> Any:
        return await agent.dispatch(ctx("secrets.list", []), {"vault": "app", "recursive": True, **params})

    rows = asyncio.run(call({}))
    assert asyncio.run(call({"compact": False})) == rows
    assert asyncio.run(call({"compact": True})) == {"paths": "a\nb/\nb/x\nb/y"}
    assert protocol.listing_rows(asyncio.run(call({"compact": True}))) == rows
    with pytest.raises(InvalidInputError, match="compact must be a boolean"):
        asyncio.run(call({"compact": 1}))
    with pytest.raises(InvalidInputError, match="unknown parameter"):
        asyncio.run(agent.dispatch(ctx("secrets.get", []), {"vault": "app", "path": "a", "compact": True}))
