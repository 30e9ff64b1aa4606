"""Vault and secret methods: agent requests -> VaultService calls (docs/spec/agent-protocol.md s.6).

Writes are serialised per vault (and index changes node-wide) with asyncio locks, so
concurrent clients never lose a write, and run in the agent's bounded thread pool so a
commit's fsync never stalls the event loop. Reads run inline on the loop (they take well
under a millisecond) unless a write to the same vault is in flight.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from polykey.agent.methods import INDEX_METHODS, VAULT_METHODS, WRITE_METHODS
from polykey.errors import InvalidInputError
from keynode.agent import Agent
from keynode.handlers import Handler, RequestContext

_MAX_REFS = 1024
PROGRESS_INTERVAL = 1.0
_SCALARS = (str, int, bool, type(None))


class VaultLocks:
    """One asyncio lock per vault name for writes, plus one for the vault index."""

    def __init__(self) -> None:
        self.index = asyncio.Lock()
        self._vaults: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def for_vault(self, name: str) -> asyncio.Lock:
        return self._vaults[name]


def _check_params(method: str, names: tuple[str, ...], params: dict[str, Any]) -> None:
    unknown = set(params) - set(names)
    if unknown:
        raise InvalidInputError(f"{method}: unknown parameter(s) {', '.join(sorted(unknown))}")
    for key, value in params.items():
        if key == "value":
            if not isinstance(value, bytes):
                raise InvalidInputError(f"{method}: value must be bytes")
        elif key == "items":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, bytes) for k, v in value.items()
            ):
                raise InvalidInputError(f"{method}: items must map paths to bytes")
        elif not isinstance(value, _SCALARS):
            raise InvalidInputError(f"{method}: {key} must be a string, number, boolean or null")


def _vault_of(params: dict[str, Any]) -> str | None:
    for key in ("vault", "name", "old"):
        value = params.get(key)
        if isinstance(value, str):
            return value
    return None


async def _blocking(agent: Agent, ctx: RequestContext, fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Run ``fn`` in the worker pool, sending ``{"elapsed": s}`` progress about once a second."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    future = agent.submit_blocking(fn, **params)  # a Future of the pool, not a free-running task
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=PROGRESS_INTERVAL)
            if done:
                return future.result()
            await ctx.progress({"elapsed": round(loop.time() - started, 1)})
    finally:
        if not future.done():
            future.cancel()


def install(agent: Agent) -> None:
    """Register every vault method on ``agent``."""
    locks = VaultLocks()

    def make(method: str, operation: str, names: tuple[str, ...]) -> Handler:
        is_write = method in WRITE_METHODS
        is_index = method in INDEX_METHODS

        async def handler(ctx: RequestContext, params: dict[str, Any]) -> Any:
            _check_params(method, names, params)
            vault = _vault_of(params)
            async with agent.using_keys() as service:
                fn = getattr(service, operation)
                if vault is not None:
                    agent.opened_vaults.add(vault)
                if is_index:
                    async with locks.index:
                        return await _blocking(agent, ctx, fn, params)
                if is_write and vault is not None:
                    async with locks.for_vault(vault):
                        return await _blocking(agent, ctx, fn, params)
                if vault is not None and locks.for_vault(vault).locked():
                    return await _blocking(agent, ctx, fn, params)
                return fn(**params)

        return handler

    for method, (operation, names) in VAULT_METHODS.items():
        agent.handlers.register(method, make(method, operation, names))

    async def resolve(ctx: RequestContext, params: dict[str, Any]) -> Any:
        """``{"refs": [{"vault", "path"}]}`` -> each ref's secrets (a directory: every secret below it)."""
        refs = params.get("refs")
        if set(params) != {"refs"} or not isinstance(refs, list) or len(refs) > _MAX_REFS:
            raise InvalidInputError(f"secrets.resolve takes refs: a list of at most {_MAX_REFS} {{vault, path}}")
        out = []
        async with agent.using_keys() as service:
            for ref in refs:
                if not (
                    isinstance(ref, dict)
                    and set(ref) == {"vault", "path"}
                    and isinstance(ref["vault"], str)
                    and isinstance(ref["path"], str)
                ):
                    raise InvalidInputError("secrets.resolve: each ref is {vault, path}")
                vault, path = ref["vault"], ref["path"]
                agent.opened_vaults.add(vault)
                entries = service.list_secrets(vault, path, recursive=True)
                values = [
                    {"path": e["path"], "value": service.get_secret(vault, e["path"])}
                    for e in entries
                    if e.get("type") == "secret"
                ]
                out.append({"vault": vault, "path": path, "secrets": values})
        return out

    agent.handlers.register("secrets.resolve", resolve)
