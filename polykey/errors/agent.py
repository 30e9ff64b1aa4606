"""Agent and automation errors (docs/spec/agent-protocol.md, docs/automation.md)."""

from __future__ import annotations

from polykey.errors._base import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOPERM,
    EX_PROTOCOL,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    PolykeyError,
)


# -- agent (docs/spec/agent-protocol.md, docs/cli.md) ---------------------------


class AgentError(PolykeyError):
    """A problem with the node's agent (the keynode daemon). See the agent log in the node directory."""

    exit_code = EX_SOFTWARE
    default_message = "agent error"


class AgentUnavailableError(AgentError):
    """No agent answers for this node and none could be started.

    Start one with `pk agent start` (it needs the node password), or check the
    agent log (``agent.log`` in the node directory).
    """

    exit_code = EX_UNAVAILABLE
    default_message = "the agent is not running and could not be started"


class AgentLockedError(AgentError):
    """The agent is running but locked (its keys are not in memory). Run `pk agent unlock`."""

    exit_code = EX_TEMPFAIL
    default_message = "the agent is locked: run `pk agent unlock`"


class AgentRunningError(AgentError):
    """An agent already runs for this node directory; only one may. Use it, or `pk agent stop` it first."""

    exit_code = EX_CANTCREAT
    default_message = "an agent is already running for this node"


class AgentProtocolError(AgentError):
    """A malformed, oversized or truncated message on the agent socket. The connection was closed.

    Between `pk` and the agent this is a bug, or a `pk` and an agent of different versions:
    restart the agent with `pk agent stop` and retry.
    """

    exit_code = EX_PROTOCOL
    default_message = "malformed message on the agent socket"


class AgentPermissionError(AgentError):
    """The agent refused this connection: only the user who owns the agent may use it."""

    exit_code = EX_NOPERM
    default_message = "the agent refused the connection (another user owns it)"


class UnknownMethodError(AgentError):
    """The agent does not know this request method (a `pk` newer than the agent?). Restart the agent."""

    exit_code = EX_PROTOCOL
    default_message = "the agent does not know this method"


class EnvNameError(PolykeyError):
    """A secret cannot become an environment variable: its name is invalid or used twice.

    Rename it with ``vault:path=NAME``, or choose a policy with ``--invalid`` / ``--duplicate``.
    """

    exit_code = EX_DATAERR
    default_message = "invalid or duplicate environment variable name"


class SecretReferenceError(PolykeyError):
    """A ``pk://vault/path`` reference in an env file or template is malformed. Fix the reference."""

    exit_code = EX_DATAERR
    default_message = "malformed pk:// reference"


class CommandNotFoundError(PolykeyError):
    """The command to run with the secrets could not be found or executed. Check its name and PATH."""

    exit_code = 127
    default_message = "command not found"
