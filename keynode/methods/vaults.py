"""Vault and secret methods: agent requests -> VaultService calls (docs/spec/agent-protocol.md s.6).

Writes are serialised per vault (and index changes node-wide) with asyncio locks, so
concurrent clients never lose a write, and run in the agent's bounded thread pool so a
commit's fsync never stalls the event loop. Reads run inline on the loop (they take well
under a millisecond) unless a write is in flight: a write holds its vault's thread lock, and
a vault may be named by name or VaultId, so an inline read could wait on it and stall every
client. Per-vault locks exist only while a write uses them (names come from clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from polykey.agent_client.methods import INDEX_METHODS, POOL_METHODS, VAULT_METHODS, WRITE_METHODS
from polykey.errors import InvalidInputError, PolykeyError, VaultFormatError, VaultIntegrityError
from polykey.vaults.service import VaultService
from keynode.agent.core import Agent
from keynode.agent.handlers import Handler, RequestContext
from keynode.memory import release_free_memory

_MAX_REFS = 1024
PROGRESS_INTERVAL = 1.0
_SCALARS = (str, int, bool, type(None))


class VaultLocks:
    """Writes serialised per vault name, index changes node-wide; counts the writes in flight."""

    def __init__(self) -> None:
        self.index = asyncio.Lock()
        self._vaults: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        #: Writes (and index operations) waiting or running: reads leave the loop meanwhile.
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def writing(self, vault: str | None) -> AsyncIterator[None]:
        """Hold the write lock of ``vault`` (None: the vault index)."""
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
                if not self._users[vault]:  # nobody holds or waits for it: forget the name
                    del self._users[vault], self._vaults[vault]


def _required(operation: str, names: tuple[str, ...]) -> frozenset[str]:
    """The parameters of ``VaultService.<operation>`` that have no default."""
    signature = inspect.signature(getattr(VaultService, operation))
    return frozenset(n for n in names if signature.parameters[n].default is inspect.Parameter.empty)


def _check_params(method: str, names: tuple[str, ...], params: dict[str, Any], required: frozenset[str] = frozenset()) -> None:
    unknown = set(params) - set(names)
    if unknown:
        raise InvalidInputError(f"{method}: unknown parameter(s) {', '.join(sorted(unknown))}")
    missing = required - set(params)
    if missing:
        raise InvalidInputError(f"{method}: missing parameter(s) {', '.join(sorted(missing))}")
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


def _then_trim(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, then the heap memory it freed handed back (keynode.memory), in the same worker thread."""

    def run(**params: Any) -> Any:
        try:
            return fn(**params)
        finally:
            release_free_memory()

    return run


def _damaged(vault: str, e: VaultIntegrityError | VaultFormatError) -> PolykeyError:
    """The error of an operation on a vault whose data cannot be read, naming the vault (same type
    and exit code); the other vaults are unaffected (``pk vaults list`` marks this one)."""
    return e.within(f"vault {vault!r} is damaged", "; restore it from a replica or backup")


def install(agent: Agent) -> None:
    """Register every vault method on ``agent``."""
    locks = VaultLocks()

    def make(method: str, operation: str, names: tuple[str, ...]) -> Handler:
        is_write = method in WRITE_METHODS
        is_index = method in INDEX_METHODS
        in_pool = method in POOL_METHODS
        required = _required(operation, names)

        async def handler(ctx: RequestContext, params: dict[str, Any]) -> Any:
            _check_params(method, names, params, required)
            vault = _vault_of(params)
            async with agent.using_keys() as service:
                fn = getattr(service, operation)
                try:
                    if is_index or (is_write and vault is not None):
                        async with locks.writing(None if is_index else vault):
                            result = await _blocking(agent, ctx, _then_trim(fn), params)
                    elif locks.in_flight or in_pool:
                        result = await _blocking(agent, ctx, fn, params)
                    else:
                        result = fn(**params)
                except (VaultIntegrityError, VaultFormatError) as e:
                    if vault is None:
                        raise
                    raise _damaged(vault, e) from None
                except (FileNotFoundError, NotADirectoryError):
                    if vault is None:
                        raise
                    # its repository's files went away under the running agent (deleted, unmounted)
                    raise _damaged(vault, VaultIntegrityError("files of its repository are missing")) from None
            if method == "vaults.delete":
                agent.opened_vaults.discard(result["vaultId"])
            elif vault is not None:
                agent.note_opened(vault)  # only names that worked: clients choose them
            return result

        return handler

    for method, (operation, names) in VAULT_METHODS.items():
        agent.handlers.register(method, make(method, operation, names))

    async def resolve(ctx: RequestContext, params: dict[str, Any]) -> Any:
        """``{"refs": [{"vault", "path"}]}`` -> each ref's secrets (a directory: every secret below it)."""
        refs = params.get("refs")
        if set(params) != {"refs"} or not isinstance(refs, list) or len(refs) > _MAX_REFS:
            raise InvalidInputError(f"secrets.resolve takes refs: a list of at most {_MAX_REFS} {{vault, path}}")
        for ref in refs:
            if not (
                isinstance(ref, dict)
                and set(ref) == {"vault", "path"}
                and isinstance(ref["vault"], str)
                and isinstance(ref["path"], str)
            ):
                raise InvalidInputError("secrets.resolve: each ref is {vault, path}")
        async with agent.using_keys() as service:

            def work(**_: Any) -> list[dict[str, Any]]:
                out = []
                for at, ref in enumerate(refs):
                    vault, path = ref["vault"], ref["path"]
                    try:
                        entries = service.list_secrets(vault, path, recursive=True)
                        values = [
                            {"path": e["path"], "value": service.get_secret(vault, e["path"])}
                            for e in entries
                            if e.get("type") == "secret"
                        ]
                    except PolykeyError as e:
                        e.data = {**e.data, "ref": at}  # which ref failed, for the client's message
                        if isinstance(e, (VaultIntegrityError, VaultFormatError)):
                            raise _damaged(vault, e) from None
                        raise
                    out.append({"vault": vault, "path": path, "secrets": values})
                return out

            result = await _blocking(agent, ctx, work, {}) if locks.in_flight else work()
        for ref in refs:
            agent.note_opened(ref["vault"])
        return result

    agent.handlers.register("secrets.resolve", resolve)
