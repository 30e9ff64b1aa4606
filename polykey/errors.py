"""The one error root of Polykey and its domain subclasses.

Every error a user can see is a :class:`PolykeyError`. Each subclass carries an
``exit_code`` (sysexits-style, see ``docs/cli.md``) and a docstring that says
what the user can do about it. The CLI maps errors to exit codes and one-line
messages in exactly one place (``polykey.cli.errors``). Errors cross the agent
socket as ``{type, message, data}`` and are rebuilt with :func:`from_wire`.

Messages never contain a secret value, a password or key material.
"""

from __future__ import annotations

from typing import Any, ClassVar

# sysexits.h values, as the original Polykey CLI uses them.
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_NOHOST = 68
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

_REGISTRY: dict[str, type["PolykeyError"]] = {}


class PolykeyError(Exception):
    """Something went wrong in Polykey. The message says what."""

    exit_code: ClassVar[int] = EX_SOFTWARE
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message if message is not None else self.default_message
        self.data: dict[str, Any] = data
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in _REGISTRY:
            raise TypeError(f"duplicate error class name {cls.__name__}")
        _REGISTRY[cls.__name__] = cls

    def to_wire(self) -> dict[str, Any]:
        """The ``{type, message, data}`` form that crosses the agent socket."""
        return {"type": type(self).__name__, "message": self.message, "data": self.data}


_REGISTRY[PolykeyError.__name__] = PolykeyError


def from_wire(obj: object) -> PolykeyError:
    """Rebuild an error sent as ``{type, message, data}``; unknown types become PolykeyError."""
    if not isinstance(obj, dict):
        return PolykeyError("malformed error from agent")
    name = obj.get("type")
    message = obj.get("message")
    data = obj.get("data")
    cls = _REGISTRY.get(name, PolykeyError) if isinstance(name, str) else PolykeyError
    err = cls(message if isinstance(message, str) else None)
    if isinstance(data, dict):
        err.data = dict(data)
    return err


def error_classes() -> list[type[PolykeyError]]:
    """Every registered error class (for documentation tests)."""
    return list(_REGISTRY.values())


# -- usage ---------------------------------------------------------------------


class InvalidInputError(PolykeyError):
    """An argument or input is malformed (a NodeId, a path, a number). Fix the input and retry."""

    exit_code = EX_USAGE
    default_message = "invalid input"


class PasswordRequiredError(PolykeyError):
    """A password is needed but none was given and there is no terminal to ask on.

    Give ``--password-file FILE`` or set ``PK_PASSWORD``.
    """

    exit_code = EX_USAGE
    default_message = "a password is required: use --password-file or PK_PASSWORD (no terminal to prompt on)"


# -- crypto --------------------------------------------------------------------


class CryptoError(PolykeyError):
    """A cryptographic operation failed."""

    exit_code = EX_DATAERR
    default_message = "cryptographic operation failed"


class AuthenticationError(CryptoError):
    """Decryption or signature verification failed: the data was tampered with or the key is wrong.

    Every authentication failure is this one error; it never says which byte was wrong.
    """

    exit_code = EX_DATAERR
    default_message = "authentication failed: data was tampered with or the key is wrong"


class NotForThisKeyError(CryptoError):
    """The data is sealed for another key; try another one."""

    exit_code = EX_NOPERM
    default_message = "not sealed for this key"


# -- keys and node -------------------------------------------------------------


class KeysError(PolykeyError):
    """A problem with the node's keys."""

    exit_code = EX_SOFTWARE
    default_message = "key error"


class WrongPasswordError(KeysError):
    """The password does not unlock the node's key. Nothing was changed; try again."""

    exit_code = EX_NOPERM
    default_message = "wrong password"


class KeyFileError(KeysError):
    """A key file is truncated, tampered with or of an unknown version. Restore it or run `pk keys recover`."""

    exit_code = EX_DATAERR
    default_message = "key file is corrupt"


class RecoveryCodeError(KeysError):
    """The recovery code is not 24 valid BIP39 words with a correct checksum. Check the words."""

    exit_code = EX_DATAERR
    default_message = "invalid recovery code"


class NodeExistsError(KeysError):
    """A node already exists at this path. Use another --node-path, or --fresh to replace it."""

    exit_code = EX_CANTCREAT
    default_message = "a node already exists here (use --fresh to replace it)"


