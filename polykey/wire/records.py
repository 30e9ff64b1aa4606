"""Signed node records and seed specs (docs/spec/discovery.md sections 2 and 3).

A :class:`NodeRecord` says "node N can be reached at these addresses", signed by
N's own Ed25519 key. It is what the DHT stores under N's DHT key
(:func:`dht_key`). Sans-I/O: bytes in, frozen dataclasses out; the caller passes
the current time (``now``) for every expiry check (STYLE.md rule 10).

Layout (version 1, integers big-endian)::

    magic "PKNR" (4) | version 0x01 (1) | node_id (32) | seq u64 (8) | expiry u64 (8)
    | count u8 (1) | count x [host_len u8 | host ASCII | port u16] | signature (64)

The signature is Ed25519 over ``SIGNATURE_DOMAIN || everything before it``. The
whole record is at most :data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from polykey import crypto
from polykey.errors import (
    InvalidSeedError,
    RecordExpiredError,
    RecordFormatError,
    RecordKeyMismatchError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair

MAGIC = b"PKNR"
VERSION = 1
SIGNATURE_DOMAIN = b"polykey-node-record-v1\x00"
MAX_RECORD_BYTES = 1024
MAX_ADDRESSES = 8
MAX_HOST_BYTES = 253
#: A record may not claim to stay valid longer than this after ``now`` (seconds).
MAX_LIFETIME = 24 * 3600
DHT_KEY_BYTES = 20

Address = tuple[str, int]

_HEADER = struct.Struct(">4sB32sQQB")
_PORT = struct.Struct(">H")
_U64_MAX = (1 << 64) - 1
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def dht_key(node_id: NodeId) -> bytes:
    """The 20-byte DHT id of a node, and the key its record is stored under: blake2b(pubkey, 20)."""
    return crypto.blake2b(node_id.raw, DHT_KEY_BYTES)


@functools.lru_cache(maxsize=1024)
def _ip_form(host: str) -> bool | None:
    """Whether ``host`` is an IP address as :mod:`ipaddress` prints it (None: not an IP address).
    Cached: every contact of every DHT reply carries a host, and parsing it was a tenth of the
    CPU time of a large DHT (bench/bench_dht_scale.py); the hosts a node meets repeat."""
    try:
        return str(ipaddress.ip_address(host)) == host
    except ValueError:
        return None


def check_host(host: object, *, allow_names: bool = True) -> str:
    """Return ``host`` if it is a canonical IP literal (or, if allowed, a DNS name); else raise.

    Canonical means exactly what :mod:`ipaddress` prints (lowercase, compressed IPv6,
    no zone) or a lowercase LDH hostname without a trailing dot.
    """
    if not isinstance(host, str) or not host or len(host) > MAX_HOST_BYTES or not host.isascii():
        raise RecordFormatError("invalid host")
    if "%" in host:
        raise RecordFormatError("invalid host: IPv6 zone ids are not allowed")
    canonical = _ip_form(host)
    if canonical is not None:
        if not canonical:
            raise RecordFormatError("invalid host: non-canonical IP address")
        return host
    if not allow_names:
        raise RecordFormatError("invalid host: must be an IP address")
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise RecordFormatError("invalid host name")
    return host


def check_port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RecordFormatError("invalid port: must be 1..65535")
    return port


@dataclass(frozen=True)
class NodeRecord:
    """Where a node can be reached, signed by that node (docs/spec/discovery.md section 2)."""

    node_id: NodeId
    addresses: tuple[Address, ...]
    seq: int
    expiry: int
    signature: bytes

    @property
    def key(self) -> bytes:
        """The DHT key this record is stored under."""
        return dht_key(self.node_id)

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers, without the domain prefix."""
        return _encode_body(self.node_id, self.addresses, self.seq, self.expiry)

    def encode(self) -> bytes:
        return encode_record(self)

    def newer_than(self, other: NodeRecord) -> bool:
        """Total order for picking the winner: higher seq, then later expiry, then larger bytes."""
        return (self.seq, self.expiry, self.encode()) > (other.seq, other.expiry, other.encode())


def _encode_body(node_id: NodeId, addresses: Sequence[Address], seq: int, expiry: int) -> bytes:
    if not 1 <= len(addresses) <= MAX_ADDRESSES:
        raise RecordFormatError(f"a record needs 1..{MAX_ADDRESSES} addresses")
    for value in (seq, expiry):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64_MAX:
            raise RecordFormatError("seq and expiry must be unsigned 64-bit integers")
    out = [_HEADER.pack(MAGIC, VERSION, node_id.raw, seq, expiry, len(addresses))]
    for item in addresses:
        if not isinstance(item, tuple) or len(item) != 2:
            raise RecordFormatError("an address is a (host, port) pair")
        host = check_host(item[0]).encode("ascii")
        out.append(bytes([len(host)]) + host + _PORT.pack(check_port(item[1])))
    body = b"".join(out)
    if len(body) + crypto.SIGNATURE_BYTES > MAX_RECORD_BYTES:
        raise RecordFormatError(f"record larger than {MAX_RECORD_BYTES} bytes")
    return body


