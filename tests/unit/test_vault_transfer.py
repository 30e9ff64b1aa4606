"""The object transfer of sync, both ends, between two real nodes in one process (issue 12).

Each node is a real VaultService with its own KeyPair and directory; the bytes a peer would send
over the transport are what the serving node's ``serve_plan``/``serve_read`` return, fed to an
``Incoming`` on the receiving node. Bad transfers are real objects altered or forged with real
keys (commits signed with real SSH signatures, trees in git's format); each must leave the
receiver's branch, verified head, packs and vaults directory exactly as they were.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.errors import (
    InvalidInputError,
    SyncRefusedError,
    SyncRejectedError,
    VaultExistsError,
    VaultIntegrityError,
)
from polykey import crypto
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults import grammar, transfer
from polykey.vaults.format import Members, WrappedKeys, keys_file_name
from polykey.vaults.identity import NodeKey, author_email
from polykey.vaults.objects import MODE_BLOB, MODE_TREE, Entries, commit_header, signed_commit_bytes, tree_bytes
from polykey.vaults.pack import OBJ_BLOB, OBJ_COMMIT, OBJ_TREE, TYPE_NAMES, object_id
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.service import VaultService
from polykey.vaults.trust import REPLACING
from polykey.vaults.transfer import Incoming
from polykey.vaults.vault import Parts, Snapshot, Vault

Obj = tuple[int, bytes]


@dataclass
class Node:
    kp: KeyPair
    svc: VaultService

    @property
    def id(self) -> NodeId:
        return self.kp.node_id


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    made = [Node(kp, VaultService(tmp_path / name, kp)) for name, kp in
            (("a", KeyPair.generate()), ("b", KeyPair.generate()), ("c", KeyPair.generate()))]
    yield made[0], made[1], made[2]
    for n in made:
        n.svc.close()


def vault(n: Node, name: str) -> Vault:
    return n.svc._vault(name)  # noqa: SLF001 - tests write membership commits on the real repository


def set_member(n: Node, name: str, node: NodeId, role: str | None) -> str:
    """An owner's commit adding ``node`` with ``role`` (None: removing it) in the current epoch."""
    v = vault(n, name)

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, dict[str, object]]:
        fname = keys_file_name(snap.info.epoch)
        e = v.repo.entry(snap.tree, f".pk/keys/{fname}")
        assert e is not None
        secret = WrappedKeys.decode(v.repo.read_blob(e.oid)).open(v.key, v.vault_id)
        roles = dict(snap.members.roles)
        if role is None:
            roles.pop(node, None)
        else:
            roles[node] = role
        wrapped = WrappedKeys.create(snap.info.epoch, secret, list(roles), v.vault_id)
        return {(".pk", "members"): Entry(BLOB, v.repo.write_blob(Members(tuple(sorted(roles.items()))).encode())),
                (".pk", "keys", fname): Entry(BLOB, v.repo.write_blob(wrapped.encode()))}, "share vault\n", {}

    return str(v.write_metadata(build)["commit"])


def fetch(src: Node, asker: NodeId, vid: str, want: str, haves: list[str]) -> tuple[Incoming, list[tuple[int, str]]]:
    """What ``asker`` receives from ``src`` for ``want``: serve_plan, serve_read, Incoming.add."""
    refs = src.svc.serve_plan(asker, vid, want, haves)
    inc = Incoming()
    for (t, oid), data in zip(refs, src.svc.serve_read(vid, refs)):
        assert inc.add(t, data, oid) == oid
    return inc, refs


def root_of(n: Node, name: str) -> str:
    return str(n.svc.log(name)[-1]["commit"])


@pytest.fixture
def shared(nodes: tuple[Node, Node, Node]) -> tuple[Node, Node, Node, str]:
    """A's vault ``work`` with two secrets, cloned by B (a writer)."""
    a, b, c = nodes
    vid = a.svc.create_vault("work")["vaultId"]
    a.svc.set_secret("work", "db/password", b"hunter2")
    a.svc.set_secret("work", "api/token", b"tok")
    set_member(a, "work", b.id, "writer")
    head = a.svc.serve_heads(b.id, [vid])[vid]
    inc, _refs = fetch(a, b.id, vid, head, [])
    b.svc.clone(vid, root_of(a, "work"), head, "mine", inc, a.id)
    return a, b, c, vid