class NodeNotFoundError(KeysError):
    """There is no node at this path. Run `pk bootstrap` or give the right --node-path."""

    exit_code = EX_NOINPUT
    default_message = "no node here: run `pk bootstrap` first"


# -- vaults and secrets (docs/spec/vault-format.md, docs/cli.md) -------------------

# Codes of their own, so a script can tell "no such vault" from "no such secret".
EX_VAULT_NOT_FOUND = 80
EX_SECRET_NOT_FOUND = 81
EX_PATH_KIND = 82
EX_COMMIT_NOT_FOUND = 83


class VaultError(PolykeyError):
    """A problem with a vault or a secret."""

    exit_code = EX_SOFTWARE
    default_message = "vault error"


class VaultNotFoundError(VaultError):
    """No vault by that name (or VaultId) on this node. `pk vaults list` shows the vaults."""

    exit_code = EX_VAULT_NOT_FOUND
    default_message = "no such vault"


class VaultExistsError(VaultError):
    """A vault with that name already exists on this node. Pick another name or rename the old one."""

    exit_code = EX_CANTCREAT
    default_message = "a vault with that name already exists"


class SecretNotFoundError(VaultError):
    """No secret (or directory) at that path in the vault. `pk secrets ls VAULT:DIR` shows what is there."""

    exit_code = EX_SECRET_NOT_FOUND
    default_message = "no such secret"


class SecretExistsError(VaultError):
    """A directory already exists at that path (`mkdir` of an existing directory). Choose another path."""

    exit_code = EX_CANTCREAT
    default_message = "a secret or directory already exists at that path"


class SecretIsDirectoryError(VaultError):
    """The path is a directory where a secret was expected (or a directory would be replaced by a secret).

    Use a path to a secret, or `-r` where the command offers it.
    """

    exit_code = EX_PATH_KIND
    default_message = "is a directory"


class SecretNotDirectoryError(VaultError):
    """A path component is a secret where a directory was expected (or a secret would be replaced by a directory)."""

    exit_code = EX_PATH_KIND
    default_message = "not a directory"


class CommitNotFoundError(VaultError):
    """No commit by that id in the vault's history. `pk vaults log VAULT` lists the commits."""

    exit_code = EX_COMMIT_NOT_FOUND
    default_message = "no such commit in this vault"


class VaultIntegrityError(VaultError):
    """The vault's data failed an integrity check: an object, a secret or the vault metadata was
    tampered with or corrupted. Nothing was returned from it. Run `pk vaults verify VAULT` and restore
    the vault from a replica or backup.
    """

    exit_code = EX_DATAERR
    default_message = "vault integrity check failed: data was tampered with or corrupted"


class VaultVerificationError(VaultError):
    """`pk vaults verify` found a commit that is not correctly signed by a member allowed to make it.

    The message names the first bad commit. Do not trust history from that commit on; restore from a
    good replica.
    """

    exit_code = EX_DATAERR
    default_message = "vault history failed verification"


class VaultPermissionError(VaultError):
    """This node's role in the vault does not allow that change (readers cannot write; only owners change
    membership). Ask an owner.
    """

    exit_code = EX_NOPERM
    default_message = "this node's role in the vault does not allow that"


class VaultAccessError(VaultError):
    """This node is not a member of the vault (no wrapped key for it), so it cannot read it."""

    exit_code = EX_NOPERM
    default_message = "this node is not a member of the vault"


class VaultFormatError(VaultError):
    """The vault is of an unknown format version or its metadata is malformed. Upgrade Polykey or restore it."""

    exit_code = EX_DATAERR
    default_message = "unsupported or malformed vault format"


class VaultIndexError(VaultError):
    """The node's local vault name index is corrupt or was tampered with. Restore the node directory."""

    exit_code = EX_DATAERR
    default_message = "the vault name index is corrupt"


# -- transport (keynode peer connections, docs/spec/transport.md) ---------------


class TransportError(PolykeyError):
    """A connection to another keynode failed or was closed. Retry; check the peer is running."""

    exit_code = EX_UNAVAILABLE
    default_message = "peer connection failed"


class HandshakeError(TransportError):
    """The encrypted handshake with the peer failed (malformed, tampered, timed out or out of turn).

    The peer may run an incompatible version, or something between you rewrites traffic.
    """

    exit_code = EX_PROTOCOL
    default_message = "handshake with the peer failed"


