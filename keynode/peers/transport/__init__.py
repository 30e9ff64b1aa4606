"""The keynode peer transport: Noise XX over TCP, msgpack request/response (docs/spec/transport.md).

Sans-I/O parts live in :mod:`polykey.wire`; this package is the asyncio shell.
"""

from keynode.peers.transport.limits import TransportLimits
from keynode.peers.transport.service import Channel, PeerHandler, Transport

__all__ = ["Channel", "PeerHandler", "Transport", "TransportLimits"]
