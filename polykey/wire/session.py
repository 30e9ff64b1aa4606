"""One end of a peer connection as a sans-I/O state machine (docs/spec/transport.md).

``NoiseSession`` turns received bytes into events and messages to send into bytes:

- Handshake (section 3-4): Noise ``XX`` (:data:`PROTOCOL_NAME`, prologue :data:`PROLOGUE`),
  each side proving its NodeId with an Ed25519 signature over the handshake hash
  inside its encrypted payload (:func:`identity_statement`).
- Transport (section 5): each message is ``u32 length || msgpack``, cut into Noise
  transport messages of at most 65519 plaintext bytes, each in a ``u16``-length frame.

It imports no asyncio or socket and keeps no clock; the caller feeds
:meth:`NoiseSession.receive_data` and writes out :meth:`NoiseSession.data_to_send`. Any error
raised leaves the session closed: the caller drops the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from polykey import crypto
from polykey.errors import (
    AuthenticationError,
    HandshakeError,
    MessageTooLargeError,
    PeerIdentityMismatchError,
    PolykeyError,
    ProtocolViolationError,
    TransportError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import messages
from polykey.wire.frames import HEADER as FRAME_HEADER
from polykey.wire.frames import MAX_FRAME, NoiseFrameDecoder, encode_frame
from polykey.wire.noise import DHLEN, TAGLEN, CipherState, HandshakeState

PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"polykey-transport/2"
IDENTITY_PREFIX = b"polykey-transport/1 noise identity\x00"
ROLE_INITIATOR = b"I"
ROLE_RESPONDER = b"R"
PROOF_VERSION = 1
PROOF_SIZE = 1 + crypto.PUBLIC_KEY_BYTES + crypto.SIGNATURE_BYTES
#: exact sizes of the three handshake messages (section 3)
HANDSHAKE_SIZES = (DHLEN, DHLEN + (DHLEN + TAGLEN) + PROOF_SIZE + TAGLEN, (DHLEN + TAGLEN) + PROOF_SIZE + TAGLEN)
MAX_CHUNK = MAX_FRAME - TAGLEN
LENGTH_HEADER = 4
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
#: frames sealed into one buffer, written at once: a large message goes out as several
#: buffers of 4 x 64 KiB, each freed once written, never as one buffer of its whole size
SEAL_FRAMES = 4
#: a message's reassembly buffer grows ahead of what has arrived (doubling, so that frames
#: decrypt in place with few regrowths) only up to this size; past it, frame by frame
PREALLOCATE = 2 * 1024 * 1024


def identity_statement(role: bytes, noise_static_public: bytes, handshake_hash: bytes) -> bytes:
    """What a side signs: ``prefix || role || its Noise static key || handshake hash`` (section 4)."""
    return IDENTITY_PREFIX + role + noise_static_public + handshake_hash


@dataclass(frozen=True)
class HandshakeComplete:
    """The peer proved it holds the Ed25519 key ``peer``."""

    peer: NodeId


@dataclass(frozen=True)
class MessageReceived:
    message: messages.Message


Event = HandshakeComplete | MessageReceived


class State(Enum):
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    CLOSED = "closed"


class NoiseSession:
    """One end of a connection; ``initiator`` is the side that dialled."""

    def __init__(
        self,
        keypair: KeyPair,
        *,
        initiator: bool,
        expected_peer: NodeId | None = None,
        static_private: bytes | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        rng: crypto.Rng = crypto.random_bytes,
    ) -> None:
        if not 1 <= max_message_size <= 2**32 - 1:
            raise ValueError("max_message_size out of range")
        self._keypair = keypair
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.max_message_size = max_message_size
        static = static_private if static_private is not None else keypair.x25519_private
        self._hs: HandshakeState | None = HandshakeState(
            PROTOCOL_NAME, initiator=initiator, prologue=PROLOGUE, s=static, rng=rng
        )
        self.state = State.HANDSHAKE
        self.peer: NodeId | None = None
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._decoder = NoiseFrameDecoder()
        self._step = 0
        self._out: list[bytes | bytearray] = []
        self._need: int | None = None  # length of the message being received, once known
        self._message = bytearray()  # ...its buffer, filled in place
        self._got = 0  # ...bytes of it received
        if initiator:
            self._out.append(encode_frame(self._handshake().write_message(b"")))
            self._step = 1
        self._set_handshake_limits()

    # -- public ----------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def buffered(self) -> int:
        """Bytes held for partly received frames and messages: what the peer makes us keep
        (at most about ``max_message_size`` plus one frame)."""
        return self._decoder.buffered + len(self._message)

    @property
    def mid_message(self) -> bool:
        """True while a frame or a message is partly received (a stall timer should run)."""
        return self._decoder.buffered > 0 or self._need is not None

    def data_to_send(self) -> bytes | bytearray:
        """Bytes to write to the peer now (may be empty); the caller may keep them."""
        pieces = self.pieces_to_send()
        if not pieces:
            return b""
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def pieces_to_send(self) -> list[bytes | bytearray]:
        """:meth:`data_to_send` as the pieces it would join (each at most :data:`SEAL_FRAMES`
        frames), to write one by one without that copy."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; return what happened. Raises a TransportError subclass on any
        violation, after which the session is closed."""
        if self.state is State.CLOSED:
            raise ProtocolViolationError("session is closed")
        events: list[Event] = []
        try:
            while self.state is State.HANDSHAKE:
                frames = self._decoder.add_and_parse(data, limit=1)
                data = b""
                if not frames:
                    return events
                event = self._handshake_frame(frames[0])
                if event is not None:
                    events.append(event)
            for frame in self._decoder.add_and_parse_views(data):
                msg = self._transport_frame(frame)
                if msg is not None:
                    events.append(MessageReceived(msg))
        except TransportError:
            self.close()
            raise
        except PolykeyError:  # e.g. a low-order X25519 point: the DH is refused
            established = self.established
            self.close()
            if established:
                raise ProtocolViolationError("transport message failed") from None
            raise HandshakeError("handshake message failed authentication") from None
        return events

    def send(self, message: messages.Message) -> None:
        """Queue ``message`` for the peer (see :meth:`data_to_send`)."""
        if self.state is not State.ESTABLISHED or self._send is None:
            raise ProtocolViolationError("session is not established")
        parts = messages.encode_parts(message)
        size = sum(map(len, parts))
        if size > self.max_message_size:
            raise MessageTooLargeError(
                f"message of {size} bytes exceeds the {self.max_message_size}-byte cap"
            )
        self._seal([size.to_bytes(LENGTH_HEADER, "big"), *parts], LENGTH_HEADER + size)

    def _seal(self, parts: list[bytes], total: int) -> None:
        """Queue the frames of one message (section 5): the concatenation of ``parts``
        (``total`` bytes) cut into chunks of :data:`MAX_CHUNK`, each encrypted straight into
        its frame, in buffers of at most :data:`SEAL_FRAMES` frames."""
        assert self._send is not None
        encrypt = self._send.encrypt_into_with_ad
        chunks = _chunks(parts, MAX_CHUNK)
        while total > 0:
            count = min(-(-total // MAX_CHUNK), SEAL_FRAMES)
            size = min(total, count * MAX_CHUNK)
            total -= size
            out = bytearray(size + count * (FRAME_HEADER + TAGLEN))
            view = memoryview(out)
            pos = 0
            for _ in range(count):
                chunk = next(chunks)
                body = len(chunk) + TAGLEN
                view[pos : pos + FRAME_HEADER] = body.to_bytes(FRAME_HEADER, "big")
                pos += FRAME_HEADER
                encrypt(b"", chunk, view[pos : pos + body])
                pos += body
            self._out.append(out)

    def close(self) -> None:
        self.state = State.CLOSED
        self._hs = None
        self._message = bytearray()

    # -- handshake -------------------------------------------------------------

    def _handshake(self) -> HandshakeState:
        assert self._hs is not None
        return self._hs

    def _set_handshake_limits(self) -> None:
        size = HANDSHAKE_SIZES[min(self._step, 2)]
        self._decoder.set_limits(min_size=size, max_size=size)

    def _proof(self, role: bytes) -> Callable[[bytes], bytes]:
        hs = self._handshake()
        assert hs.s_pub is not None
        s_pub = hs.s_pub

        def make(h: bytes) -> bytes:
            sig = self._keypair.sign(identity_statement(role, s_pub, h))
            return bytes([PROOF_VERSION]) + self._keypair.public_key + sig

        return make

    def _verify_proof(self, payload: bytes, role: bytes) -> NodeId:
        hs = self._handshake()
        if len(payload) != PROOF_SIZE or payload[0] != PROOF_VERSION:
            raise HandshakeError("malformed identity proof")
        public, sig = payload[1:33], payload[33:]
        assert hs.rs is not None
        try:
            crypto.verify(public, identity_statement(role, hs.rs, hs.payload_h), sig)
        except AuthenticationError:
            raise HandshakeError("the peer's identity proof is invalid") from None
        peer = NodeId(bytes(public))
        if peer.raw == self._keypair.public_key:
            raise HandshakeError("the peer claims our own identity")
        if self.expected_peer is not None and peer != self.expected_peer:
            raise PeerIdentityMismatchError(
                f"expected {self.expected_peer}, the peer proved {peer}",
                expected=str(self.expected_peer),
                actual=str(peer),
            )
        return peer

    def _handshake_frame(self, frame: bytes) -> HandshakeComplete | None:
        hs = self._handshake()
        try:
            payload = hs.read_message(frame)
        except AuthenticationError:
            raise HandshakeError("handshake message failed authentication") from None
        self._step += 1
        if self.initiator:  # read message 2 (responder's proof), write message 3
            peer = self._verify_proof(payload, ROLE_RESPONDER)
            self._out.append(encode_frame(hs.write_message(self._proof(ROLE_INITIATOR))))
        elif self._step == 1:  # read message 1, write message 2
            if payload:
                raise HandshakeError("handshake message 1 must carry no payload")
            self._out.append(encode_frame(hs.write_message(self._proof(ROLE_RESPONDER))))
            self._step = 2
            self._set_handshake_limits()
            return None
        else:  # read message 3 (initiator's proof)
            peer = self._verify_proof(payload, ROLE_INITIATOR)
        self._send, self._recv = hs.split()
        self._hs = None
        self.peer = peer
        self.state = State.ESTABLISHED
        self._decoder.set_limits(min_size=TAGLEN + 1, max_size=MAX_FRAME)
        return HandshakeComplete(peer)

    # -- transport -------------------------------------------------------------

    def _transport_frame(self, frame: memoryview) -> messages.Message | None:
        assert self._recv is not None
        size = len(frame) - TAGLEN
        try:
            if self._need is None:
                return self._first_frame(self._recv.decrypt_with_ad(b"", frame))
            got = self._got
            end = got + size
            if end > self._need:
                self._recv.decrypt_with_ad(b"", frame)  # a forgery fails as such, first
                raise ProtocolViolationError("frame runs past the end of a message")
            if end > len(self._message):
                self._make_room(end)
            with memoryview(self._message) as view:
                self._recv.decrypt_into_with_ad(b"", frame, view[got:end])
        except AuthenticationError:
            raise ProtocolViolationError(
                "frame failed authentication (tampered, replayed or reordered)"
            ) from None
        self._got += size
        if self._got < self._need:
            return None
        data = self._message
        self._need, self._message, self._got = None, bytearray(), 0
        return messages.decode(data)

    def _first_frame(self, chunk: bytes) -> messages.Message | None:
        """The frame that starts a message: its length, then the message or its first part."""
        if len(chunk) < LENGTH_HEADER:
            raise ProtocolViolationError("message header truncated")
        need = int.from_bytes(chunk[:LENGTH_HEADER], "big")
        if need == 0 or need > self.max_message_size:
            raise ProtocolViolationError(f"message length {need} outside 1..{self.max_message_size}")
        got = len(chunk) - LENGTH_HEADER
        if got > need:
            raise ProtocolViolationError("frame runs past the end of a message")
        if got == need:
            return messages.decode(chunk[LENGTH_HEADER:])
        self._need, self._got = need, got
        self._message = bytearray(memoryview(chunk)[LENGTH_HEADER:])
        return None

    def _make_room(self, end: int) -> None:
        """Grow the message buffer to hold at least ``end`` bytes, so that frames decrypt in
        place: to twice ``end`` while under PREALLOCATE (few regrowths), exactly ``end`` past
        it, never past the announced length. Since ``end`` bytes of the message have then
        arrived, a peer makes us hold at most about twice what it sent, however large the
        length it announced."""
        assert self._need is not None
        have = len(self._message)
        size = min(self._need, max(end, min(2 * end, PREALLOCATE)))
        self._message += bytes(size - have)


def _chunks(parts: list[bytes], size: int) -> Iterator[bytes | memoryview]:
    """The concatenation of ``parts`` in pieces of ``size`` bytes (the last may be shorter),
    as views of the parts where a piece lies within one part, joined where it spans several."""
    pending: list[memoryview] = []
    have = 0
    for part in parts:
        view = memoryview(part)
        while view:
            take = min(size - have, len(view))
            pending.append(view[:take])
            have += take
            view = view[take:]
            if have == size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, have = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)
