"""The sans-I/O NoiseSession (Noise XX + identity proof + message layer) fed scripted bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey import crypto
from polykey.crypto import noise_suite
from polykey.errors import (
    AuthenticationError,
    HandshakeError,
    MessageTooLargeError,
    PeerIdentityMismatchError,
    ProtocolViolationError,
    TransportError,
)
from polykey.keys.keypair import KeyPair
from polykey.wire import messages as m
from polykey.wire.frames import encode_frame
from polykey.wire.noise import HandshakeState
from polykey.wire.session import (
    HANDSHAKE_SIZES,
    IDENTITY_PREFIX,
    HandshakeComplete,
    MessageReceived,
    PROLOGUE,
    PROTOCOL_NAME,
    NoiseSession,
    State,
    identity_statement,
)

from ..noise_client import raw_frame

A = KeyPair.from_seed(bytes(range(32)))
B = KeyPair.from_seed(bytes(range(1, 33)))
C = KeyPair.from_seed(bytes(range(2, 34)))


def pair(expected: KeyPair | None = B, max_message_size: int = 1 << 21) -> tuple[NoiseSession, NoiseSession]:
    i = NoiseSession(A, initiator=True, expected_peer=expected.node_id if expected else None,
                max_message_size=max_message_size)
    r = NoiseSession(B, initiator=False, max_message_size=max_message_size)
    return i, r


def handshake(i: NoiseSession, r: NoiseSession) -> None:
    assert r.receive_data(i.data_to_send()) == []
    assert i.receive_data(r.data_to_send()) == [HandshakeComplete(B.node_id)]
    assert r.receive_data(i.data_to_send()) == [HandshakeComplete(A.node_id)]


def raw_message(s: NoiseSession, data: bytes) -> bytes:
    return raw_frame(s, len(data).to_bytes(4, "big") + data)


def test_handshake_authenticates_both_sides_and_sizes_are_exact() -> None:
    i, r = pair()
    m1 = i.data_to_send()
    assert len(m1) == 2 + HANDSHAKE_SIZES[0]
    r.receive_data(m1)
    m2 = r.data_to_send()
    assert len(m2) == 2 + HANDSHAKE_SIZES[1]
    assert i.receive_data(m2) == [HandshakeComplete(B.node_id)]
    m3 = i.data_to_send()
    assert len(m3) == 2 + HANDSHAKE_SIZES[2]
    assert r.receive_data(m3) == [HandshakeComplete(A.node_id)]
    assert i.established and r.established
    assert i.peer == B.node_id and r.peer == A.node_id


def test_handshake_survives_one_byte_at_a_time_and_pipelined_message() -> None:
    i, r = pair()
    for b in i.data_to_send():
        assert r.receive_data(bytes([b])) == []
    events = []
    for b in r.data_to_send():
        events += i.receive_data(bytes([b]))
    assert events == [HandshakeComplete(B.node_id)]
    i.send(m.PeerRequest(1, "ping", {}))
    # message 3 and the first request arrive in one read
    events = r.receive_data(i.data_to_send())
    assert events == [HandshakeComplete(A.node_id), MessageReceived(m.PeerRequest(1, "ping", {}))]


def test_identity_proof_is_a_signature_over_the_documented_statement() -> None:
    """Check the responder's payload with a bare Noise initiator (docs/spec/transport.md s.4)."""
    hs = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=A.x25519_private)
    r = NoiseSession(B, initiator=False)
    r.receive_data(encode_frame(hs.write_message(b"")))
    payload = hs.read_message(r.data_to_send()[2:])
    assert len(payload) == 97 and payload[0] == 1 and payload[1:33] == B.public_key
    assert hs.rs == noise_suite.public_key(B.x25519_private)
    statement = IDENTITY_PREFIX + b"R" + hs.rs + hs.payload_h
    assert statement == identity_statement(b"R", hs.rs, hs.payload_h)
    assert IDENTITY_PREFIX == b"polykey-transport/1 noise identity\x00"
    crypto.verify(B.public_key, statement, payload[33:])
    with pytest.raises(AuthenticationError):  # not valid for the other role
        crypto.verify(B.public_key, IDENTITY_PREFIX + b"I" + hs.rs + hs.payload_h, payload[33:])


