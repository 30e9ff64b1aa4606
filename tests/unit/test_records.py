"""Signed node records and seed specs (polykey/wire/records.py, docs/spec/discovery.md)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.errors import (
    AuthenticationError,
    InvalidSeedError,
    RecordExpiredError,
    RecordFormatError,
    RecordKeyMismatchError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire import records as R

KP = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))
NOW = 1_800_000_000.0


def make(addresses=(("127.0.0.1", 4242),), seq=7, expiry=int(NOW) + 3600, kp=KP) -> R.NodeRecord:  # type: ignore[no-untyped-def]
    return R.sign_record(kp, list(addresses), seq, expiry)


def test_round_trip_and_verify() -> None:
    rec = make((("127.0.0.1", 4242), ("::1", 80), ("node.example.org", 65535)))
    data = rec.encode()
    assert data[:5] == b"PKNR\x01"
    assert len(data) <= R.MAX_RECORD_BYTES
    assert R.parse_record(data, now=NOW, key=R.dht_key(KP.node_id)) == rec
    assert R.decode_record(data).encode() == data


def test_dht_key_is_blake2b_of_public_key() -> None:
    import hashlib

    assert R.dht_key(KP.node_id) == hashlib.blake2b(KP.public_key, digest_size=20).digest()
    assert len(R.dht_key(KP.node_id)) == 20


def test_known_layout() -> None:
    rec = make((("10.0.0.1", 1),), seq=1, expiry=2)
    data = rec.encode()
    header = b"PKNR\x01" + KP.public_key + struct.pack(">QQB", 1, 2, 1)
    assert data == header + b"\x08" + b"10.0.0.1" + b"\x00\x01" + rec.signature
    assert len(rec.signature) == 64


# -- forged records of every kind -------------------------------------------------


def test_bad_signature_is_authentication_error() -> None:
    data = bytearray(make().encode())
    data[-1] ^= 1
    with pytest.raises(AuthenticationError):
        R.parse_record(bytes(data), now=NOW)


def test_tampered_body_fails_signature() -> None:
    data = bytearray(make().encode())
    data[40] ^= 1  # inside seq
    with pytest.raises(AuthenticationError):
        R.parse_record(bytes(data), now=NOW)


def test_record_signed_by_another_key_for_this_node_fails() -> None:
    rec = make()
    body = R.NodeRecord(rec.node_id, rec.addresses, rec.seq + 1, rec.expiry, b"").signed_bytes()
    forged = R.NodeRecord(rec.node_id, rec.addresses, rec.seq + 1, rec.expiry, OTHER.sign(R.SIGNATURE_DOMAIN + body))
    with pytest.raises(AuthenticationError):
        R.parse_record(forged.encode(), now=NOW)


def test_signature_without_domain_separation_fails() -> None:
    rec = make()
    plain = R.NodeRecord(rec.node_id, rec.addresses, rec.seq, rec.expiry, KP.sign(rec.signed_bytes()))
    with pytest.raises(AuthenticationError):
        R.parse_record(plain.encode(), now=NOW)


def test_key_not_matching_dht_id() -> None:
    data = make().encode()
    with pytest.raises(RecordKeyMismatchError):
        R.parse_record(data, now=NOW, key=R.dht_key(OTHER.node_id))


def test_expired_and_overlong_lifetime() -> None:
    data = make(expiry=int(NOW)).encode()
    with pytest.raises(RecordExpiredError):
        R.parse_record(data, now=NOW)
    assert R.parse_record(data, now=NOW - 1)  # the clock is injected
    too_long = make(expiry=int(NOW) + R.MAX_LIFETIME + 1).encode()
    with pytest.raises(RecordExpiredError):
        R.parse_record(too_long, now=NOW)


def test_oversize_is_refused_both_ways() -> None:
    long_host = ".".join(["a" * 60] * 4)  # 243 chars, a valid name
    with pytest.raises(RecordFormatError):
        make(tuple((long_host, 1) for _ in range(5)))
    with pytest.raises(RecordFormatError):
        R.decode_record(b"PKNR\x01" + b"\x00" * 2000)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated signature
        lambda d: d + b"\x00",  # trailing byte
        lambda d: b"PKNX" + d[4:],  # magic
        lambda d: d[:4] + b"\x02" + d[5:],  # unknown version
        lambda d: d[:53] + b"\x00" + d[54:],  # zero addresses
        lambda d: d[:53] + b"\x09" + d[54:],  # too many addresses
        lambda d: d[:53] + b"\x02" + d[54:],  # count larger than present
        lambda d: d[:54] + b"\x00" + d[55:],  # empty host
        lambda d: d[:54] + b"\xff" + d[55:],  # host length past the end
        lambda d: d[:55] + b"127.000.0.1"[:9] + d[64:],  # non-canonical IP
        lambda d: d[:55] + b"127.0.0.\xff" + d[64:],  # non-ASCII host
        lambda d: d[:64] + b"\x00\x00" + d[66:],  # port 0
        lambda d: b"",
        lambda d: d[:60],
    ],
)
def test_malformed_records_are_format_errors(mutate) -> None:  # type: ignore[no-untyped-def]
    data = make((("127.0.0.1", 4242),)).encode()
    with pytest.raises(RecordFormatError):
        R.decode_record(mutate(data))


@pytest.mark.parametrize("host", ["", "UPPER.example", "a..b", "-a.b", "a_b", "1.2.3", "::FFFF:1",
                                  "fe80::1%eth0", "127.0.0.1.", "x" * 254, "exämple.org"])
def test_bad_hosts_refused(host: str) -> None:
    with pytest.raises(RecordFormatError):
        make(((host, 1),))


def test_newer_than_orders_by_seq_then_expiry() -> None:
    a, b = make(seq=1), make(seq=2)
    assert b.newer_than(a) and not a.newer_than(b)
    c = make(seq=2, expiry=int(NOW) + 7200)
    assert c.newer_than(b)
    assert not b.newer_than(b)


# -- hypothesis ------------------------------------------------------------------

_hosts = st.one_of(
    st.ip_addresses().map(str).filter(lambda h: "%" not in h),
    st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True),
)
_addresses = st.lists(st.tuples(_hosts, st.integers(1, 65535)), min_size=1, max_size=R.MAX_ADDRESSES)


@settings(max_examples=60, deadline=None)
@given(_addresses, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_round_trip_property(addresses: list[tuple[str, int]], seq: int, expiry: int) -> None:
    try:
        rec = make(addresses, seq=seq, expiry=expiry)
    except RecordFormatError:
        return  # too large for the cap: refused at signing, never produced
    data = rec.encode()
    assert len(data) <= R.MAX_RECORD_BYTES
    assert R.decode_record(data) == rec
    assert R.verify_record(rec, now=expiry - 1, key=R.dht_key(KP.node_id)) == rec


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        R.parse_record(data, now=NOW)
    except (RecordFormatError, RecordExpiredError, AuthenticationError):
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_single_byte_corruption_is_always_rejected(data: st.DataObject) -> None:
    raw = make((("192.168.1.20", 4000), ("host.example", 5))).encode()
    i = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :]
    with pytest.raises((RecordFormatError, RecordExpiredError, AuthenticationError, RecordKeyMismatchError)):
        R.parse_record(bad, now=NOW, key=R.dht_key(KP.node_id))


# -- seeds -----------------------------------------------------------------------


def test_parse_seed_forms() -> None:
    nid = str(KP.node_id)
    s = R.parse_seed(f"{nid}@127.0.0.1:4242")
    assert (s.node_id, s.host, s.port) == (KP.node_id, "127.0.0.1", 4242)
    assert str(s) == f"{nid}@127.0.0.1:4242"
    s6 = R.parse_seed(f"{nid}@[::1]:1")
    assert s6.host == "::1" and str(s6) == f"{nid}@[::1]:1"
    assert R.parse_seed(f"{nid}@seed.example.org:65535").host == "seed.example.org"
    assert R.parse_seeds(f" {nid}@10.0.0.1:1, {nid}@10.0.0.2:2;{nid}@10.0.0.3:3\n") == [
        R.Seed(KP.node_id, f"10.0.0.{i}", i) for i in (1, 2, 3)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "", "@127.0.0.1:1", "{n}", "{n}@", "{n}@127.0.0.1", "{n}@127.0.0.1:", "{n}@127.0.0.1:0",
        "{n}@127.0.0.1:65536", "{n}@127.0.0.1:+1", "{n}@127.0.0.1:01", "{n}@127.0.0.1:１",
        "{n}@::1:80", "{n}@[::1]", "{n}@[127.0.0.1]:1", "{n}@[::1]80", "{n}@a@b:1",
        "{n}x@127.0.0.1:1", "V{m}@127.0.0.1:1", "{n}@BAD_HOST:1", "{n}@127.0.0.1:1 ",
        "{n}@" + "a" * 600 + ":1",
    ],
)
def test_parse_seed_rejects(text: str) -> None:
    n = str(KP.node_id)
    with pytest.raises(InvalidSeedError):
        R.parse_seed(text.format(n=n, m=n[1:]))


def test_seed_error_is_usage_error() -> None:
    assert InvalidSeedError.exit_code == 64
    assert NodeId(KP.public_key) == KP.node_id
