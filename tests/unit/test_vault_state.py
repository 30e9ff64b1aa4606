"""The node-local vault state file and the verified-head guard (docs/spec/vault-format.md section 10)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.errors import (
    CommitNotFoundError,
    VaultIndexError,
    VaultPermissionError,
    VaultRollbackError,
    VaultStateError,
    VaultVerificationError,
)
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults import index, state
from polykey.vaults.identity import NodeKey
from polykey.vaults.service import VaultService
from polykey.vaults.state import Invite, NodeState, Peer, VaultState
from polykey.vaults.vault import Vault

KEY = bytes(range(32))
oids = st.binary(min_size=20, max_size=20).map(bytes.hex)
commits = oids.filter(lambda o: o != "00" * 20)  # all zeros is what a pending vault's record holds
node_ids = st.binary(min_size=32, max_size=32).map(NodeId)
times = st.integers(min_value=0, max_value=(1 << 64) - 1)
records = st.one_of(
    st.just(VaultState(None, None)),
    st.builds(lambda r, v, peers: VaultState(r, v, tuple(sorted(peers, key=lambda p: p.node.raw))),
              commits, commits, st.lists(st.builds(Peer, node_ids, oids, times), max_size=3, unique_by=lambda p: p.node)),
)
states = st.builds(
    lambda vaults, invites, trusted: NodeState(
        vaults, tuple(sorted(invites, key=lambda i: (i.vault_id.raw, i.sender.raw))), trusted),
    st.dictionaries(st.binary(min_size=16, max_size=16).map(VaultId), records, max_size=4),
    st.lists(st.builds(Invite, st.binary(min_size=16, max_size=16).map(VaultId), oids, oids,
                       node_ids, st.sampled_from([1, 2, 3]), st.text(max_size=20), times),
             max_size=2, unique_by=lambda i: (i.vault_id.raw, i.sender.raw)),
    st.dictionaries(node_ids, st.sampled_from([0, state.AUTO_ACCEPT]), max_size=3),
)


@given(states)
def test_state_round_trips_byte_for_byte(s: NodeState) -> None:
    data = state.encode(KEY, s, rng=lambda n: bytes(n))
    assert state.decode(KEY, data) == s
    assert state.encode(KEY, state.decode(KEY, data), rng=lambda n: bytes(n)) == data


def test_state_is_strict() -> None:
    s = NodeState({VaultId(bytes(16)): VaultState("11" * 20, "22" * 20)})
    body = state.encode_body(s)
    for bad in (body + b"\0", body[:-1], body[:4] + body[4:20] + bytes(20) + body[40:]):  # trailing, short, half-pending
        with pytest.raises(VaultStateError, match="malformed"):
            state.decode_body(bad)
    data = state.encode(KEY, s)
    with pytest.raises(VaultStateError, match="fails authentication"):
        state.decode(KEY, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(VaultStateError, match="fails authentication"):
        state.decode(os.urandom(32), data)
    with pytest.raises(VaultStateError, match="unknown version"):
        state.decode(KEY, data[:4] + b"\x03" + data[5:])
    with pytest.raises(VaultStateError):
        state.decode(KEY, index.encode(KEY, {}))  # another kind of sealed file


def _v1_body(vid: bytes, root: bytes, verified: bytes, peer: bytes, head: bytes, sender: bytes, name: bytes) -> bytes:
    """A version 1 body written out by hand, as the version 1 code laid it out (section 10.1 before v2):
    one vault with one peer (no sync time), one invite (no receipt time), no trusted nodes."""
    u16, u32 = (lambda n: n.to_bytes(2, "big")), (lambda n: n.to_bytes(4, "big"))
    record = vid + root + verified + u16(1) + peer + head
    invite = vid + root + head + sender + b"\x03" + u16(len(name)) + name
    return u32(1) + record + u32(1) + invite


def test_a_version_1_state_file_is_read_and_rewritten_as_version_2() -> None:
    from polykey.vaults import sealedfile

    vid, peer, sender = VaultId(b"\x01" * 16), NodeId(b"\x02" * 32), NodeId(b"\x03" * 32)
    root, verified, head = "aa" * 20, "bb" * 20, "cc" * 20
    body = _v1_body(vid.raw, bytes.fromhex(root), bytes.fromhex(verified), peer.raw, bytes.fromhex(head),
                    sender.raw, "prod".encode())
    old = sealedfile.seal(KEY, b"PKNS", 1, body)
    s = state.decode(KEY, old)
    assert s == NodeState({vid: VaultState(root, verified, (Peer(peer, head, 0),))},
                          (Invite(vid, root, head, sender, 3, "prod", 0),), {})
    new = state.encode(KEY, s, rng=lambda n: bytes(n))
    assert new[4] == 2  # always written as version 2
    assert state.decode(KEY, new) == s
    assert state.encode(KEY, state.decode(KEY, new), rng=lambda n: bytes(n)) == new
    # The version is authenticated: a version 2 body is not read as version 1, nor the reverse.
    with pytest.raises(VaultStateError, match="fails authentication"):
        state.decode(KEY, new[:4] + b"\x01" + new[5:])
    with pytest.raises(VaultStateError, match="fails authentication"):
        state.decode(KEY, old[:4] + b"\x02" + old[5:])
    with pytest.raises(VaultStateError, match="malformed"):  # a version 1 body read as version 2
        state.decode_body(body, 2)


def test_a_malformed_version_2_body_is_rejected() -> None:
    a, b = NodeId(b"\x01" * 32), NodeId(b"\x02" * 32)
    vid = VaultId(b"\x05" * 16)
    ok = NodeState({vid: VaultState("11" * 20, "22" * 20, (Peer(a, "33" * 20, 7),))},
                   (Invite(vid, "11" * 20, "22" * 20, a, 2, "n", 9),), {a: state.AUTO_ACCEPT, b: 0})
    body = state.encode_body(ok)
    assert state.decode_body(body) == ok
    tail = len(body) - 2 * 33  # where the trusted nodes start (after their count)
    assert body[tail - 4 : tail] == (2).to_bytes(4, "big")
    swapped = body[:tail] + b"\x02" * 32 + b"\x00" + b"\x01" * 32 + b"\x01"
    repeated = body[:tail] + b"\x01" * 32 + b"\x01" + b"\x01" * 32 + b"\x00"
    flags = body[:-1] + b"\x02"  # an unknown flag bit
    too_many = body[: tail - 4] + (state.MAX_TRUSTED + 1).to_bytes(4, "big") + body[tail:]
    no_trusted = body[: tail - 4]  # a version 1 body's end where version 2 needs the trusted nodes
    for bad in (swapped, repeated, flags, too_many, no_trusted, body + b"\0", body[:-1]):
        with pytest.raises(VaultStateError, match="malformed"):
            state.decode_body(bad)
    with pytest.raises(VaultStateError):  # nothing is written that the decoder would refuse
        state.encode_body(NodeState(trusted={a: 0x80}))
    with pytest.raises(VaultStateError):
        state.encode_body(NodeState({vid: VaultState("11" * 20, "22" * 20, (Peer(a, "33" * 20, -1),))}))
    with pytest.raises(VaultStateError):  # all zeros stands for "pending": never a real root or head
        state.encode_body(NodeState({vid: VaultState("00" * 20, "00" * 20)}))
    with pytest.raises(VaultStateError):
        state.encode_body(NodeState(trusted={NodeId(bytes([i % 256, i // 256]) + bytes(30)): 0
                                             for i in range(state.MAX_TRUSTED + 1)}))


def test_index_version_records_the_state_file() -> None:
    entries = {"a": VaultId(bytes(16))}
    assert index.decode_full(KEY, index.encode(KEY, entries)) == (entries, False)
    assert index.decode_full(KEY, index.encode(KEY, entries, with_state=True)) == (entries, True)
    data = index.encode(KEY, entries, with_state=True)
    with pytest.raises(VaultIndexError):  # the version is authenticated: it cannot be downgraded
        index.decode(KEY, data[:4] + b"\x01" + data[5:])


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[VaultService]:
    """A node with vault `work` (db/password = one); its keypair is `svc.keypair`."""
    with VaultService(tmp_path / "node", KeyPair.generate()) as s:
        s.create_vault("work")
        s.set_secret("work", "db/password", b"one")
        yield s


def _raw(svc: VaultService) -> Vault:
    v = svc._vault("work")  # noqa: SLF001 - the repository under the service
    return Vault(v.repo.path, v.vault_id, svc.node_key, v.clock, v.rng)


def test_our_writes_advance_the_verified_head(svc: VaultService, tmp_path: Path) -> None:
    svc.set_secret("work", "db/password", b"two")
    v = _raw(svc)
    head = v.repo.head()
    svc._trust.flush()  # noqa: SLF001 - as the service's close does (section 10.5)
    rec = svc._trust.record(v.vault_id)  # noqa: SLF001
    assert rec.verified == head and rec.root == v.repo.new_commits(head or "", None)[0]
    again = VaultService(tmp_path / "node", svc.keypair)  # an agent restart
    assert again.get_secret("work", "db/password") == b"two"
    again.close()


def test_incremental_verification_walks_only_new_commits(svc: VaultService) -> None:
    from polykey.vaults.verify import verify_new

    v = _raw(svc)
    before = v.repo.head() or ""
    svc.set_secret("work", "a", b"1")
    svc.set_secret("work", "b", b"2")
    after = v.repo.head() or ""
    assert verify_new(v, after, before) == 2
    assert verify_new(v, after, after) == 0
    with pytest.raises(VaultRollbackError) as info:
        verify_new(v, before, after)
    assert before in info.value.message and after in info.value.message


def test_old_commits_are_read_only_from_the_verified_history(svc: VaultService) -> None:
    v = _raw(svc)
    old = v.repo.head() or ""
    svc.set_secret("work", "db/password", b"two")
    assert svc.get_secret("work", "db/password", commit=old[:8]) == b"one"
    # A commit object planted in the repository but not in the history is never read.
    head = v.repo.head() or ""
    with v.repo.write_lock():
        stray = v.repo.commit(v.repo.commit_info(old).tree, [old], "set secret\n", NodeKey(KeyPair.generate()),
                              when=1)
        v.repo.set_head(head)  # main back where it was
    with pytest.raises(CommitNotFoundError, match="verified history"):
        svc.get_secret("work", "db/password", commit=stray)


def test_state_loss_and_tampering_are_errors(svc: VaultService, tmp_path: Path) -> None:
    path = tmp_path / "node" / "vaults" / "state"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    fresh = VaultService(tmp_path / "node", svc.keypair)
    with pytest.raises(VaultStateError, match="fails authentication"):
        fresh.get_secret("work", "db/password")
    path.unlink()
    with pytest.raises(VaultStateError, match="missing"):
        fresh.get_secret("work", "db/password")
    with pytest.raises(VaultStateError):
        fresh.verify("work")
    fresh.close()


def test_a_vault_missing_from_the_state_is_an_error(svc: VaultService) -> None:
    vid = svc._vault("work").vault_id  # noqa: SLF001
    svc._trust._put(vid, None)  # noqa: SLF001 - as if the record had been dropped
    svc._vault("work").trusted = None  # noqa: SLF001
    with pytest.raises(VaultStateError, match="no record"):
        svc.get_secret("work", "db/password")


def test_reset_is_for_owners_and_verified_commits(svc: VaultService, tmp_path: Path) -> None:
    v = _raw(svc)
    first = v.repo.head() or ""
    svc.set_secret("work", "db/password", b"two")
    out = svc.reset_vault("work", first[:10])
    assert (out["commit"], out["pending"]) == (first, 0)
    assert svc.get_secret("work", "db/password") == b"one"
    # A commit of another vault's history (another root) is refused.
    svc.create_vault("else")
    foreign = svc._vault("else").repo.head() or ""  # noqa: SLF001
    v.close()
    with pytest.raises(CommitNotFoundError):
        svc.reset_vault("work", foreign)
    # A node that is no owner as of the target (here: no member at all) may not reset.
    from polykey.vaults.trust import VerifiedHeads

    reader = NodeKey(KeyPair.generate())
    vaults = tmp_path / "node" / "vaults"
    heads = VerifiedHeads(vaults, reader, index.NameIndex(vaults, reader))
    with pytest.raises(VaultPermissionError):
        heads.reset(Vault(v.repo.path, v.vault_id, reader, time.time, os.urandom), first)


def test_write_on_an_unverified_head_is_refused(svc: VaultService) -> None:
    v = _raw(svc)
    head = v.repo.head() or ""
    stranger = NodeKey(KeyPair.generate())
    with v.repo.write_lock():
        bad = v.repo.commit(v.repo.commit_info(head).tree, [head], "set secret\n", stranger, when=1)
    with pytest.raises(VaultVerificationError, match="not a member"):
        svc.set_secret("work", "x", b"y")
    assert v.repo.head() == bad  # nothing written on top


def test_own_writes_reach_the_state_file_in_batches_and_at_close(svc: VaultService, tmp_path: Path) -> None:
    """Section 10.5: the recorded head is a low-water mark, written every RECORD_EVERY own commits."""
    from polykey.vaults.trust import RECORD_EVERY

    v = _raw(svc)
    vid = v.vault_id
    svc._trust.flush()  # noqa: SLF001
    recorded = svc._trust.record(vid).verified  # noqa: SLF001
    for i in range(RECORD_EVERY - 1):
        svc.set_secret("work", "db/password", b"%d" % i)
    assert svc._trust.record(vid).verified == recorded  # noqa: SLF001 - not yet written
    svc.set_secret("work", "db/password", b"last")
    assert svc._trust.record(vid).verified == v.repo.head()  # noqa: SLF001 - the batch is full
    svc.set_secret("work", "db/password", b"after")
    svc.close()
    again = VaultService(tmp_path / "node", svc.keypair)
    assert again._trust.record(vid).verified == v.repo.head()  # noqa: SLF001 - recorded at close
    again.close()


def test_a_crash_leaves_a_lag_that_the_next_open_verifies(svc: VaultService, tmp_path: Path) -> None:
    v = _raw(svc)
    recorded = svc._trust.record(v.vault_id).verified  # noqa: SLF001
    svc.set_secret("work", "db/password", b"two")
    svc.set_secret("work", "db/password", b"three")
    again = VaultService(tmp_path / "node", svc.keypair)  # the agent was killed: nothing flushed
    assert again._trust.record(v.vault_id).verified == recorded  # noqa: SLF001
    assert again.get_secret("work", "db/password") == b"three"  # the two commits are verified first
    assert again._trust.record(v.vault_id).verified == v.repo.head()  # noqa: SLF001
    again.close()


def test_a_rollback_of_unrecorded_commits_is_refused_while_running(svc: VaultService) -> None:
    v = _raw(svc)
    svc.set_secret("work", "db/password", b"two")
    older = v.repo.head() or ""
    svc.set_secret("work", "db/password", b"three")
    newer = v.repo.head() or ""
    with v.repo.write_lock():
        v.repo.set_head(older)  # the recorded head is older still: only memory knows `newer`
    with pytest.raises(VaultRollbackError) as info:
        svc.get_secret("work", "db/password")
    assert older in info.value.message and newer in info.value.message