def sign_record(keypair: KeyPair, addresses: Sequence[Address], seq: int, expiry: int) -> NodeRecord:
    """A new record for ``keypair``'s node, signed with its key."""
    addrs = tuple((h, p) for h, p in addresses)
    body = _encode_body(keypair.node_id, addrs, seq, expiry)
    signature = keypair.sign(SIGNATURE_DOMAIN + body)
    return NodeRecord(keypair.node_id, addrs, seq, expiry, signature)


def encode_record(record: NodeRecord) -> bytes:
    if len(record.signature) != crypto.SIGNATURE_BYTES:
        raise RecordFormatError("signature must be 64 bytes")
    return record.signed_bytes() + record.signature


def decode_record(data: bytes) -> NodeRecord:
    """Parse a record strictly (structure only; see :func:`verify_record`)."""
    if not isinstance(data, bytes):
        raise RecordFormatError("record must be bytes")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordFormatError(f"record larger than {MAX_RECORD_BYTES} bytes")
    if len(data) < _HEADER.size + crypto.SIGNATURE_BYTES:
        raise RecordFormatError("record truncated")
    magic, version, raw_id, seq, expiry, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RecordFormatError("not a node record")
    if version != VERSION:
        raise RecordFormatError(f"unknown node record version {version}")
    if not 1 <= count <= MAX_ADDRESSES:
        raise RecordFormatError(f"a record needs 1..{MAX_ADDRESSES} addresses")
    end = len(data) - crypto.SIGNATURE_BYTES
    pos = _HEADER.size
    addresses: list[Address] = []
    for _ in range(count):
        if pos >= end:
            raise RecordFormatError("record truncated")
        n = data[pos]
        pos += 1
        if n == 0 or pos + n + _PORT.size > end:
            raise RecordFormatError("record truncated")
        try:
            host = data[pos : pos + n].decode("ascii")
        except UnicodeDecodeError:
            raise RecordFormatError("invalid host") from None
        pos += n
        (port,) = _PORT.unpack_from(data, pos)
        pos += _PORT.size
        addresses.append((check_host(host), check_port(port)))
    if pos != end:
        raise RecordFormatError("trailing bytes in record")
    record = NodeRecord(NodeId(raw_id), tuple(addresses), seq, expiry, data[end:])
    if record.encode() != data:  # every accepted record round-trips byte for byte
        raise RecordFormatError("non-canonical record")
    return record


def verify_record(record: NodeRecord, *, now: float, key: bytes | None = None) -> NodeRecord:
    """Check the signature, the expiry window and (if given) the DHT key; return the record.

    Raises :class:`~polykey.errors.AuthenticationError` for a bad signature,
    :class:`RecordKeyMismatchError`, or :class:`RecordExpiredError`.
    """
    if key is not None and not crypto.constant_time_eq(key, record.key):
        raise RecordKeyMismatchError()
    if record.expiry <= now:
        raise RecordExpiredError()
    if record.expiry > now + MAX_LIFETIME:
        raise RecordExpiredError("node record claims a lifetime longer than 24 hours")
    crypto.verify(record.node_id.raw, SIGNATURE_DOMAIN + record.signed_bytes(), record.signature)
    return record


def parse_record(data: bytes, *, now: float, key: bytes | None = None) -> NodeRecord:
    """:func:`decode_record` then :func:`verify_record`."""
    return verify_record(decode_record(data), now=now, key=key)


# -- seeds (docs/spec/discovery.md section 3) --------------------------------------

MAX_SEED_CHARS = 512


@dataclass(frozen=True)
class Seed:
    """A node to bootstrap from: ``NODEID@HOST:PORT`` (IPv6 hosts in brackets)."""

    node_id: NodeId
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.node_id}@{host}:{self.port}"


def parse_seed(text: str) -> Seed:
    """Parse ``NODEID@HOST:PORT`` strictly; :class:`InvalidSeedError` names what is wrong."""
    if not isinstance(text, str) or not text or len(text) > MAX_SEED_CHARS:
        raise InvalidSeedError("invalid seed: expected NODEID@HOST:PORT")
    node_text, at, hostport = text.partition("@")
    if not at or "@" in hostport:
        raise InvalidSeedError("invalid seed: expected NODEID@HOST:PORT")
    try:
        node_id = NodeId.from_text(node_text)
    except Exception:
        raise InvalidSeedError("invalid seed: the NODEID part is not a valid NodeId") from None
    if hostport.startswith("["):
        host, close, rest = hostport[1:].partition("]")
        if not close or not rest.startswith(":") or ":" not in host:
            raise InvalidSeedError("invalid seed: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon or ":" in host:
            raise InvalidSeedError("invalid seed: expected HOST:PORT (IPv6 in brackets)")
    if not port_text.isascii() or not port_text.isdigit() or port_text != str(int(port_text)):
        raise InvalidSeedError("invalid seed: the port must be a decimal number")
    try:
        return Seed(node_id, check_host(host), check_port(int(port_text)))
    except RecordFormatError as exc:
        raise InvalidSeedError(f"invalid seed: {exc.message}") from None


def parse_seeds(text: str) -> list[Seed]:
    """A ``PK_SEED_NODES`` value: seeds separated by commas, semicolons or whitespace."""
    return [parse_seed(part) for part in re.split(r"[\s,;]+", text.strip()) if part]
