"""The node-local bookkeeping of sync (polykey.vaults.syncbook): trusted nodes, invites and peers'
heads, in the node's real sealed state file, beside the verified heads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polykey.errors import InvalidInputError, VaultStateError
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.service import VaultService
from polykey.vaults.state import Invite
from polykey.vaults.syncbook import MAX_INVITES_PER_SENDER, SyncBook

ROOT, HEAD, HEAD2 = "aa" * 20, "bb" * 20, "cc" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, KeyPair]:
    return tmp_path / "node", KeyPair.generate()


@pytest.fixture
def svc(node: tuple[Path, KeyPair], clock: Clock) -> Iterator[VaultService]:
    with VaultService(node[0], node[1], clock=clock) as s:
        yield s


def _id() -> str:
    return str(KeyPair.generate().node_id)


def _vid(i: int) -> str:
    return str(VaultId(i.to_bytes(16, "big")))


def _book(svc: VaultService) -> SyncBook:
    return svc._book  # noqa: SLF001 - the book under the service


# -- trusted nodes --------------------------------------------------------------------------------


def test_trust_is_kept_across_a_restart_of_the_node(node: tuple[Path, KeyPair], svc: VaultService) -> None:
    """On a fresh node (no vault, no state file yet), as on a machine before its first invite."""
    a, b = _id(), _id()
    assert svc.trusted_nodes() == []
    assert svc.trust_node(a, auto_accept=True) == {"nodeId": a, "autoAccept": True}
    svc.trust_node(b)
    svc.close()
    with VaultService(node[0], node[1]) as again:
        assert again.trusted_nodes() == sorted([{"nodeId": a, "autoAccept": True}, {"nodeId": b, "autoAccept": False}],
                                               key=lambda r: r["nodeId"])
        again.trust_node(a, auto_accept=False)  # trusting again changes the flag
        assert again.untrust_node(b) == {"nodeId": b, "removed": True}
        assert again.untrust_node(b) == {"nodeId": b, "removed": False}
    with VaultService(node[0], node[1]) as third:
        assert third.trusted_nodes() == [{"nodeId": a, "autoAccept": False}]
        with pytest.raises(InvalidInputError, match="itself"):
            third.trust_node(str(node[1].node_id))
        with pytest.raises(InvalidInputError, match="NodeId"):
            third.trust_node("vnot-a-node")


def test_the_book_and_the_verified_heads_never_lose_each_others_writes(node: tuple[Path, KeyPair],
                                                                         svc: VaultService) -> None:
    """Two services of one node (as the agent and a second process): each writes the state file."""
    created = svc.create_vault("work")
    other = VaultService(node[0], node[1])
    try:
        peer = _id()
        svc.trust_node(peer, auto_accept=True)
        for i in range(40):  # more than RECORD_EVERY own commits: the verified head is written meanwhile
            other.set_secret("work", "x", b"%d" % i)
        other.peer_seen("work", peer, HEAD)
        assert svc.trusted_nodes() == [{"nodeId": peer, "autoAccept": True}]
        svc.store_invite(_vid(1), ROOT, HEAD, peer, "reader", "prod")
        other.close()  # flushes its verified head: the invite and the trust stay
        with VaultService(node[0], node[1]) as third:
            assert third.trusted_nodes() == [{"nodeId": peer, "autoAccept": True}]
            assert [i["name"] for i in third.list_invites()] == ["prod"]
            assert [p["head"] for p in third.peer_states("work")] == [HEAD]
            assert third.get_secret("work", "x") == b"39"
            assert third.vault_id("work") == created["vaultId"]
    finally:
        other.close()


# -- invites ------------------------------------------------------------------------------------------


def test_invites_are_kept_listed_and_replaced(svc: VaultService, clock: Clock) -> None:
    created = svc.create_vault("mine")
    alice, bob = _id(), _id()
    assert svc.store_invite(_vid(1), ROOT, HEAD, alice, "reader", "prod")
    clock.now += 5
    assert svc.store_invite(_vid(1), ROOT, HEAD, bob, "writer", "prod-from-bob")
    assert svc.store_invite(created["vaultId"], ROOT, HEAD, alice, "owner", "mine")
    listed = svc.list_invites()
    assert len(listed) == 3
    first = next(i for i in listed if i["from"] == alice and i["vaultId"] == _vid(1))
    assert first == {"vaultId": _vid(1), "root": ROOT, "head": HEAD, "from": alice, "role": "reader",
                     "name": "prod", "received": 1_000_000, "held": False}
    assert next(i for i in listed if i["vaultId"] == created["vaultId"])["held"] is True
    # A newer invite for the same (vault, sender) replaces the older.
    clock.now += 5
    assert svc.store_invite(_vid(1), ROOT, HEAD2, alice, "writer", "prod2")
    mine = [i for i in svc.list_invites() if i["from"] == alice and i["vaultId"] == _vid(1)]
    assert [(i["head"], i["role"], i["name"], i["received"]) for i in mine] == [(HEAD2, "writer", "prod2", 1_000_010)]
    # Dropping: one sender's, then all of a vault's.
    assert svc.drop_invites(_vid(1), bob) == 1
    assert svc.drop_invites(_vid(1)) == 1
    assert svc.drop_invites(_vid(1)) == 0
    assert [i["vaultId"] for i in svc.list_invites()] == [created["vaultId"]]


def test_invites_are_bounded_per_sender(svc: VaultService, clock: Clock) -> None:
    spammer, friend = _id(), _id()
    assert svc.store_invite(_vid(999), ROOT, HEAD, friend, "reader", "keep")
    for i in range(MAX_INVITES_PER_SENDER + 5):
        clock.now += 1
        assert svc.store_invite(_vid(i), ROOT, HEAD, spammer, "reader", f"v{i}")
    held = [i for i in svc.list_invites() if i["from"] == spammer]
    assert len(held) == MAX_INVITES_PER_SENDER
    # The sender's oldest went; its newest are kept; the other sender's invite is untouched.
    assert sorted(int(i["name"][1:]) for i in held) == list(range(5, MAX_INVITES_PER_SENDER + 5))
    assert [i["name"] for i in svc.list_invites() if i["from"] == friend] == ["keep"]
    # Replacing one of its invites does not push out another of its invites.
    clock.now += 1
    assert svc.store_invite(_vid(5), ROOT, HEAD2, spammer, "reader", "v5-again")
    assert len([i for i in svc.list_invites() if i["from"] == spammer]) == MAX_INVITES_PER_SENDER
    assert any(i["name"] == "v6" for i in svc.list_invites())


def test_invites_are_bounded_in_all(svc: VaultService, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the overall bound a sender that holds none is refused; one that holds some loses its oldest."""
    from polykey.vaults import syncbook

    monkeypatch.setattr(syncbook, "MAX_INVITES", 4)  # the real bound (1,024) takes 64 senders
    a, b, c = _id(), _id(), _id()
    for i in range(2):
        assert svc.store_invite(_vid(i), ROOT, HEAD, a, "reader", f"a{i}")
        assert svc.store_invite(_vid(10 + i), ROOT, HEAD, b, "reader", f"b{i}")
    assert not svc.store_invite(_vid(20), ROOT, HEAD, c, "reader", "c0")  # full: refused
    assert svc.store_invite(_vid(2), ROOT, HEAD, a, "reader", "a2")  # a's oldest goes instead
    assert sorted(i["name"] for i in svc.list_invites()) == ["a1", "a2", "b0", "b1"]


