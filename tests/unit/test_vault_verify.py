"""History verification against forged, unsigned, unauthorised and tampered commits, and stock git.

Bad commits are crafted at the git level with the real repository, real keys and real signatures;
`git verify-commit` and `git fsck` are the real git binary.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest

from polykey.crypto import sshsig
from polykey.errors import (
    VaultIntegrityError,
    VaultPermissionError,
    VaultVerificationError,
)
from polykey.ids import NodeId
from polykey.keys.keypair import KeyPair
from polykey.vaults.format import Members, WrappedKeys, join_path, keys_file_name
from polykey.vaults.identity import NodeKey, author_email
from polykey.vaults.index import NameIndex
from polykey.vaults.pack import pack_ids
from polykey.vaults.repo import BLOB, Change, Entry
from polykey.vaults.service import VaultService
from polykey.vaults.vault import Vault


@pytest.fixture
def owner() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture
def svc(tmp_path: Path, owner: KeyPair) -> Iterator[VaultService]:
    s = VaultService(tmp_path / "node", owner)
    s.create_vault("work")
    s.set_secret("work", "db/password", b"hunter2")
    s.set_secret("work", "api/token", b"tok")
    yield s
    s.close()


def vault_of(svc: VaultService) -> Vault:
    return svc._vault("work")  # noqa: SLF001 - tests craft commits on the real repository


class Forger:
    """A commit signer that may claim another author and sign other bytes than the commit."""

    def __init__(self, key: KeyPair, author: NodeId, sign_payload: bytes | None) -> None:
        self.key, self.node_id, self.sign_payload = key, author, sign_payload

    def sign(self, payload: bytes) -> str:
        return sshsig.sign(self.key.seed, self.sign_payload if self.sign_payload is not None else payload)


def craft(v: Vault, make: Callable[[], dict[tuple[str, ...], Change]], signer: KeyPair | None,
          author: NodeId | None = None, message: str = "set secret\n",
          sign_payload: bytes | None = None) -> str:
    """A commit on HEAD with raw (already encrypted) tree changes, signed as asked."""
    with v.repo.write_lock():
        head = v.repo.head()
        assert head is not None
        tree = v.repo.apply(v.repo.commit_info(head).tree, make())
        who = author or (signer.node_id if signer else v.me)
        when = max(int(time.time()), v.repo.commit_info(head).time)  # commit times never go back
        if signer is None:
            v.repo._flush()  # noqa: SLF001 - store the staged objects, then commit without a signature
            repo = pygit2.Repository(str(v.repo.path))
            sig = pygit2.Signature(str(who), author_email(who), when, 0)
            oid = repo.create_commit("refs/heads/main", sig, sig, message, pygit2.Oid(hex=tree),
                                     [pygit2.Oid(hex=head)])
            return str(oid)
        return v.repo.commit(tree, [head], message, Forger(signer, who, sign_payload), when=when)


def secret_change(v: Vault, path: str, value: bytes) -> dict[tuple[str, ...], Change]:
    snap = v.snapshot()
    assert snap.keys is not None
    parts = tuple(path.split("/"))
    blob = v.repo.write_blob(snap.keys.encrypt_secret(join_path(parts), value))
    return {v.encrypt_path(snap.keys, parts): Entry(BLOB, blob)}


def member_change(v: Vault, owner: KeyPair, new: NodeId, role: str) -> dict[tuple[str, ...], Change]:
    snap = v.snapshot()
    name = keys_file_name(snap.info.epoch)
    old = WrappedKeys.decode(v.repo.read_blob(v.repo.entry(snap.tree, f".pk/keys/{name}").oid))  # type: ignore[union-attr]
    secret = old.unwrap(NodeKey(owner))
    roles = dict(snap.members.roles)
    roles[new] = role
    members = Members(tuple(sorted(roles.items())))
    wrapped = WrappedKeys.create(snap.info.epoch, secret, list(roles), v.vault_id)  # format v2: with its commitment
    return {
        (".pk", "members"): Entry(BLOB, v.repo.write_blob(members.encode())),
        (".pk", "keys", name): Entry(BLOB, v.repo.write_blob(wrapped.encode())),
    }


def flip_packed_object(repo: Path, oid: str) -> None:
    """Flip one bit inside the compressed data of ``oid`` in whichever pack holds it."""
    for idx in (repo / "objects" / "pack").glob("*.idx"):
        ids = pack_ids(idx)
        if oid in ids:
            i, n = ids.index(oid), len(ids)
            (offset,) = struct.unpack_from(">I", idx.read_bytes(), 8 + 1024 + 24 * n + 4 * i)
            pack = idx.with_suffix(".pack")
            data = bytearray(pack.read_bytes())
            pos = offset
            while data[pos] & 0x80:
                pos += 1
            data[pos + 6] ^= 0x01
            os.chmod(pack, 0o600)
            pack.write_bytes(bytes(data))
            return
    raise AssertionError("object not found in any pack")


def expect_bad(svc: VaultService, commit: str, words: str) -> None:
    with pytest.raises(VaultVerificationError) as info:
        svc.verify("work")
    assert info.value.data["commit"] == commit
    assert commit in info.value.message and words in info.value.message


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def test_clean_history_verifies(svc: VaultService) -> None:
    out = svc.verify("work")
    assert out == {"ok": True, "commits": 3, "head": vault_of(svc).repo.head()}


def test_stock_git_verifies_signatures_and_fsck_is_clean(svc: VaultService, tmp_path: Path) -> None:
    svc.mkdir("work", "d")
    svc.move("work", "api", "d")
    repo = vault_of(svc).repo.path
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("".join(
        f"{m['nodeId']}@polykey {sshsig.public_key_line(NodeId.from_text(m['nodeId']).raw)}\n"
        for m in svc.members("work")
    ))
    commits = [c["commit"] for c in svc.log("work")]
    assert len(commits) == 5
    for c in commits:
        r = git(repo, "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", c)
        assert r.returncode == 0, r.stderr
        assert 'Good "git" signature' in r.stderr
    r = git(repo, "fsck", "--strict", "--no-dangling")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    messages = git(repo, "log", "--format=%B").stdout
    for name in ("db", "password", "api", "token"):
        assert name not in messages


def test_stock_git_rejects_a_stranger(svc: VaultService, tmp_path: Path) -> None:
    stranger = KeyPair.generate()
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"{stranger.node_id}@polykey {sshsig.public_key_line(stranger.public_key)}\n")
    head = svc.log("work", 1)[0]["commit"]
    r = git(vault_of(svc).repo.path, "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}",
            "verify-commit", head)
    assert r.returncode != 0


def test_missing_signature(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    bad = craft(v, lambda: secret_change(v, "db/password", b"evil"), None)
    with pytest.raises(VaultVerificationError, match="not signed"):  # nothing is written on an unverified head
        svc.set_secret("work", "later", b"x")
    unguarded = Vault(v.repo.path, v.vault_id, NodeKey(owner), v.clock, v.rng)  # as one with disk access
    craft(unguarded, lambda: secret_change(unguarded, "later", b"x"), owner)
    unguarded.close()
    expect_bad(svc, bad, "not signed")  # the first bad commit is named, not the newest


def test_signature_over_other_content(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    bad = craft(v, lambda: secret_change(v, "db/password", b"evil"), owner, sign_payload=b"something else")
    expect_bad(svc, bad, "signature is invalid")


def test_signed_by_one_key_claimed_by_another(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    bad = craft(v, lambda: secret_change(v, "db/password", b"evil"), KeyPair.generate(), author=owner.node_id)
    expect_bad(svc, bad, "not the signer")


def test_commit_by_non_member(svc: VaultService) -> None:
    v = vault_of(svc)
    bad = craft(v, lambda: secret_change(v, "db/password", b"evil"), KeyPair.generate())
    expect_bad(svc, bad, "was not a member")


def test_reader_and_writer_rules(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    reader, writer = KeyPair.generate(), KeyPair.generate()
    craft(v, lambda: member_change(v, owner, reader.node_id, "reader"), owner, message="add member\n")
    craft(v, lambda: member_change(v, owner, writer.node_id, "writer"), owner, message="add member\n")
    ok = craft(v, lambda: secret_change(v, "db/password", b"by writer"), writer)
    assert svc.verify("work")["ok"]
    assert svc.get_secret("work", "db/password") == b"by writer"
    assert {m["role"] for m in svc.members("work")} == {"owner", "reader", "writer"}
    escalate = craft(v, lambda: member_change(v, owner, writer.node_id, "owner"), writer, message="add member\n")
    expect_bad(svc, escalate, "not an owner")
    assert ok != escalate


def test_commit_by_reader(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    reader = KeyPair.generate()
    craft(v, lambda: member_change(v, owner, reader.node_id, "reader"), owner, message="add member\n")
    bad = craft(v, lambda: secret_change(v, "db/password", b"evil"), reader)
    expect_bad(svc, bad, "a reader")


def test_reader_node_reads_but_cannot_write(svc: VaultService, owner: KeyPair, tmp_path: Path) -> None:
    v = vault_of(svc)
    reader = KeyPair.generate()
    craft(v, lambda: member_change(v, owner, reader.node_id, "reader"), owner, message="add member\n")
    node2 = tmp_path / "node2"
    other = VaultService(node2, reader)
    shutil.copytree(v.repo.path, node2 / "vaults" / v.repo.path.name)
    NameIndex(node2 / "vaults", NodeKey(reader)).update(lambda e: e.__setitem__("shared", v.vault_id))
    assert other.get_secret("shared", "db/password") == b"hunter2"
    assert other.list_vaults()[0]["role"] == "reader"
    with pytest.raises(VaultPermissionError):
        other.set_secret("shared", "db/password", b"x")
    assert other.verify("shared")["ok"]


def test_swapped_ciphertexts_fail_integrity(svc: VaultService, owner: KeyPair) -> None:
    """Even a commit signed by an owner cannot move ciphertext to another path undetected."""
    v = vault_of(svc)
    snap = v.snapshot()
    assert snap.keys is not None
    a, b = ("db", "password"), ("api", "token")
    ea, eb = v.find(snap, a), v.find(snap, b)
    assert ea and eb
    bad = craft(v, lambda: {v.encrypt_path(snap.keys, a): eb, v.encrypt_path(snap.keys, b): ea}, owner)
    with pytest.raises(VaultIntegrityError):
        svc.get_secret("work", "db/password")
    expect_bad(svc, bad, "failed authentication")


def test_tampered_object_file(svc: VaultService, tmp_path: Path, owner: KeyPair) -> None:
    v = vault_of(svc)
    snap = v.snapshot()
    entry = v.find(snap, ("db", "password"))
    assert entry is not None
    svc._trust.flush()  # noqa: SLF001 - as an agent stop records its verified heads
    flip_packed_object(v.repo.path, entry.oid)
    fresh = VaultService(tmp_path / "node", owner)  # no object cached in memory
    with pytest.raises(VaultIntegrityError):
        fresh.get_secret("work", "db/password")
    assert fresh.get_secret("work", "api/token") == b"tok"
    with pytest.raises(VaultVerificationError) as info:
        fresh.verify("work")
    assert "corrupt" in info.value.message
    assert git(v.repo.path, "fsck").returncode != 0


def test_member_without_a_wrapped_key(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)

    def members_only() -> dict[tuple[str, ...], Change]:
        snap = v.snapshot()
        roles = dict(snap.members.roles)
        roles[KeyPair.generate().node_id] = "writer"
        return {(".pk", "members"): Entry(BLOB, v.repo.write_blob(Members(tuple(sorted(roles.items()))).encode()))}

    bad = craft(v, members_only, owner, message="add member\n")
    expect_bad(svc, bad, "do not match its member list")


def test_a_tree_deeper_than_any_secret_path_is_refused(svc: VaultService, owner: KeyPair) -> None:
    v = vault_of(svc)
    deep = "/".join(f"d{i}" for i in range(40))  # split_path allows 32 levels; git does not care
    commit = craft(v, lambda: secret_change(v, deep, b"x"), owner)
    expect_bad(svc, commit, "nested deeper than 32 levels")
    with pytest.raises(VaultIntegrityError, match="nested deeper than 32 levels"):
        svc.list_secrets("work", "", recursive=True)
