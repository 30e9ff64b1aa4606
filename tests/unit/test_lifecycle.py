"""One lifecycle idiom (keynode.lifecycle): services own their tasks, and leaving them leaves no task behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from polykey import crypto
from polykey.errors import AgentLockedError
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir
from keynode.agent.core import Agent, AgentConfig
from keynode.handlers import AgentContext, LocalCaller, RequestContext
from keynode.lifecycle import task_group
from keynode.methods import nodes as node_methods
from keynode.peers.dht import Discovery, DhtConfig
from keynode.peers.transport import Transport

from ..conftest import until

HOST = "127.0.0.1"
A, B = KeyPair.generate(), KeyPair.generate()


def only_this_task() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


def test_task_group_cancels_its_tasks_as_its_body_ends() -> None:
    async def main() -> None:
        async with task_group() as tg:
            forever = tg.create_task(asyncio.sleep(3600))
        assert forever.cancelled() and only_this_task()

        async def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ExceptionGroup) as caught:
            async with task_group() as tg:
                tg.create_task(fail())
                await asyncio.sleep(3600)  # cancelled by the failed task
        assert caught.group_contains(ValueError) and only_this_task()

    asyncio.run(main())


def test_transport_shutdown_leaves_no_task() -> None:
    async def main() -> None:
        async with Transport(A, HOST) as a:
            async with Transport(B, HOST) as b:
                channel = await a.connect(B.node_id, HOST, b.port)
                assert await channel.ping(timeout=5) > 0
                await until(lambda: b.stats()["connections"] == 1, "b to admit the connection")
            assert not only_this_task()  # a still serves its end of the connection until it notices
        assert only_this_task()

    asyncio.run(main())


def test_discovery_shutdown_leaves_no_task() -> None:
    config = DhtConfig(republish_interval=0.05, refresh_interval=0.05)

    async def main() -> None:
        async with Discovery(A, host=HOST, config=config) as a:
            async with Discovery(B, host=HOST, seeds=[(A.node_id, HOST, a.port)], config=config) as b:
                assert await b.bootstrap() == 1
                first = b.record.seq if b.record else 0
                assert await a.find(B.node_id) == b.record  # b published to a as it joined
                await until(lambda: b.record is not None and b.record.seq > first, "a periodic republish")
        assert only_this_task()

    asyncio.run(main())


def _ctx(method: str) -> AgentContext:
    async def progress(obj: Any) -> None:
        pass

    return RequestContext(1, method, LocalCaller(0, 0), progress)


def test_agent_with_network_follows_lock_and_unlock_and_leaves_no_task(tmp_path: Path) -> None:
    NodeDir(tmp_path / "node").create(A, b"pw", crypto.KDF_PROFILES["min"])
    agent = Agent(AgentConfig(tmp_path / "node", extra={"host": HOST, "port": 0}), A)
    node_methods.install(agent)

    async def main() -> list[Any]:
        seen: list[Any] = []
        ready = asyncio.Event()
        running = asyncio.create_task(agent.run(lambda status: ready.set()))
        await ready.wait()
        port = agent.status()["peer"]["port"]
        seen.append(await agent.dispatch(_ctx("nodes.list"), {}))
        await agent.lock("test")
        seen.append(agent.status()["peer"])
        with pytest.raises(AgentLockedError):
            await agent.dispatch(_ctx("nodes.list"), {})
        await agent.unlock(b"pw")
        seen.append(agent.status()["peer"] == {"host": HOST, "port": port})  # the same port again
        agent.stop()
        await running
        seen.append(only_this_task())
        return seen

    assert asyncio.run(main()) == [[], None, True, True]


def test_task_group_lets_the_bodys_own_error_out_as_itself() -> None:
    async def main() -> None:
        async with task_group() as tg:
            tg.create_task(asyncio.sleep(3600))
            raise KeyError("body")

    with pytest.raises(KeyError):  # not an ExceptionGroup around it
        asyncio.run(main())

    async def nested() -> None:
        async with task_group():
            async with task_group():
                raise KeyError("deep")

    with pytest.raises(KeyError):
        asyncio.run(nested())

    async def failing_task() -> None:
        async def fail() -> None:
            raise ValueError("task")

        async with task_group() as tg:
            tg.create_task(fail())
            await asyncio.sleep(3600)

    with pytest.raises(ExceptionGroup) as info:  # a task's failure still comes out in a group
        asyncio.run(failing_task())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