def test_dialling_the_wrong_identity_fails_before_revealing_ours() -> None:
    i, r = pair(expected=C)
    r.receive_data(i.data_to_send())
    with pytest.raises(PeerIdentityMismatchError):
        i.receive_data(r.data_to_send())
    assert i.data_to_send() == b""  # message 3 (our identity) never sent
    assert i.state is State.CLOSED
    with pytest.raises(ProtocolViolationError):
        i.receive_data(b"x")


def test_a_peer_claiming_our_own_identity_is_refused() -> None:
    i = NoiseSession(A, initiator=True)
    r = NoiseSession(A, initiator=False)
    r.receive_data(i.data_to_send())
    with pytest.raises(HandshakeError):
        i.receive_data(r.data_to_send())


def test_reflected_proof_is_rejected() -> None:
    """A proof made for the other role (R vs I) does not verify."""
    i, r = pair()
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    m3 = bytearray(i.data_to_send())
    m3[-20] ^= 1  # tamper anywhere: AEAD fails
    with pytest.raises(HandshakeError):
        r.receive_data(bytes(m3))


@pytest.mark.parametrize("step", [0, 1, 2])
@pytest.mark.parametrize("flip", [2, 20, -1])
def test_tampered_handshake_messages_fail(step: int, flip: int) -> None:
    """A flipped bit anywhere fails the handshake (message 1 is only detected at message 2)."""
    i, r = pair()
    sides = [(i, r), (r, i), (i, r)]
    with pytest.raises(TransportError):
        for k in range(3):
            sender, receiver = sides[k]
            data = bytearray(sender.data_to_send())
            if k == step:
                data[flip] ^= 0x40
            receiver.receive_data(bytes(data))
    assert not (i.established and r.established)


@pytest.mark.parametrize("size", [0, 31, 33, 64, 65535])
def test_wrong_size_first_message_is_refused_from_its_length(size: int) -> None:
    r = NoiseSession(B, initiator=False)
    with pytest.raises(ProtocolViolationError, match="frame length"):
        r.receive_data(size.to_bytes(2, "big"))


def test_truncated_handshake_waits_then_nothing_is_established() -> None:
    i, r = pair()
    m1 = i.data_to_send()
    assert r.receive_data(m1[:-1]) == []
    assert r.mid_message and not r.established


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_random_bytes_never_establish_and_only_raise_transport_errors(data: bytes) -> None:
    r = NoiseSession(B, initiator=False)
    try:
        r.receive_data(data)
    except TransportError:
        assert r.state is State.CLOSED
    assert not r.established
    i = NoiseSession(A, initiator=True)
    i.data_to_send()
    try:
        i.receive_data(data)
    except TransportError:
        pass
    assert not i.established


def test_messages_round_trip_including_multi_frame() -> None:
    i, r = pair()
    handshake(i, r)
    big = bytes(range(256)) * 5000  # 1.28 MB: 20 frames
    i.send(m.PeerRequest(7, "sync.pull", {"blob": big}))
    i.send(m.Ping(3))
    data = i.data_to_send()
    events = []
    for k in range(0, len(data), 9999):
        events += r.receive_data(data[k : k + 9999])
    assert events == [MessageReceived(m.PeerRequest(7, "sync.pull", {"blob": big})), MessageReceived(m.Ping(3))]
    r.send(m.PeerResponse(7, {"ok": True}))
    assert i.receive_data(r.data_to_send()) == [MessageReceived(m.PeerResponse(7, {"ok": True}))]


