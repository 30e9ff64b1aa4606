"""The strict grammar of vault objects (docs/spec/vault-format.md section 8.1), on scripted bytes."""

from __future__ import annotations

import pytest

from polykey.errors import VaultIntegrityError
from polykey.vaults import grammar
from polykey.vaults.objects import MODE_BLOB, MODE_TREE, commit_header, signed_commit_bytes, tree_bytes

OID = "ab" * 20
NAME = "0123456789abcdefghijklmnopqrstuv"[:26]
IDENT = "vnode <vnode@polykey> 1700000000 +0000"


def _entry(mode: bytes, name: str) -> bytes:
    return mode + b" " + name.encode() + b"\0" + bytes.fromhex(OID)


def test_trees_we_write_parse() -> None:
    data = tree_bytes({".pk": (MODE_TREE, bytes(20)), NAME: (MODE_BLOB, bytes(20)), ".keep": (MODE_BLOB, bytes(20))})
    entries = grammar.parse_tree(OID, data)
    grammar.check_secret_tree(OID, entries, True)
    assert [(e.name, e.is_tree) for e in entries] == [(".keep", False), (".pk", True), (NAME, False)]


@pytest.mark.parametrize("data,words", [
    (_entry(b"120000", NAME), "mode 120000"),  # a symlink
    (_entry(b"160000", NAME), "mode 160000"),  # a gitlink
    (_entry(b"100755", NAME), "mode 100755"),
    (_entry(b"040000", NAME), "mode 040000"),  # git writes trees as 40000
    (_entry(b"100644", "b" * 26) + _entry(b"100644", "a" * 26), "order"),
    (_entry(b"100644", "a" * 26) + _entry(b"100644", "a" * 26), "duplicated"),
    (_entry(b"100644", NAME)[:-1], "truncated"),
    (_entry(b"100644", "") , "empty name"),
])
def test_bad_trees(data: bytes, words: str) -> None:
    with pytest.raises(VaultIntegrityError, match=words) as info:
        grammar.parse_tree(OID, data)
    assert info.value.data["object"] == OID and OID[:12] in info.value.message


@pytest.mark.parametrize("names,root,words", [
    ([("A" * 26, False)], False, "canonical"),
    (["x" * 26], False, "canonical"),  # w..z are not base32hex
    ([("a" * 25, False)], False, "canonical"),
    ([(".pk", True)], False, ".pk entry"),
    ([(".keep", True)], False, ".keep entry"),
    ([(NAME, False)], True, "no .pk"),
])
def test_bad_names(names: list[tuple[str, bool] | str], root: bool, words: str) -> None:
    entries = [grammar.TreeEntry(n, False, OID) if isinstance(n, str) else grammar.TreeEntry(n[0], n[1], OID)
               for n in names]
    with pytest.raises(VaultIntegrityError, match=words):
        grammar.check_secret_tree(OID, entries, root)


def test_pk_tree_rules() -> None:
    good = [grammar.TreeEntry("keys", True, OID), grammar.TreeEntry("members", False, OID),
            grammar.TreeEntry("vault", False, OID)]
    grammar.check_pk_tree(OID, good)
    with pytest.raises(VaultIntegrityError):
        grammar.check_pk_tree(OID, good + [grammar.TreeEntry("extra", False, OID)])
    grammar.check_keys_tree(OID, [grammar.TreeEntry("00000000", False, OID)])
    for bad in ("0000000", "0000000G", "0000000A"):
        with pytest.raises(VaultIntegrityError):
            grammar.check_keys_tree(OID, [grammar.TreeEntry(bad, False, OID)])


def test_commits_we_write_parse() -> None:
    data = signed_commit_bytes(OID, [OID], "vnode", "vnode@polykey", 1, "set secret\n",
                               lambda p: "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n")
    header = grammar.parse_commit(OID, data)
    assert header == grammar.CommitHeader(OID, (OID,), True)
    unsigned = (commit_header(OID, [], "vnode", "vnode@polykey", 1) + "\ncreate vault\n").encode()
    assert grammar.parse_commit(OID, unsigned) == grammar.CommitHeader(OID, (), False)


def _commit(headers: str, message: str = "set secret\n") -> bytes:
    return (headers + "\n" + message).encode("utf-8")


@pytest.mark.parametrize("data,words", [
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter {IDENT}\nencoding UTF-8\n"), "headers"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter {IDENT}\nmergetag x\n"), "headers"),
    (_commit(f"author {IDENT}\ntree {OID}\ncommitter {IDENT}\n"), "headers"),
    (_commit(f"tree {OID}\n" + f"parent {OID}\n" * 3 + f"author {IDENT}\ncommitter {IDENT}\n"), "parents"),
    (_commit(f"tree {OID[:-1]}\nauthor {IDENT}\ncommitter {IDENT}\n"), "full object id"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter other <other@polykey> 1700000000 +0000\n"), "committer other"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter vnode <x@polykey> 1700000000 +0000\n"), "committer other"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter vnode <vnode@polykey> 1700000001 +0000\n"), "committer other"),
    (_commit(f"tree {OID}\nauthor vnode <vnode@polykey> 1 +0100\ncommitter {IDENT}\n"), "name <email>"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter {IDENT}\n", "café\n"), "printable ASCII"),
    (_commit(f"tree {OID}\nauthor {IDENT}\ncommitter {IDENT}\n", "x" * 2000), "printable ASCII"),
    (f"tree {OID}\nauthor {IDENT}\ncommitter {IDENT}\n".encode(), "separator"),
    (b"x" * (grammar.MAX_COMMIT_BYTES + 1), "larger"),
])
def test_bad_commits(data: bytes, words: str) -> None:
    with pytest.raises(VaultIntegrityError, match=words):
        grammar.parse_commit(OID, data)


def test_every_operation_writes_objects_the_grammar_accepts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What each write of today's code leaves passes the grammar (and so the verification rule)."""
    import subprocess

    from polykey.keys.keypair import KeyPair
    from polykey.vaults.service import VaultService

    with VaultService(tmp_path / "node", KeyPair.generate()) as svc:
        svc.create_vault("w")
        svc.set_secret("w", "a/b/c", b"1")
        svc.mkdir("w", "empty/dir")
        svc.import_secrets("w", {f"bulk/k{i}": b"v" for i in range(50)})
        svc.copy("w", "a", "copied")
        svc.move("w", "copied", "moved")
        svc.generate("w", "gen/pw")
        svc.revert("w", "a/b/c", svc.log("w")[-2]["commit"])
        svc.remove("w", "bulk", recursive=True)
        svc.remove("w", "empty", recursive=True)
        assert svc.verify("w")["commits"] == 10
        v = svc._vault("w")  # noqa: SLF001
        for c in v.repo.new_commits(v.repo.head() or "", None):
            header = grammar.parse_commit(c, v.repo.raw(c, "commit", grammar.MAX_COMMIT_BYTES))
            grammar.check_secret_tree(header.tree, grammar.parse_tree(header.tree, v.repo.raw(
                header.tree, "tree", grammar.MAX_TREE_BYTES)), True)
        r = subprocess.run(["git", "-C", str(v.repo.path), "fsck", "--strict", "--no-dangling"], capture_output=True)
        assert r.returncode == 0, r.stderr
