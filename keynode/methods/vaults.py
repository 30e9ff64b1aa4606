"""Vault and secret methods: agent requests -> VaultService calls (docs/spec/agent-protocol.md s.6).

:data:`METHODS` is the one table of them: the VaultService call behind each method, its
parameters, and what it locks. Writes to a vault are serialised per VaultId (the name or VaultId
the client sent is resolved through the vault index first, so two names of one vault share one
lock), index changes node-wide, with asyncio locks, so concurrent clients never lose a write;
they run in the agent's bounded thread pool so a commit's fsync never stalls the event loop.
Reads of a vault whose head is verified run inline on the loop (they take well under a
millisecond). A read that must first verify new commits (docs/spec/vault-format.md section 10.3:
a vault not yet adopted costs about 2 s at 10,000 commits) runs in the pool, as does every read
while anything runs there: a pooled operation holds its vault's thread lock, so an inline read
could wait on it and stall every client. Per-vault locks exist only while a write uses them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polykey.agent_client.protocol import encode_listing
from polykey.errors import InvalidInputError, PolykeyError, VaultFormatError, VaultIntegrityError
from polykey.vaults.service import VaultService
from keynode.agent.core import Agent
from keynode.agent.vaultlocks import VaultLocks
from keynode.handlers import AgentContext, Handler, LocalCaller
from keynode.memory import release_free_memory


@dataclass(frozen=True)
class VaultMethod:
    """One agent method: the VaultService call behind it, its parameters in order, and its locks."""

    call: Callable[..., Any]
    params: tuple[str, ...]
    #: Changes the vault named by ``names``: serialised per VaultId.
    writes: bool = False
    #: Touches the vault index (names) rather than one vault: serialised node-wide.
    index: bool = False
    #: Changes no vault but may take long (validates many items): always in the worker pool.
    pool: bool = False
    #: The parameter naming the vault (by name or VaultId), for locks and error messages.
    names: str | None = "vault"
    #: Takes the optional boolean ``compact`` (not the service's): the rows answered as
    #: :func:`polykey.agent_client.protocol.encode_listing` (spec s.6, ``secrets.list``).
    compact: bool = False


S = VaultService
METHODS: dict[str, VaultMethod] = {
    "vaults.create": VaultMethod(S.create_vault, ("name",), index=True, names="name"),
    "vaults.list": VaultMethod(S.list_vaults, (), index=True, names=None),
    "vaults.rename": VaultMethod(S.rename_vault, ("old", "new"), index=True, names="old"),
    "vaults.delete": VaultMethod(S.delete_vault, ("name",), index=True, names="name"),
    "vaults.log": VaultMethod(S.log, ("vault", "limit")),
    "vaults.version": VaultMethod(S.version, ("vault", "commit")),
    "vaults.members": VaultMethod(S.members, ("vault",)),
    "vaults.verify": VaultMethod(S.verify, ("vault",), pool=True),  # the whole history
    "vaults.reset": VaultMethod(S.reset_vault, ("vault", "to"), writes=True),
    "secrets.set": VaultMethod(S.set_secret, ("vault", "path", "value"), writes=True),
    "secrets.get": VaultMethod(S.get_secret, ("vault", "path", "commit")),
    "secrets.list": VaultMethod(S.list_secrets, ("vault", "path", "recursive", "commit"), compact=True),
    "secrets.remove": VaultMethod(S.remove, ("vault", "path", "recursive"), writes=True),
    "secrets.move": VaultMethod(S.move, ("vault", "src", "dst"), writes=True),
    "secrets.copy": VaultMethod(S.copy, ("vault", "src", "dst"), writes=True),
    "secrets.mkdir": VaultMethod(S.mkdir, ("vault", "path", "parents"), writes=True),
    "secrets.stat": VaultMethod(S.stat, ("vault", "path")),
    "secrets.history": VaultMethod(S.history, ("vault", "path", "limit")),
    "secrets.revert": VaultMethod(S.revert, ("vault", "path", "commit"), writes=True),
    "secrets.generate": VaultMethod(
        S.generate, ("vault", "path", "length", "charset", "reveal", "replace"), writes=True
    ),
    "secrets.import": VaultMethod(S.import_secrets, ("vault", "items", "stage"), writes=True),
    "secrets.import_stage": VaultMethod(S.stage_import, ("items", "token"), pool=True, names=None),
}

_MAX_REFS = 1024
PROGRESS_INTERVAL = 1.0
_SCALARS = (str, int, bool, type(None))


def _required(call: Callable[..., Any], names: tuple[str, ...]) -> frozenset[str]:
    """The parameters of ``call`` that have no default."""
    signature = inspect.signature(call)
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


async def _blocking(agent: Agent, ctx: AgentContext, fn: Callable[..., Any], params: dict[str, Any]) -> Any:
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


async def _inline_or_pooled(
    agent: Agent, ctx: AgentContext, locks: VaultLocks, fn: Callable[..., Any], *args: Any, pool: bool = False,
    **params: Any,
) -> Any:
    """``fn(*args, **params)``: inline on the loop, or in the worker pool while anything runs there
    (it may hold a lock ``fn`` needs) or when ``pool`` (a long operation)."""
    if locks.in_flight or pool:
        with locks.pooled():
            return await _blocking(agent, ctx, lambda **kw: fn(*args, **kw), params)
    return fn(*args, **params)


def _verifies(service: VaultService, vaults: list[str]) -> bool:
    """Whether a read of these vaults would first verify new commits (or adopt a vault): then it
    leaves the loop. Only asked while nothing runs in the pool, so nothing else uses the vaults."""
    return not all(service.head_verified(v) for v in vaults)


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
    locks = agent.vault_locks

    def make(method: str, spec: VaultMethod) -> Handler[LocalCaller]:
        required = _required(spec.call, spec.params)
        accepted = spec.params + ("compact",) if spec.compact else spec.params

        async def handler(ctx: AgentContext, params: dict[str, Any]) -> Any:
            _check_params(method, accepted, params, required)
            compact = params.pop("compact", False)
            if type(compact) is not bool:
                raise InvalidInputError(f"{method}: compact must be a boolean")
            named = params.get(spec.names) if spec.names is not None else None
            vault = named if isinstance(named, str) else None
            written: str | None = None  # the VaultId a write changed
            async with agent.using_keys() as service:
                fn = getattr(service, spec.call.__name__)  # the instance's own (a test may wrap it)
                try:
                    if spec.index or (spec.writes and vault is not None):
                        # the lock policy: by VaultId, whatever name the client used
                        key = None if spec.index else await _inline_or_pooled(agent, ctx, locks, service.vault_id, vault)
                        async with locks.writing(key):
                            result = await _blocking(agent, ctx, _then_trim(fn), params)
                        written = key if spec.writes else None
                    else:
                        pool = spec.pool or (vault is not None and not locks.in_flight and _verifies(service, [vault]))
                        result = await _inline_or_pooled(agent, ctx, locks, fn, pool=pool, **params)
                except (VaultIntegrityError, VaultFormatError) as e:
                    if vault is None:
                        raise
                    raise _damaged(vault, e) from None
                except (FileNotFoundError, NotADirectoryError):
                    if vault is None:
                        raise
                    # its repository's files went away under the running agent (deleted, unmounted)
                    raise _damaged(vault, VaultIntegrityError("files of its repository are missing")) from None
            if written is not None:
                agent.vault_written(written)  # automatic sync announces the new head
            if method == "vaults.delete":
                agent.opened_vaults.discard(result["vaultId"])
            elif vault is not None:
                agent.note_opened(vault)  # only names that worked: clients choose them
            return encode_listing(result) if compact else result

        return handler

    for method, spec in METHODS.items():
        agent.handlers.register(method, make(method, spec))

    async def resolve(ctx: AgentContext, params: dict[str, Any]) -> Any:
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

            pool = not locks.in_flight and _verifies(service, [ref["vault"] for ref in refs])
            result = await _inline_or_pooled(agent, ctx, locks, work, pool=pool)
        for ref in refs:
            agent.note_opened(ref["vault"])
        return result

    agent.handlers.register("secrets.resolve", resolve)