def test_replayed_frame_closes() -> None:
    i, r = pair()
    handshake(i, r)
    i.send(m.Ping(1))
    frame = i.data_to_send()
    r.receive_data(frame)
    with pytest.raises(ProtocolViolationError, match="replayed or reordered"):
        r.receive_data(frame)
    assert r.state is State.CLOSED


def test_reordered_frames_close() -> None:
    i, r = pair()
    handshake(i, r)
    i.send(m.Ping(1))
    f1 = i.data_to_send()
    i.send(m.Ping(2))
    f2 = i.data_to_send()
    with pytest.raises(ProtocolViolationError, match="replayed or reordered"):
        r.receive_data(f2 + f1)


def test_frame_from_another_session_closes() -> None:
    i, r = pair()
    handshake(i, r)
    i2, r2 = pair()
    handshake(i2, r2)
    i2.send(m.Ping(1))
    with pytest.raises(ProtocolViolationError):
        r.receive_data(i2.data_to_send())


def test_oversized_message_header_closes_before_buffering() -> None:
    i, r = pair(max_message_size=1000)
    handshake(i, r)
    with pytest.raises(ProtocolViolationError, match="message length 1001"):
        r.receive_data(raw_frame(i, (1001).to_bytes(4, "big") + b"x" * 10))


def test_sending_an_oversized_message_is_refused_locally() -> None:
    i, r = pair(max_message_size=1000)
    handshake(i, r)
    with pytest.raises(MessageTooLargeError):
        i.send(m.PeerRequest(1, "x", {"b": b"y" * 1000}))
    assert i.data_to_send() == b""
    assert i.established


def test_unknown_message_type_closes() -> None:
    i, r = pair()
    handshake(i, r)
    with pytest.raises(ProtocolViolationError, match="unknown message type"):
        r.receive_data(raw_message(i, msgpack.packb([2, 99, 0])))


def test_frame_running_past_a_message_end_closes() -> None:
    i, r = pair()
    handshake(i, r)
    body = m.encode(m.Ping(1))
    with pytest.raises(ProtocolViolationError, match="past the end"):
        r.receive_data(raw_frame(i, len(body).to_bytes(4, "big") + body + b"\x00"))


def test_zero_length_and_truncated_header_close() -> None:
    i, r = pair()
    handshake(i, r)
    with pytest.raises(ProtocolViolationError):
        r.receive_data(raw_frame(i, b"\x00\x00\x00\x00"))
    i, r = pair()
    handshake(i, r)
    with pytest.raises(ProtocolViolationError, match="header truncated"):
        r.receive_data(raw_frame(i, b"\x00\x01"))


def test_stall_state_is_visible_mid_message() -> None:
    i, r = pair()
    handshake(i, r)
    assert not r.mid_message
    i.send(m.PeerRequest(1, "x", {"b": b"y" * 100_000}))
    data = i.data_to_send()
    r.receive_data(data[:70_000])  # one whole frame of two
    assert r.mid_message
    r.receive_data(data[70_000:])
    assert not r.mid_message