def state(n: Node, name: str) -> tuple[object, ...]:
    """What a rejected transfer must leave unchanged on the receiver."""
    v = vault(n, name)
    vaults = n.svc.node_path / "vaults"
    packs = sorted(os.listdir(v.repo.path / "objects" / "pack"))
    return (v.repo.head(), n.svc._trust.verified_head(v.vault_id), sorted(os.listdir(vaults)), packs)  # noqa: SLF001


# -- forged objects (real keys, real formats) ------------------------------------------------------


def entries_of(v: Vault, tree: str) -> Entries:
    return {e.name: (MODE_TREE if e.is_tree else MODE_BLOB, bytes.fromhex(e.oid))
            for e in grammar.parse_tree(tree, v.repo.raw(tree, "tree", grammar.MAX_TREE_BYTES))}


def obj(t: int, data: bytes) -> tuple[str, Obj]:
    return object_id(TYPE_NAMES[t], data).hex(), (t, data)


def forge_commit(v: Vault, tree: str, parents: list[str], signer: KeyPair | None,
                 when: int | None = None) -> tuple[str, Obj]:
    who = signer.node_id if signer is not None else v.me
    when = when if when is not None else max([int(time.time())] + [v.repo.commit_info(p).time for p in parents])
    if signer is None:
        data = (commit_header(tree, parents, str(who), author_email(who), when) + "\nset secret\n").encode()
    else:
        data = signed_commit_bytes(tree, parents, str(who), author_email(who), when, "set secret\n",
                                   NodeKey(signer).sign)
    return obj(OBJ_COMMIT, data)


def forge_secret(v: Vault, signer: KeyPair | None, name: str = "forged", value: bytes = b"v",
                 parents: list[str] | None = None, when: int | None = None) -> tuple[str, list[Obj]]:
    """A commit on the head adding secret ``name`` at the root: (commit id, its new objects)."""
    snap = v.snapshot()
    assert snap.keys is not None
    blob_id, blob = obj(OBJ_BLOB, snap.keys.encrypt_secret(name, value))
    entries = entries_of(v, snap.tree)
    entries[snap.keys.encrypt_name(name)] = (MODE_BLOB, bytes.fromhex(blob_id))
    tree_id, tree = obj(OBJ_TREE, tree_bytes(entries))
    cid, commit = forge_commit(v, tree_id, [snap.commit] if parents is None else parents, signer, when)
    return cid, [commit, tree, blob]


def forge_raw_tree(v: Vault, entry: bytes, signer: KeyPair) -> tuple[str, list[Obj]]:
    """A commit whose root tree carries one raw extra entry (``mode name\\0`` + 20 bytes)."""
    snap = v.snapshot()
    raw = v.repo.raw(snap.tree, "tree", grammar.MAX_TREE_BYTES) + entry
    tree_id, tree = obj(OBJ_TREE, raw)
    cid, commit = forge_commit(v, tree_id, [snap.commit], signer)
    return cid, [commit, tree]


def incoming(objects: list[Obj]) -> Incoming:
    inc = Incoming()
    for t, data in objects:
        inc.add(t, data)
    return inc


def rejected_unchanged(b: Node, head: str, objects: list[Obj], match: str) -> None:
    before = state(b, "mine")
    with pytest.raises(SyncRejectedError, match=match) as info:
        b.svc.receive("mine", NodeId(bytes(32)), head, incoming(objects))
    assert info.value.data["reason"]
    assert state(b, "mine") == before


# -- round trips -----------------------------------------------------------------------------------


