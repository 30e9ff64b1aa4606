"""Peer transport, discovery and `pk nodes` errors (docs/spec/transport.md, discovery.md)."""

from __future__ import annotations

from polykey.errors._base import (
    EX_DATAERR,
    EX_NOHOST,
    EX_PROTOCOL,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    PolykeyError,
)


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


class PeerBusyError(TransportError):
    """The peer is serving as many of this connection's requests as it allows; it did not run this
    one. Retry shortly."""

    exit_code = EX_TEMPFAIL
    default_message = "the peer is busy (too many concurrent requests); retry"


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


# -- peer networking in the agent (pk nodes, keynode/peers/network.py) ------------------


class PeerNotFoundError(DiscoveryError):
    """No address is known for that NodeId: the DHT has no valid record and the node graph no entry.

    Check the NodeId, that the node is running with a seed in common, or add it with `pk nodes add`.
    """

    exit_code = 84
    default_message = "node not found"