class PeerIdentityMismatchError(HandshakeError):
    """The peer at that address proved a different NodeId than the one dialled.

    The address is stale or belongs to someone else. Find the node again (`pk nodes find`).
    """

    exit_code = EX_NOHOST
    default_message = "the peer at that address is not the expected node"


class PeerUnreachableError(TransportError):
    """No connection could be made to the peer (refused, unreachable or timed out). Check the
    address and that the peer's agent is running."""

    exit_code = EX_UNAVAILABLE
    default_message = "peer unreachable"


class ProtocolViolationError(TransportError):
    """The peer sent something the protocol forbids (bad frame, unknown message, oversized,
    replayed or reordered data). The connection was closed."""

    exit_code = EX_PROTOCOL
    default_message = "peer violated the protocol"


class RequestTimeoutError(TransportError):
    """The peer did not answer in time. It may be overloaded or stalled; retry later."""

    exit_code = EX_TEMPFAIL
    default_message = "the peer did not answer in time"


class ConnectionClosedError(TransportError):
    """The connection to the peer closed before the request finished. Retry."""

    exit_code = EX_TEMPFAIL
    default_message = "connection to the peer closed"


class RemoteError(TransportError):
    """The peer answered a request with an error (``data`` holds its ``type`` and ``message``)."""

    exit_code = EX_PROTOCOL
    default_message = "the peer reported an error"


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


# -- discovery (docs/spec/discovery.md) -----------------------------------------
# A bad record signature is AuthenticationError (STYLE.md rule 8), not a class here.


class DiscoveryError(PolykeyError):
    """A problem with node discovery (the DHT)."""

    exit_code = EX_UNAVAILABLE
    default_message = "discovery error"


class InvalidSeedError(DiscoveryError):
    """A seed node is not written NODEID@HOST:PORT (IPv6 hosts in brackets). Fix --seed or PK_SEED_NODES."""

    exit_code = EX_USAGE
    default_message = "invalid seed: expected NODEID@HOST:PORT"


class RecordFormatError(DiscoveryError):
    """A node record is malformed, oversized, of an unknown version or not canonical. It is ignored."""

    exit_code = EX_DATAERR
    default_message = "malformed node record"


class RecordKeyMismatchError(DiscoveryError):
    """A node record was offered under a DHT key that is not its node's. It is ignored."""

    exit_code = EX_DATAERR
    default_message = "node record does not belong to this DHT key"


class RecordExpiredError(DiscoveryError):
    """A node record has expired (or claims too long a lifetime). Check the clock; the node republishes."""

    exit_code = EX_DATAERR
    default_message = "node record expired"


class StaleRecordError(DiscoveryError):
    """A node record is older (lower seq) than the one already held. It is ignored."""

    exit_code = EX_DATAERR
    default_message = "node record is older than the one held"


class DiscoveryBindError(DiscoveryError):
    """The DHT could not bind its UDP port. Choose another --host/--port or free the port."""

    exit_code = EX_UNAVAILABLE
    default_message = "could not bind the DHT UDP socket"


class NodeGraphFileError(DiscoveryError):
    """The saved node graph file is corrupt. Move it away; it is rebuilt from seeds (re-add manual nodes)."""

    exit_code = EX_DATAERR
    default_message = "the node graph file is corrupt"


class DiscoveryNotRunningError(DiscoveryError):
    """Discovery was used outside its `async with` block (not started, or already stopped)."""

    exit_code = EX_SOFTWARE
    default_message = "discovery is not running"


class DatagramError(DiscoveryError):
    """A DHT datagram is malformed, oversized or not allowed. It is dropped; the node keeps serving."""

    exit_code = EX_PROTOCOL
    default_message = "malformed DHT datagram"


class MessageTooLargeError(TransportError):
    """A message to send is larger than the transport's message cap. Send less per request."""

    exit_code = EX_DATAERR
    default_message = "message too large for the transport"


class UnknownPeerMethodError(TransportError):
    """The peer does not serve that method (it may run another version). Nothing was done there."""

    exit_code = EX_PROTOCOL
    default_message = "the peer does not serve that method"


# -- peer networking in the agent (pk nodes, keynode/network.py) ------------------


class PeerNotFoundError(DiscoveryError):
    """No address is known for that NodeId: the DHT has no valid record and the node graph no entry.

    Check the NodeId, that the node is running with a seed in common, or add it with `pk nodes add`.
    """

    exit_code = 84
    default_message = "node not found"
