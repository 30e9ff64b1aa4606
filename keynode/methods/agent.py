"""The agent's own methods: ``agent.ping``, ``status``, ``stop``, ``lock``, ``unlock``
(docs/spec/agent-protocol.md s.6). They answer while the agent is locked."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from keynode.handlers import AgentContext
from polykey.crypto import memory
from polykey.errors import InvalidInputError

if TYPE_CHECKING:  # the agent installs these methods as it is built
    from keynode.agent.core import Agent

log = logging.getLogger("keynode.agent")


def install(agent: Agent) -> None:
    """Register the agent's own methods on ``agent``."""

    async def ping(ctx: AgentContext, params: dict[str, Any]) -> Any:
        return {"pong": True}

    async def status(ctx: AgentContext, params: dict[str, Any]) -> Any:
        return agent.status()

    async def stop(ctx: AgentContext, params: dict[str, Any]) -> Any:
        log.info("stop requested by pid %d", ctx.caller.pid)
        asyncio.get_running_loop().call_soon(agent.stop)
        return {"stopping": True, "pid": os.getpid()}

    async def lock(ctx: AgentContext, params: dict[str, Any]) -> Any:
        await agent.lock(f"requested by pid {ctx.caller.pid}")
        return agent.status()

    async def unlock(ctx: AgentContext, params: dict[str, Any]) -> Any:
        password = params.get("password")
        if not isinstance(password, bytes) or set(params) != {"password"}:
            raise InvalidInputError("agent.unlock takes exactly one bytes parameter, password")
        try:
            await agent.unlock(password)
        finally:
            memory.wipe(password)  # decoded from this request alone: nobody else holds it
        return agent.status()

    for name, fn in (("ping", ping), ("status", status), ("stop", stop), ("lock", lock), ("unlock", unlock)):
        agent.handlers.register(f"agent.{name}", fn, needs_unlock=False)
