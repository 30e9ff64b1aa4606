"""Bounds of the peer transport (STYLE.md rule 12; docs/spec/transport.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass

from keynode.memory import REQUEST_BUDGET
from polykey.wire.session import DEFAULT_MAX_MESSAGE


@dataclass(frozen=True)
class TransportLimits:
    """Every size, count and timeout the transport enforces. Times are in seconds."""

    #: largest message (msgpack bytes) sent or accepted; a bigger one closes the connection
    max_message_size: int = DEFAULT_MAX_MESSAGE
    #: TCP connect to a peer
    connect_timeout: float = 5.0
    #: the whole Noise handshake, from accept/connect to an authenticated peer
    handshake_timeout: float = 5.0
    #: default time a request waits for its answer
    request_timeout: float = 30.0
    #: time a handler may run before the peer is sent a timeout error
    handler_timeout: float = 30.0
    #: a frame or message started but not finished for this long: the peer stalled mid-message
    stall_timeout: float = 10.0
    #: a message must arrive whole within this long of its first frame (a peer trickling a byte
    #: per stall_timeout must not hold its buffer and its share of request_budget for ever)
    message_timeout: float = 60.0
    #: write buffer not drained for this long: the peer stopped reading
    write_timeout: float = 10.0
    #: send a keepalive Ping after this long without sending anything
    keepalive_interval: float = 15.0
    #: nothing at all received for this long: the peer is gone
    idle_timeout: float = 45.0
    #: a duplicate connection (simultaneous dial) closes after this long with no work in flight
    retire_grace: float = 2.0
    #: established connections (inbound + outbound)
    max_connections: int = 256
    #: inbound connections still in their handshake
    max_pending_handshakes: int = 64
    #: our requests awaiting an answer on one connection (more wait for a slot)
    max_inflight_requests: int = 64
    #: the peer's requests being handled at once on one connection (more get a Busy error)
    max_concurrent_handlers: int = 32
    #: bytes of messages being received, over all connections together; a connection that starts
    #: a message that does not fit is sent Close("busy: ...") and closed
    request_budget: int = REQUEST_BUDGET

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"TransportLimits.{name} must be positive")
        if self.idle_timeout <= self.keepalive_interval:
            raise ValueError("idle_timeout must exceed keepalive_interval")
