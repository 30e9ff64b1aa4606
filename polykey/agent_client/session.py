"""A client session that starts the agent on demand and unlocks it when locked, like gpg-agent.

Used by every ``pk`` command that needs the agent (the click commands and the fast path).
Standard library only, and on the fast path's happy path nothing beyond the client.
"""

from __future__ import annotations

import posix
import time

from polykey.agent_client import client as agent_client
from polykey.agent_client import is_error, paths

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike
    from typing import Any

    from polykey.agent_client.passwords import PasswordSource

#: Waits (seconds, each stretched by up to half at random) before resending a request the agent
#: answered busy without reading it (docs/spec/agent-protocol.md section 3 "Limits"): about 4.5 s
#: in all, then the busy error is the answer.
BUSY_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0)


class AgentSession:
    """Calls into the agent of one node, starting or unlocking it when needed.

    ``autostart``: start the agent if none runs (asking for the password on a terminal, or from
    ``--password-file`` / ``PK_PASSWORD``; PasswordRequiredError at once without any of them).
    """

    def __init__(
        self,
        node_path: str | PathLike[str],
        password: PasswordSource | None = None,
        *,
        autostart: bool = True,
        daemon_args: Sequence[str] = (),
        on_progress: agent_client.ProgressCallback | None = None,
    ) -> None:
        self.node_path = paths.fspath(node_path)
        self._password = password
        self.autostart = autostart
        self.daemon_args = list(daemon_args)
        self._client: agent_client.AgentClient | None = None
        self.on_progress = on_progress

    @property
    def password(self) -> PasswordSource:
        if self._password is None:
            from polykey.agent_client.passwords import PasswordSource

            self._password = PasswordSource()
        return self._password

    def client(self) -> agent_client.AgentClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> agent_client.AgentClient:
        try:
            return agent_client.connect(self.node_path)
        except Exception as e:
            if not is_error(e, "AgentUnavailableError") or not self.autostart:
                raise
        from polykey.agent_client.spawn import ensure_started, require_node  # only when starting: keep pk fast

        require_node(self.node_path)
        ensure_started(self.node_path, self.password.get(), self.daemon_args)
        return agent_client.connect(self.node_path)

    def call(self, method: str, params: dict[str, Any] | None = None, progress: agent_client.ProgressCallback | None = None) -> Any:
        progress = progress or self.on_progress
        delays = iter(BUSY_RETRY_DELAYS)
        resent_idle = False
        while True:
            try:
                return self._call(method, params, progress)
            except Exception as e:
                if not is_error(e, "AgentUnavailableError"):
                    raise
                self.close()  # the connection is gone: a later call connects (or starts the agent) anew
                # Both replies mean the agent never read the request (spec section 3 "Limits"),
                # so resending it is safe: at once after an idle connection was closed to make
                # room, after a bounded backoff while the agent is busy.
                data = e.data  # type: ignore[attr-defined]
                if data.get("idleClosed") is True and not resent_idle:
                    resent_idle = True
                    continue
                delay = next(delays, None) if data.get("busy") is True else None
                if delay is None:
                    raise
            time.sleep(delay * (1 + posix.urandom(1)[0] / 510))

    def _call(self, method: str, params: dict[str, Any] | None, progress: agent_client.ProgressCallback | None) -> Any:
        c = self.client()
        try:
            return c.call(method, params, progress)
        except Exception as e:
            if not is_error(e, "AgentLockedError") or not self.password.available():
                raise
            c.call("agent.unlock", {"password": self.password.get()})
            return c.call(method, params, progress)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> AgentSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