def test_malformed_invites_are_refused(svc: VaultService) -> None:
    sender = _id()
    for args in [
        ("not-a-vault", ROOT, HEAD, sender, "reader", "n"),
        (_vid(1), "xyz", HEAD, sender, "reader", "n"),
        (_vid(1), ROOT, HEAD.upper(), sender, "reader", "n"),
        (_vid(1), ROOT, HEAD, "nobody", "reader", "n"),
        (_vid(1), ROOT, HEAD, sender, "admin", "n"),
        (_vid(1), ROOT, HEAD, sender, "reader", "n" * 513),
        (_vid(1), ROOT, HEAD, sender, "reader", "\udc80"),
    ]:
        with pytest.raises(InvalidInputError):
            svc.store_invite(*args)
    assert svc.list_invites() == []
    with pytest.raises(InvalidInputError):
        _book(svc).add_invite(Invite(VaultId(bytes(16)), ROOT, HEAD, NodeId(bytes(32)), 4, "n", 0))


# -- peers --------------------------------------------------------------------------------------------


def test_peers_heads_and_last_sync(svc: VaultService, clock: Clock) -> None:
    created = svc.create_vault("work")
    a, b = _id(), _id()
    assert svc.peer_states("work") == []
    assert svc.peer_seen("work", a, HEAD)
    clock.now += 30
    assert svc.peer_seen(created["vaultId"], b, HEAD)
    clock.now += 30
    assert svc.peer_seen("work", a, HEAD2)  # the newer head and time replace the older
    states = {p["nodeId"]: (p["head"], p["lastSync"]) for p in svc.peer_states("work")}
    assert states == {a: (HEAD2, 1_000_060), b: (HEAD, 1_000_030)}
    assert [p["nodeId"] for p in svc.peer_states("work")] == sorted(
        [a, b], key=lambda t: NodeId.from_text(t).raw)
    with pytest.raises(InvalidInputError):
        svc.peer_seen("work", a, "not-a-commit")
    # A vault without a record: nothing is written.
    assert not _book(svc).saw(VaultId(bytes(16)), NodeId.from_text(a), HEAD, 1)
    assert _book(svc).peers(VaultId(bytes(16))) == []
    # The peers go with the vault.
    vid = VaultId.from_text(created["vaultId"])
    svc.delete_vault("work")
    assert _book(svc).peers(vid) == []


def test_an_unusable_state_file_is_an_error_not_a_fresh_start(node: tuple[Path, KeyPair],
                                                             svc: VaultService) -> None:
    svc.create_vault("work")
    svc.trust_node(_id())
    path = node[0] / "vaults" / "state"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with VaultService(node[0], node[1]) as again:
        with pytest.raises(VaultStateError):
            again.trusted_nodes()
        with pytest.raises(VaultStateError):
            again.trust_node(_id())
    assert path.read_bytes() == data[:-1] + bytes([data[-1] ^ 1])  # nothing written over it
