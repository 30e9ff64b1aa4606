"""``VaultService``'s methods, called through the agent (the CLI's vault backend).

``RemoteVaultService(session).set_secret("app", "db/password", b"x")`` sends the
``secrets.set`` request (polykey.agent_client.methods) and returns the agent's answer, or
raises the agent's error rebuilt into the same PolykeyError subclass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polykey.agent_client.methods import BY_OPERATION, VAULT_METHODS
from polykey.agent_client.session import Session


class RemoteVaultService:
    """Duck-types :class:`polykey.vaults.service.VaultService` over an agent :class:`Session`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        method = BY_OPERATION.get(operation)
        if method is None:
            raise AttributeError(operation)
        names = VAULT_METHODS[method][1]

        def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(names):
                raise TypeError(f"{operation}() takes at most {len(names)} arguments")
            params = dict(zip(names, args))
            for key, value in kwargs.items():
                if key in params:
                    raise TypeError(f"{operation}() got multiple values for {key!r}")
                params[key] = value
            return self._session.call(method, params)

        return call

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RemoteVaultService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