def test_clone_then_one_change_pull(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, vid = shared
    assert b.svc.log("mine") == a.svc.log("work")
    assert b.svc.get_secret("mine", "db/password") == b"hunter2"
    assert b.svc.list_secrets("mine", recursive=True) == a.svc.list_secrets("work", recursive=True)
    assert b.svc.verify("mine")["ok"]
    assert b.svc.vault_id("mine") == vid

    a.svc.set_secret("work", "db/password", b"new")
    head = a.svc.serve_heads(b.id, [vid])[vid]
    inc, refs = fetch(a, b.id, vid, head, b.svc.sync_haves("mine", []))
    # one commit, the root tree, the db/ tree, one blob: nothing else of the vault or its history
    assert sorted(t for t, _o in refs) == [OBJ_COMMIT, OBJ_TREE, OBJ_TREE, OBJ_BLOB]
    assert refs[0] == (OBJ_COMMIT, head)
    out = b.svc.receive("mine", a.id, head, inc)
    assert out["action"] == "fast-forward" and out["after"] == head and out["objects"] == 4
    assert b.svc.get_secret("mine", "db/password") == b"new"
    assert b.svc.log("mine") == a.svc.log("work")
    assert b.svc.head_verified("mine")
    assert not [e for e in os.listdir(b.svc.node_path / "vaults") if e.startswith(".incoming-")]

    fsck = subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=vault(b, "mine").repo.path,
                          capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stderr

    # pulling the same head again: nothing to send, nothing changes
    inc, refs = fetch(a, b.id, vid, head, b.svc.sync_haves("mine", []))
    assert refs == []
    assert b.svc.receive("mine", a.id, head, inc)["action"] == "up-to-date"


def test_plan_is_in_proportion_to_the_change(shared: tuple[Node, Node, Node, str]) -> None:
    a, _b, _c, _vid = shared
    v = vault(a, "work")
    old = v.snapshot().commit
    a.svc.import_secrets("work", {f"d{i}/s{j}": b"x" for i in range(5) for j in range(5)})
    a.svc.set_secret("work", "d3/s1", b"y")
    head = v.snapshot().commit
    assert len(transfer.plan(v, head, [head])) == 0
    # the last commit alone: commit, root, d3/, one blob
    assert len(transfer.plan(v, head, [v.repo.commit_info(head).parents[0]])) == 4
    # from the old head: 2 commits, the root twice, 5 dirs (d3 twice), 26 blobs
    assert len(transfer.plan(v, head, [old])) == 2 + 2 + 6 + 26
    # unknown haves are ignored: everything
    assert len(transfer.plan(v, head, ["0" * 40])) == len(transfer.plan(v, head, []))


def test_have_list_is_exponential_and_bounded(shared: tuple[Node, Node, Node, str]) -> None:
    a, _b, _c, _vid = shared
    for i in range(40):
        a.svc.set_secret("work", "n", str(i).encode())
    v = vault(a, "work")
    history = [c["commit"] for c in a.svc.log("work")]
    haves = transfer.have_list(v, history[0], ["f" * 40, history[5]])
    assert haves[:7] == [history[0], history[1], history[2], history[4], history[8], history[16], history[32]]
    assert history[-1] in haves and history[5] in haves and "f" * 40 not in haves
    assert len(haves) <= transfer.MAX_HAVES


def test_a_large_blob_in_parts(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, vid = shared
    a.svc.set_secret("work", "big", os.urandom(300_000))
    head = a.svc.serve_heads(b.id, [vid])[vid]
    refs = a.svc.serve_plan(b.id, vid, head, b.svc.sync_haves("mine", []))
    inc = Incoming()
    for (t, oid), data in zip(refs, a.svc.serve_read(vid, refs)):
        if t != OBJ_BLOB:
            inc.add(t, data, oid)
            continue
        for off in range(0, len(data), 65536):
            got = inc.add_part(t, data[off : off + 65536], off, len(data), oid)
            assert (got is None) == (off + 65536 < len(data))
    assert b.svc.receive("mine", a.id, head, inc)["action"] == "fast-forward"
    assert b.svc.get_secret("mine", "big") == a.svc.get_secret("work", "big")


def test_incoming_rejects_parts_out_of_order_and_caps_bytes() -> None:
    inc = Incoming()
    inc.add_part(OBJ_BLOB, b"abc", 0, 6)
    with pytest.raises(SyncRejectedError, match="out of order"):
        inc.add_part(OBJ_BLOB, b"def", 4, 6)
    with pytest.raises(SyncRejectedError, match="only in part"):
        inc.check_complete("0" * 40, lambda _o: True)
    small = Incoming(max_bytes=10)
    small.add(OBJ_BLOB, b"12345")
    with pytest.raises(SyncRejectedError, match="larger than 10 bytes"):
        small.add(OBJ_BLOB, b"123456")
    assert (small.count, small.nbytes) == (1, 5)
    small.add(OBJ_BLOB, b"12345")  # a duplicate is ignored
    assert (small.count, small.nbytes) == (1, 5)


def test_a_diverged_head_is_verified_then_given_to_the_merge(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, vid = shared
    a.svc.set_secret("work", "x", b"from a")
    b.svc.set_secret("mine", "y", b"from b")
    ours = vault(b, "mine").snapshot().commit
    head = a.svc.serve_heads(b.id, [vid])[vid]
    inc, _refs = fetch(a, b.id, vid, head, b.svc.sync_haves("mine", []))
    out = b.svc.receive("mine", a.id, head, inc)
    assert out["before"] == ours and out["action"] in ("kept", "merged")
    assert vault(b, "mine").repo.is_ancestor(ours, out["after"])
    assert transfer.has_object(vault(b, "mine"), head)  # the verified objects are kept for the merge


# -- bad transfers: each rejected, nothing changed -----------------------------------------------------


def test_altered_unknown_and_oversized_objects(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, _vid = shared
    head, objects = forge_secret(vault(a, "work"), a.kp)
    inc = Incoming()
    t, data = objects[2]
    with pytest.raises(SyncRejectedError, match="does not hash to its id"):
        inc.add(t, data[:-1] + bytes([data[-1] ^ 1]), obj(t, data)[0])
    with pytest.raises(SyncRejectedError, match="unknown type 7"):
        inc.add(7, b"x")
    with pytest.raises(SyncRejectedError, match="larger than"):
        inc.add(OBJ_COMMIT, b"x" * (grammar.MAX_COMMIT_BYTES + 1))
    with pytest.raises(SyncRejectedError, match="announced as"):
        inc.add_part(OBJ_BLOB, b"x", 0, transfer.MAX_BLOB_BYTES + 1)
    # an altered blob hashes to another id: the tree's entry is then missing
    rejected_unchanged(b, head, [objects[0], objects[1], (t, data[:-1] + bytes([data[-1] ^ 1]))], "was not sent")


def test_extra_and_missing_objects(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, _vid = shared
    head, objects = forge_secret(vault(a, "work"), a.kp)
    rejected_unchanged(b, head, [*objects, (OBJ_BLOB, b"unrelated")], "extra objects")
    rejected_unchanged(b, head, objects[:2], "incomplete")
    rejected_unchanged(b, head, objects[1:], "was sent but the head")
    rejected_unchanged(b, head, [objects[0], (OBJ_BLOB, objects[1][1]), objects[2]], "was not sent")


@pytest.mark.parametrize("entry,match", [
    (b"120000 " + b"a" * 26 + b"\0", "mode 120000"),
    (b"160000 " + b"a" * 26 + b"\0", "mode 160000"),
    (b"100644 zz-Plain-Name\0", "not a canonical vault name"),
    (b"100755 " + b"a" * 26 + b"\0", "mode 100755"),
])
def test_forbidden_tree_entries(shared: tuple[Node, Node, Node, str], entry: bytes, match: str) -> None:
    a, b, _c, _vid = shared
    v = vault(a, "work")
    head, objects = forge_raw_tree(v, entry + bytes(20), a.kp)
    with pytest.raises(SyncRejectedError, match=match):
        incoming(objects)
    assert not [e for e in os.listdir(b.svc.node_path / "vaults") if e.startswith(".incoming-")]


def test_a_name_valid_elsewhere_but_not_in_a_tree_of_secrets(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, _vid = shared
    v = vault(a, "work")
    snap = v.snapshot()
    blob_id, blob = obj(OBJ_BLOB, b"")
    entries = entries_of(v, snap.tree)
    entries["members"] = (MODE_BLOB, bytes.fromhex(blob_id))  # a name of .pk/, at the root of the secrets
    tree_id, tree = obj(OBJ_TREE, tree_bytes(entries))
    head, commit = forge_commit(v, tree_id, [snap.commit], a.kp)
    rejected_unchanged(b, head, [commit, tree, blob], "not a canonical encrypted name")


def test_unsigned_non_member_and_reader_commits(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, c, vid = shared
    v = vault(a, "work")
    head, objects = forge_secret(v, None)
    rejected_unchanged(b, head, objects, "not signed")
    head, objects = forge_secret(v, c.kp)
    rejected_unchanged(b, head, objects, "not a member")
    # C becomes a reader on A (B receives that), then C writes
    set_member(a, "work", c.id, "reader")
    share = vault(a, "work").snapshot().commit
    inc, _refs = fetch(a, b.id, vid, share, b.svc.sync_haves("mine", []))
    assert b.svc.receive("mine", a.id, share, inc)["action"] == "fast-forward"
    head, objects = forge_secret(vault(a, "work"), c.kp)
    rejected_unchanged(b, head, objects, "a reader, who may not change the vault")


def test_a_writer_changing_pk_and_a_future_commit(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, _vid = shared
    v = vault(b, "mine")
    snap = v.snapshot()
    # B (a writer) signs a commit that makes itself owner in .pk/members
    roles = dict(snap.members.roles)
    roles[b.id] = "owner"
    members_id, members = obj(OBJ_BLOB, Members(tuple(sorted(roles.items()))).encode())
    pk = entries_of(v, v.repo.entry(snap.tree, ".pk").oid)  # type: ignore[union-attr]
    pk["members"] = (MODE_BLOB, bytes.fromhex(members_id))
    pk_id, pk_tree = obj(OBJ_TREE, tree_bytes(pk))
    root = entries_of(v, snap.tree)
    root[".pk"] = (MODE_TREE, bytes.fromhex(pk_id))
    root_id, root_tree = obj(OBJ_TREE, tree_bytes(root))
    head, commit = forge_commit(v, root_id, [snap.commit], b.kp)
    rejected_unchanged(b, head, [commit, root_tree, pk_tree, members], "not an owner")
    head, commit = forge_commit(v, snap.tree, [snap.commit], a.kp, when=int(time.time()) + 3600)
    rejected_unchanged(b, head, [commit], "ahead of this node's clock")


def test_a_second_root_is_another_history(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, _c, _vid = shared
    v = vault(a, "work")
    snap = v.snapshot()
    root2, commit = forge_commit(v, snap.tree, [], a.kp)
    rejected_unchanged(b, root2, [commit], "another history")
    head, objects = forge_secret(v, a.kp, parents=[root2], when=int(time.time()))
    rejected_unchanged(b, head, [*objects, commit], "another history")


# -- clone ----------------------------------------------------------------------------------------


def clone_objects(a: Node, name: str) -> tuple[str, str, list[Obj]]:
    v = vault(a, name)
    head = v.snapshot().commit
    objects = [(t, transfer.read_object(v, t, oid)) for t, oid in transfer.plan(v, head, [])]
    return head, root_of(a, name), objects


def no_clone_left(n: Node) -> None:
    names = os.listdir(n.svc.node_path / "vaults")
    assert not [e for e in names if e.startswith(".incoming-") or e.endswith(".git")]
    assert n.svc.vault_names() == {}


def test_clone_refusals(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, c, vid = shared
    head, root, objects = clone_objects(a, "work")
    # C is no member
    with pytest.raises(SyncRejectedError, match="not shared with this node"):
        c.svc.clone(vid, root, head, "w", incoming(objects), a.id)
    no_clone_left(c)
    # C a member, but the invite comes from B (a writer) or names another root
    set_member(a, "work", c.id, "reader")
    head, root, objects = clone_objects(a, "work")
    with pytest.raises(SyncRejectedError, match="not an owner"):
        c.svc.clone(vid, root, head, "w", incoming(objects), b.id)
    with pytest.raises(SyncRejectedError, match="not the root"):
        c.svc.clone(vid, head, head, "w", incoming(objects), a.id)
    # another vault's id for these objects
    other = str(VaultId(bytes(16)))
    with pytest.raises(SyncRejectedError, match="another vault"):
        c.svc.clone(other, root, head, "w", incoming(objects), a.id)
    with pytest.raises(SyncRejectedError, match="extra objects"):
        c.svc.clone(vid, root, head, "w", incoming([*objects, (OBJ_BLOB, b"x")]), a.id)
    with pytest.raises(SyncRejectedError, match="incomplete"):
        c.svc.clone(vid, root, head, "w", incoming(objects[:-1]), a.id)
    no_clone_left(c)
    # a VaultId already held, a name taken
    with pytest.raises(VaultExistsError, match="already held"):
        b.svc.clone(vid, root, head, "other", incoming(objects), a.id)
    c.svc.create_vault("taken")
    with pytest.raises(VaultExistsError, match="already exists"):
        c.svc.clone(vid, root, head, "taken", incoming(objects), a.id)
    with pytest.raises(InvalidInputError):
        c.svc.clone(vid, root, head, "", incoming(objects), a.id)
    out = c.svc.clone(vid, root, head, "w", incoming(objects), a.id)
    assert out["head"] == head and c.svc.get_secret("w", "api/token") == b"tok"


def test_a_crashed_clone_is_swept(nodes: tuple[Node, Node, Node], tmp_path: Path) -> None:
    a, _b, _c = nodes
    left = transfer.quarantine(a.svc.node_path / "vaults", "deadbeef", None)
    assert left.name == ".incoming-deadbeef.git" and (left.stat().st_mode & 0o777) == 0o700
    assert a.svc.sweep_leftovers() == [left.name]
    assert not left.exists()


# -- serving refuses non-members uniformly --------------------------------------------------------------


def test_serving_refuses_non_members_uniformly(shared: tuple[Node, Node, Node, str]) -> None:
    a, b, c, vid = shared
    head = vault(a, "work").snapshot().commit
    unknown = str(VaultId(bytes(16)))
    messages = set()
    for asker, asked in ((c.id, vid), (c.id, unknown), (c.id, "not-an-id"), (b.id, unknown)):
        with pytest.raises(SyncRefusedError) as info:
            a.svc.serve_plan(asker, asked, head, [])
        messages.add(info.value.message)
    assert a.svc.serve_heads(c.id, [vid, unknown, "junk"]) == {}
    assert a.svc.serve_scan(c.id) == []
    assert a.svc.serve_heads(b.id, [vid, unknown]) == {vid: head}
    assert a.svc.serve_scan(b.id) == [{"vaultId": vid, "name": "work", "role": "writer", "head": head,
                                        "root": a.svc.sync_info("work")["root"]}]
    # a removed member is refused the same way
    set_member(a, "work", b.id, None)
    with pytest.raises(SyncRefusedError) as info:
        a.svc.serve_plan(b.id, vid, head, [])
    messages.add(info.value.message)
    assert len(messages) == 1
    assert a.svc.serve_heads(b.id, [vid]) == {} and a.svc.serve_scan(b.id) == []
    # a member asking for a commit outside the verified history
    set_member(a, "work", c.id, "reader")
    with pytest.raises(SyncRefusedError, match="not in the vault's verified history"):
        a.svc.serve_plan(c.id, vid, "0" * 40, [])
    with pytest.raises(InvalidInputError):
        a.svc.serve_plan(c.id, vid, head, ["0" * 40] * 65)
    with pytest.raises(InvalidInputError):
        a.svc.serve_heads(c.id, [vid] * 1025)


def test_a_clone_killed_before_its_index_entry_is_redone(shared: tuple[Node, Node, Node, str]) -> None:
    a, _b, c, vid = shared
    set_member(a, "work", c.id, "reader")
    head, root, objects = clone_objects(a, "work")
    leftover = c.svc.node_path / "vaults" / f"{vid}.git"  # renamed into place, never named in the index
    (leftover / "objects").mkdir(parents=True)
    c.svc.clone(vid, root, head, "w", incoming(objects), a.id)
    assert c.svc.log("w") == a.svc.log("work")
    assert c.svc.verify("w")["ok"]


def test_serve_read_only_from_a_held_vault(shared: tuple[Node, Node, Node, str]) -> None:
    a, _b, _c, vid = shared
    head = vault(a, "work").snapshot().commit
    assert a.svc.serve_read(vid, [(OBJ_COMMIT, head)])[0].startswith(b"tree ")
    for bad in (str(VaultId(bytes(16))), "junk"):
        with pytest.raises(SyncRefusedError):
            a.svc.serve_read(bad, [(OBJ_COMMIT, head)])
    with pytest.raises(VaultIntegrityError, match="is not a tree"):
        a.svc.serve_read(vid, [(OBJ_TREE, head)])


def _fork(svc: VaultService, vault: str) -> tuple[str, str, str]:
    """``(h1, h2, h3)``: h2 = a set on h1 (the branch), h3 = another set on h1 (not on the branch)."""
    from polykey.vaults import ops
    from polykey.vaults.format import split_path

    h1 = svc.set_secret(vault, "x", b"1")["commit"]
    h2 = svc.set_secret(vault, "y", b"2")["commit"]
    v = svc._vault(vault)  # noqa: SLF001 - the test writes a side commit on the real repository
    raw = Vault(v.repo.path, v.vault_id, svc.node_key, time.time, crypto.random_bytes)
    try:
        with raw.repo.write_lock():
            raw.repo.set_head(h1)
        h3 = ops.set_secret(raw, split_path("z"), b"3")["commit"]
        with raw.repo.write_lock():
            raw.repo.set_head(h2)
    finally:
        raw.close()
    return h1, h2, h3


def test_a_replacement_cut_short_by_a_crash_is_finished_at_the_next_open(tmp_path: Path) -> None:
    """Sync moves the branch to a head that does not descend from it (an adopted merge, changes
    re-applied): marker, state record, branch. A crash after the record leaves the branch at the old
    head; the next open finishes the move instead of reporting a rollback."""
    kp = KeyPair.generate()
    svc = VaultService(tmp_path / "node", kp)
    svc.create_vault("work")
    _h1, h2, h3 = _fork(svc, "work")
    v = svc._vault("work")  # noqa: SLF001
    marker = v.repo.path / REPLACING
    with v.repo.write_lock():
        marker.write_text(f"{h2} {h3}\n")
        svc._trust.accepted(v, h3)  # noqa: SLF001 - the state records the new head; then the "crash"
    svc.close()
    again = VaultService(tmp_path / "node", kp)
    try:
        assert again.get_secret("work", "z") == b"3" and again.log("work")[0]["commit"] == h3
        assert not marker.exists()
    finally:
        again.close()


def test_a_replacement_done_whole_leaves_no_marker_and_a_stray_marker_changes_nothing(tmp_path: Path) -> None:
    kp = KeyPair.generate()
    svc = VaultService(tmp_path / "node", kp)
    svc.create_vault("work")
    _h1, h2, h3 = _fork(svc, "work")
    v = svc._vault("work")  # noqa: SLF001
    with v.repo.write_lock():
        svc._trust.replace_head(v, h2, h3)  # noqa: SLF001
    v.trusted = h3
    assert svc.log("work")[0]["commit"] == h3 and not (v.repo.path / REPLACING).exists()
    # a marker that does not match the branch and the state is dropped; the branch stays
    (v.repo.path / REPLACING).write_text(f"{h2} {'0' * 40}\n")
    svc.close()
    again = VaultService(tmp_path / "node", kp)
    try:
        assert again.log("work")[0]["commit"] == h3 and not (v.repo.path / REPLACING).exists()
    finally:
        again.close()
