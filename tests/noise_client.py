"""A raw TCP socket that completed a real Noise XX handshake with a node, driven by the sans-I/O
:class:`~polykey.wire.session.NoiseSession`: what the hostile and fault tests use to send frames that
an honest transport never would."""

from __future__ import annotations

import socket

from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire.frames import encode_frame
from polykey.wire.session import NoiseSession


def handshaken(keypair: KeyPair, node_id: NodeId, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> tuple[socket.socket, NoiseSession]:
    """Connect to ``host:port`` as ``keypair``, expecting ``node_id``, and finish the handshake."""
    sock = socket.create_connection((host, port), timeout=timeout)
    s = NoiseSession(keypair, initiator=True, expected_peer=node_id)
    sock.sendall(s.data_to_send())
    while not s.established:
        data = sock.recv(65536)
        assert data, "the node closed the connection during the handshake"
        s.receive_data(data)
    sock.sendall(s.data_to_send())
    return sock, s


def raw_frame(s: NoiseSession, plaintext: bytes) -> bytes:
    """``plaintext`` sealed as the session's next frame, however malformed it is as a message."""
    assert s._send is not None
    return encode_frame(s._send.encrypt_with_ad(b"", plaintext))
