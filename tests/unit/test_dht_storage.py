"""Record storage, rate limiter, routing fixes (keynode/peers/dht): bounded and validating, no network."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from keynode.peers.dht.config import DhtConfig
from keynode.peers.dht.protocol import DhtPeer, ValidatingProtocol
from keynode.peers.dht.ratelimit import RateLimiter
from keynode.peers.dht.storage import RecordStorage
from keynode.lifecycle import task_group
from keynode.peers.dht.tasks import Background
from polykey.errors import (
    AuthenticationError,
    DiscoveryError,
    RecordExpiredError,
    RecordFormatError,
    RecordKeyMismatchError,
    StaleRecordError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.wire.records import dht_key, sign_record

NOW = 1_800_000_000.0
KPS = [KeyPair.from_seed(hashlib.sha256(b"kp%d" % i).digest()) for i in range(40)]
OWN = KPS[0]


def rec(kp: KeyPair, seq: int = 5, ttl: int = 3600, port: int = 4000) -> bytes:
    return sign_record(kp, [("127.0.0.1", port)], seq, int(NOW) + ttl).encode()


def storage(max_records: int = 100) -> tuple[RecordStorage, list[float]]:
    clock = [NOW]
    return RecordStorage(dht_key(OWN.node_id), max_records=max_records, clock=lambda: clock[0]), clock


def test_accepts_signed_record_under_its_key() -> None:
    st, _ = storage()
    kp = KPS[1]
    assert st.put(dht_key(kp.node_id), rec(kp)).seq == 5
    assert st.get(dht_key(kp.node_id)) == rec(kp)
    assert dict(st) == {dht_key(kp.node_id): rec(kp)}


@pytest.mark.parametrize(
    "make,error",
    [
        (lambda kp: rec(kp)[:-1] + bytes([rec(kp)[-1] ^ 1]), AuthenticationError),
        (lambda kp: rec(kp, ttl=0), RecordExpiredError),
        (lambda kp: rec(kp, ttl=-10), RecordExpiredError),
        (lambda kp: rec(kp, ttl=100 * 3600), RecordExpiredError),
        (lambda kp: rec(KPS[2]), RecordKeyMismatchError),  # a valid record of another node
        (lambda kp: b"junk", RecordFormatError),
        (lambda kp: rec(kp) + b"\x00" * 1000, RecordFormatError),  # oversize
    ],
)
def test_forged_records_refused(make, error) -> None:  # type: ignore[no-untyped-def]
    st, _ = storage()
    kp = KPS[1]
    with pytest.raises(error):
        st.put(dht_key(kp.node_id), make(kp))
    assert not st.offer(dht_key(kp.node_id), make(kp))
    assert len(st) == 0 and st.rejected[error.__name__] == 1


def test_highest_seq_wins_and_lower_seq_is_refused() -> None:
    st, _ = storage()
    kp, key = KPS[1], dht_key(KPS[1].node_id)
    st.put(key, rec(kp, seq=5))
    st.put(key, rec(kp, seq=5))  # identical copy: a refresh
    with pytest.raises(StaleRecordError):
        st.put(key, rec(kp, seq=4, port=9))
    assert st.get_record(key).seq == 5  # type: ignore[union-attr]
    st.put(key, rec(kp, seq=6, port=9))
    assert st.get_record(key).addresses == (("127.0.0.1", 9),)  # type: ignore[union-attr]


def test_expired_records_disappear_with_the_clock() -> None:
    st, clock = storage()
    kp, key = KPS[1], dht_key(KPS[1].node_id)
    st.put(key, rec(kp, ttl=60))
    clock[0] += 61
    assert st.get(key) is None and key not in st and len(st) == 0


def test_bounded_keeps_the_closest_keys() -> None:
    st, _ = storage(max_records=8)
    own = int.from_bytes(dht_key(OWN.node_id), "big")
    for kp in KPS[1:]:
        st.offer(dht_key(kp.node_id), rec(kp))
    assert len(st) == 8
    distances = sorted(int.from_bytes(dht_key(kp.node_id), "big") ^ own for kp in KPS[1:])
    assert sorted(int.from_bytes(k, "big") ^ own for k, _ in st) == distances[:8]
    assert st.rejected["DiscoveryError"] > 0
    far = max(KPS[1:], key=lambda kp: int.from_bytes(dht_key(kp.node_id), "big") ^ own)
    with pytest.raises(DiscoveryError):
        st.put(dht_key(far.node_id), rec(far))


def test_rate_limiter_is_bounded_and_refills() -> None:
    t = [0.0]
    rl = RateLimiter(rate=10, burst=5, max_entries=3, clock=lambda: t[0])
    assert [rl.allow("a") for _ in range(6)] == [True] * 5 + [False]
    t[0] += 0.1
    assert rl.allow("a") and not rl.allow("a")
    for i in range(100):
        rl.allow(i)
    assert len(rl) == 3


def _sha1_dist(a: bytes, b: bytes) -> int:
    return int.from_bytes(hashlib.sha1(a).digest(), "big") ^ int.from_bytes(b, "big")


def test_welcome_if_new_uses_the_key_not_its_hash() -> None:
    """Upstream computed closeness to digest(key) for keys that are already DHT keys."""

    async def scenario() -> None:
        cfg = DhtConfig()
        st = RecordStorage(dht_key(OWN.node_id), max_records=10, clock=lambda: NOW)
        tasks = Background(10, __import__("logging").getLogger("test"))
        proto = ValidatingProtocol(OWN.node_id, st, cfg, tasks)
        proto._family, proto._self_addr = 4, ("127.0.0.1", 1)
        key = dht_key(OWN.node_id)
        st.put(key, rec(OWN))

        def d(kp: KeyPair) -> int:
            return int.from_bytes(dht_key(kp.node_id), "big") ^ int.from_bytes(key, "big")

        hashed = hashlib.sha1(key).digest()
        pairs = [(x, n) for x in KPS[1:] for n in KPS[1:]
                 if d(x) < d(n) and _sha1_dist(hashed, dht_key(x.node_id)) > _sha1_dist(hashed, dht_key(n.node_id))]
        # (x is closer to the key than n, but farther from the wrongly hashed key)
        x, n = pairs[0]
        proto.router.add_contact(DhtPeer(n.node_id, "127.0.0.1", 2))
        async with task_group() as tg:  # the group is cancelled as the block ends
            tasks.open(tg)
            proto.welcome_if_new(DhtPeer(x.node_id, "127.0.0.1", 3))
            assert len(tasks) == 1  # the record is handed to the closer newcomer
            tasks.close()

    asyncio.run(scenario())


def test_peer_dht_id_is_derived_from_node_id() -> None:
    p = DhtPeer(KPS[3].node_id, "127.0.0.1", 9)
    assert p.id == hashlib.blake2b(KPS[3].public_key, digest_size=20).digest()
    assert isinstance(p.node_id, NodeId)


def test_refresh_ids_fit_in_20_bytes() -> None:
    import logging

    proto = ValidatingProtocol(OWN.node_id, storage()[0], DhtConfig(), Background(1, logging.getLogger("test")))
    assert proto.get_refresh_ids() == []  # every bucket was just touched
    for bucket in proto.router.buckets:
        bucket.last_updated -= 7200
        bucket.range = (2**160 - 1, 2**160)  # upstream's inclusive upper bound, forced
    assert [len(i) for i in proto.get_refresh_ids()] == [20]
