"""The agent's vault and secret methods as typed calls (docs/spec/agent-protocol.md s.6).

``VaultClient(session).set_secret("app", "db/password", b"x")`` sends ``secrets.set`` and
returns the agent's answer, or raises the agent's error rebuilt into the same PolykeyError
subclass. The methods and parameters are :class:`polykey.vaults.service.VaultService`'s, which
the agent calls (keynode.methods.vaults); an optional parameter left at None is not sent.
"""

from __future__ import annotations

from typing import Any

from polykey.agent_client.client import ProgressCallback
from polykey.agent_client.protocol import call_listing, listing_rows
from polykey.agent_client.session import AgentSession

JSON = dict[str, Any]


class VaultClient:
    """The vault API of one node, through its agent (started on demand by the session)."""

    def __init__(self, session: AgentSession) -> None:
        self._session = session

    def _call(self, method: str, progress: ProgressCallback | None = None, **params: Any) -> Any:
        return self._session.call(method, {k: v for k, v in params.items() if v is not None}, progress)

    # -- vaults ------------------------------------------------------------------------

    def create_vault(self, name: str) -> JSON:
        result: JSON = self._call("vaults.create", name=name)
        return result

    def list_vaults(self) -> list[JSON]:
        result: list[JSON] = self._call("vaults.list")
        return result

    def rename_vault(self, old: str, new: str) -> JSON:
        result: JSON = self._call("vaults.rename", old=old, new=new)
        return result

    def delete_vault(self, name: str) -> JSON:
        result: JSON = self._call("vaults.delete", name=name)
        return result

    def log(self, vault: str, limit: int | None = None) -> list[JSON]:
        result: list[JSON] = self._call("vaults.log", vault=vault, limit=limit)
        return result

    def version(self, vault: str, commit: str) -> JSON:
        result: JSON = self._call("vaults.version", vault=vault, commit=commit)
        return result

    def members(self, vault: str) -> list[JSON]:
        result: list[JSON] = self._call("vaults.members", vault=vault)
        return result

    def verify(self, vault: str) -> JSON:
        result: JSON = self._call("vaults.verify", vault=vault)
        return result

    def reset_vault(self, vault: str, to: str) -> JSON:
        result: JSON = self._call("vaults.reset", vault=vault, to=to)
        return result

    # -- secrets -----------------------------------------------------------------------

    def set_secret(self, vault: str, path: str, value: bytes) -> JSON:
        result: JSON = self._call("secrets.set", vault=vault, path=path, value=value)
        return result

    def get_secret(self, vault: str, path: str, commit: str | None = None) -> bytes:
        result: bytes = self._call("secrets.get", vault=vault, path=path, commit=commit)
        return result

    def list_secrets(self, vault: str, path: str = "", recursive: bool = False, commit: str | None = None) -> list[JSON]:
        params = {"vault": vault, "path": path, "recursive": recursive, "commit": commit}
        return listing_rows(call_listing(lambda method, p: self._call(method, **p), params))

    def remove(self, vault: str, path: str, recursive: bool = False) -> JSON:
        result: JSON = self._call("secrets.remove", vault=vault, path=path, recursive=recursive)
        return result

    def move(self, vault: str, src: str, dst: str) -> JSON:
        result: JSON = self._call("secrets.move", vault=vault, src=src, dst=dst)
        return result

    def copy(self, vault: str, src: str, dst: str) -> JSON:
        result: JSON = self._call("secrets.copy", vault=vault, src=src, dst=dst)
        return result

    def mkdir(self, vault: str, path: str, parents: bool = True) -> JSON:
        result: JSON = self._call("secrets.mkdir", vault=vault, path=path, parents=parents)
        return result

    def stat(self, vault: str, path: str) -> JSON:
        result: JSON = self._call("secrets.stat", vault=vault, path=path)
        return result

    def history(self, vault: str, path: str, limit: int | None = None) -> list[JSON]:
        result: list[JSON] = self._call("secrets.history", vault=vault, path=path, limit=limit)
        return result

    def revert(self, vault: str, path: str, commit: str) -> JSON:
        result: JSON = self._call("secrets.revert", vault=vault, path=path, commit=commit)
        return result

    def generate(
        self,
        vault: str,
        path: str,
        length: int | None = None,
        charset: str | None = None,
        reveal: bool = False,
        replace: bool = True,
    ) -> JSON:
        """A random secret; ``length`` and ``charset`` default to the agent's (32, alnum)."""
        result: JSON = self._call(
            "secrets.generate", vault=vault, path=path, length=length, charset=charset, reveal=reveal, replace=replace
        )
        return result

    def stage_import(
        self, items: dict[str, bytes], token: str | None = None, progress: ProgressCallback | None = None
    ) -> JSON:
        """Validate and hold ``items`` for a later :meth:`import_secrets` (a large import, in parts)."""
        result: JSON = self._call("secrets.import_stage", progress, items=items, token=token)
        return result

    def import_secrets(
        self, vault: str, items: dict[str, bytes], stage: str | None = None, progress: ProgressCallback | None = None
    ) -> JSON:
        """Write ``items`` (and the parts staged under ``stage``) to ``vault`` in one commit."""
        result: JSON = self._call("secrets.import", progress, vault=vault, items=items, stage=stage)
        return result

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