def test_wire_modules_are_sans_io() -> None:
    """House style rule 2 (docs/CONTRIBUTING.md): the wire modules import no asyncio, socket or keynode."""
    import ast
    from pathlib import Path

    import polykey.wire

    forbidden = {"asyncio", "socket", "selectors", "threading", "keynode", "subprocess"}
    for path in Path(polykey.wire.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_ephemeral_keys_fail_the_handshake(point: bytes) -> None:
    r = NoiseSession(B, initiator=False)
    with pytest.raises(HandshakeError):
        r.receive_data(encode_frame(point))
    assert r.state is State.CLOSED
    i = NoiseSession(A, initiator=True)
    i.data_to_send()
    with pytest.raises(HandshakeError):
        i.receive_data(encode_frame(point + bytes(HANDSHAKE_SIZES[1] - 32)))


@given(st.integers(0, 2), st.binary(min_size=HANDSHAKE_SIZES[1], max_size=HANDSHAKE_SIZES[1]), st.data())
@settings(max_examples=300)
def test_well_framed_random_handshake_messages_only_raise_transport_errors(
    step: int, noise: bytes, data: st.DataObject
) -> None:
    """Random contents in a frame of exactly the expected size, at each handshake step."""
    if step == 0:
        points = st.sampled_from(LOW_ORDER_POINTS) | st.binary(min_size=32, max_size=32)
        frame = encode_frame(data.draw(points))
        r = NoiseSession(B, initiator=False)
        try:
            assert r.receive_data(frame) == []
            assert len(r.data_to_send()) == 2 + HANDSHAKE_SIZES[1]
        except TransportError:
            assert r.state is State.CLOSED
        return
    i, r = pair()
    r.receive_data(i.data_to_send())
    if step == 1:
        with pytest.raises(TransportError):
            i.receive_data(encode_frame(noise))
        return
    i.receive_data(r.data_to_send())
    with pytest.raises(TransportError):
        r.receive_data(encode_frame(noise[: HANDSHAKE_SIZES[2]]))


@given(st.binary(min_size=17, max_size=300))
@settings(max_examples=200)
def test_well_framed_random_transport_frames_close(noise: bytes) -> None:
    i, r = pair()
    handshake(i, r)
    with pytest.raises(ProtocolViolationError):
        r.receive_data(encode_frame(noise))


# -- large messages: many frames, sealed and opened in place ------------------------------

MIB = 1 << 20


def frames_of(data: bytes) -> list[bytes]:
    from polykey.wire.frames import NoiseFrameDecoder

    return NoiseFrameDecoder().add_and_parse(data)


@pytest.mark.parametrize("step", [1021, 9999, 65534, 65537, 3 * 65535 + 1, 300_000, 10 * MIB])
def test_large_messages_interleaved_with_small_span_full_frames_and_reassemble(step: int) -> None:
    i, r = pair(max_message_size=4 * MIB)
    handshake(i, r)
    blobs = [bytes([k]) * n for k, n in ((1, 3 * MIB + 5), (2, MIB), (3, 65_515 - 40), (4, 200_001))]
    sent: list[m.Message] = []
    for k, blob in enumerate(blobs):
        sent += [m.PeerRequest(k + 1, "sync.pull", {"blob": blob, "k": k}), m.Ping(k)]
        i.send(sent[-2])
        i.send(sent[-1])
    data = i.data_to_send()
    # each message starts a frame; every frame but a message's last carries 65519 plaintext bytes
    sizes = [len(f) for f in frames_of(bytes(data))]
    full = 65535
    assert sizes.count(full) == sum((4 + len(m.encode(x))) // 65519 for x in sent)
    assert len(sizes) == sum(-(-(4 + len(m.encode(x))) // 65519) for x in sent)
    events = []
    for k in range(0, len(data), step):
        events += r.receive_data(data[k : k + step])
    assert events == [MessageReceived(x) for x in sent]
    assert not r.mid_message


def test_a_received_message_is_not_changed_by_the_next() -> None:
    i, r = pair(max_message_size=4 * MIB)
    handshake(i, r)
    i.send(m.PeerResponse(1, {"b": b"\x01" * MIB}))
    (first,) = r.receive_data(i.data_to_send())
    i.send(m.PeerResponse(2, {"b": b"\x02" * MIB}))
    (second,) = r.receive_data(i.data_to_send())
    assert first == MessageReceived(m.PeerResponse(1, {"b": b"\x01" * MIB}))
    assert second == MessageReceived(m.PeerResponse(2, {"b": b"\x02" * MIB}))


def big_message_stream(i: NoiseSession) -> list[bytes]:
    i.send(m.PeerRequest(9, "sync.push", {"blob": bytes(range(256)) * 5000}))
    frames = frames_of(bytes(i.data_to_send()))
    assert len(frames) == 20
    return [encode_frame(f) for f in frames]


@pytest.mark.parametrize("where", [1, 10, 19])
@pytest.mark.parametrize("flip", [2, 1000, -1])
def test_a_forged_frame_in_the_middle_of_a_large_message_closes(where: int, flip: int) -> None:
    i, r = pair()
    handshake(i, r)
    frames = big_message_stream(i)
    bad = bytearray(frames[where])
    bad[flip] ^= 0x01
    assert r.receive_data(b"".join(frames[:where])) == []
    assert r.mid_message
    with pytest.raises(ProtocolViolationError, match="failed authentication"):
        r.receive_data(bytes(bad) + b"".join(frames[where + 1 :]))
    assert r.state is State.CLOSED
    with pytest.raises(ProtocolViolationError):
        r.receive_data(b"".join(frames[where + 1 :]))


@pytest.mark.parametrize("how", ["truncated", "dropped", "swapped", "repeated"])
def test_a_truncated_or_misordered_frame_mid_message_closes(how: str) -> None:
    i, r = pair()
    handshake(i, r)
    frames = big_message_stream(i)
    k = 7
    if how == "truncated":  # its length now swallows the start of the next frame
        frames[k] = frames[k][:-100]
    elif how == "dropped":
        del frames[k]
    elif how == "swapped":
        frames[k], frames[k + 1] = frames[k + 1], frames[k]
    else:
        frames.insert(k, frames[k - 1])
    with pytest.raises(ProtocolViolationError, match="failed authentication"):
        r.receive_data(b"".join(frames))
    assert r.state is State.CLOSED


def test_a_continuation_frame_running_past_the_message_end_closes() -> None:
    i, r = pair()
    handshake(i, r)
    need = 70_000
    first = need.to_bytes(4, "big") + b"\x00" * 65_515
    assert r.receive_data(raw_frame(i, first)) == []
    with pytest.raises(ProtocolViolationError, match="past the end"):
        r.receive_data(raw_frame(i, b"\x00" * (need - 65_515 + 1)))
    # a forged frame that would run past the end fails as a forgery, before anything else
    i, r = pair()
    handshake(i, r)
    r.receive_data(raw_frame(i, first))
    forged = bytearray(raw_frame(i, b"\x00" * (need - 65_515 + 1)))
    forged[5] ^= 1
    with pytest.raises(ProtocolViolationError, match="failed authentication"):
        r.receive_data(bytes(forged))


@pytest.mark.parametrize("has_into", [True, False])
def test_sealing_in_place_matches_the_plain_aead(monkeypatch: pytest.MonkeyPatch, has_into: bool) -> None:
    """The in-place AEAD calls (and their fallback for an older cryptography) give the same
    bytes as encrypt/decrypt, and a forgery fails the same way."""
    from polykey.crypto import _primitives

    monkeypatch.setattr(_primitives, "_HAS_INTO", has_into)
    aead = noise_suite.Cipher(bytes(range(32)))
    nonce, plain = bytes(12), bytes(range(256)) * 300
    out = bytearray(len(plain) + 16)
    aead.encrypt_into(nonce, memoryview(plain)[:], b"", memoryview(out))
    assert bytes(out) == aead.encrypt(nonce, plain, b"")
    back = bytearray(len(plain))
    aead.decrypt_into(nonce, memoryview(out), b"", memoryview(back))
    assert back == plain
    out[100] ^= 1
    with pytest.raises(AuthenticationError):
        aead.decrypt_into(nonce, bytes(out), b"", memoryview(back))


def test_a_peer_announcing_a_large_message_makes_us_hold_little_more_than_it_sent() -> None:
    from polykey.wire.session import PREALLOCATE

    i, r = pair(max_message_size=4 * MIB)
    handshake(i, r)
    assert r.buffered == 0
    r.receive_data(raw_frame(i, (4 * MIB).to_bytes(4, "big") + b"\x00" * 100))
    assert r.mid_message and 100 <= r.buffered <= PREALLOCATE
    i, r = pair(max_message_size=4 * MIB)
    handshake(i, r)
    i.send(m.PeerResponse(1, {"b": b"\x07" * (3 * MIB)}))  # beyond PREALLOCATE: grows as it arrives
    data = i.data_to_send()
    r.receive_data(data[: len(data) // 2])
    assert r.buffered <= PREALLOCATE + 65535  # the buffer ahead, and part of a frame
    r.receive_data(data[len(data) // 2 : -1000])
    assert PREALLOCATE < r.buffered <= len(data)
    assert r.receive_data(data[-1000:]) == [MessageReceived(m.PeerResponse(1, {"b": b"\x07" * (3 * MIB)}))]
    assert r.buffered == 0


def test_announcing_large_messages_costs_the_peer_what_it_makes_us_hold() -> None:
    """A first frame of a few bytes announcing 4 MiB made the receiver allocate 2 MiB at once:
    256 connections sending about 23 bytes each after their handshake pinned 512 MiB. The
    buffer ahead is at most what has arrived of that message (it doubles as frames arrive)."""
    i, r = pair(max_message_size=4 * MIB)
    handshake(i, r)
    r.receive_data(raw_frame(i, (4 * MIB).to_bytes(4, "big") + b"\x00" * 100))
    assert r.mid_message and r.buffered <= 2 * 100
    got = 100
    for _ in range(40):  # 40 frames of 1000 bytes: never more than twice what came
        r.receive_data(raw_frame(i, b"\x00" * 1000))
        got += 1000
        assert got <= r.buffered <= 2 * got


@given(st.lists(st.integers(0, 400_000), min_size=1, max_size=5), st.integers(1, 200_000), st.data())
@settings(max_examples=25, deadline=None)
def test_any_mix_of_message_sizes_under_any_chunking_round_trips(
    sizes: list[int], prealloc: int, data: st.DataObject
) -> None:
    """Sizes on both sides of the in-place buffer ahead (made small here), cut anywhere."""
    import polykey.wire.session as session_module

    old = session_module.PREALLOCATE
    session_module.PREALLOCATE = prealloc
    try:
        i, r = pair()
        handshake(i, r)
        sent = [m.PeerResponse(k + 1, {"b": bytes([k]) * n, "k": k}) for k, n in enumerate(sizes)]
        for msg in sent:
            i.send(msg)
        stream = bytes(i.data_to_send())
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
        events = []
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            events += r.receive_data(stream[a:b])
            assert r.buffered <= b + prealloc  # never much more than the peer has sent
        assert events == [MessageReceived(x) for x in sent]
        assert r.buffered == 0
    finally:
        session_module.PREALLOCATE = old


def test_the_in_place_sealing_leaves_the_wire_bytes_as_specified() -> None:
    """Section 5 byte for byte: ``u32 length || msgpack`` cut into 65519-byte chunks, each one
    Noise message in one frame (checked against a twin session doing it the plain way)."""

    def twin() -> NoiseSession:
        rng_i = iter([bytes([7]) * 32, bytes([8]) * 32])
        rng_r = iter([bytes([9]) * 32, bytes([10]) * 32])
        i = NoiseSession(A, initiator=True, rng=lambda n: next(rng_i)[:n], max_message_size=4 * MIB)
        r = NoiseSession(B, initiator=False, rng=lambda n: next(rng_r)[:n], max_message_size=4 * MIB)
        handshake(i, r)
        return i

    ours, plain = twin(), twin()
    for msg in (m.Ping(1), m.PeerRequest(2, "sync.pull", {"blob": bytes(range(256)) * 9000, "n": [1, b"x"]})):
        ours.send(msg)
        data = m.encode(msg)
        stream = len(data).to_bytes(4, "big") + data
        assert plain._send is not None
        expected = b"".join(
            encode_frame(plain._send.encrypt_with_ad(b"", stream[k : k + 65519]))
            for k in range(0, len(stream), 65519)
        )
        assert bytes(ours.data_to_send()) == expected
