"""VaultService behaviour: vault lifecycle, secret operations, history, errors, threads."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polykey.errors import (
    CommitNotFoundError,
    InvalidInputError,
    SecretExistsError,
    SecretIsDirectoryError,
    SecretNotDirectoryError,
    SecretNotFoundError,
    VaultExistsError,
    VaultNotFoundError,
)
from polykey.keys.keypair import KeyPair
from polykey.vaults.service import VaultService


class Clock:
    def __init__(self) -> None:
        self.t = itertools.count(1_700_000_000)

    def __call__(self) -> float:
        return float(next(self.t))


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[VaultService]:
    s = VaultService(tmp_path / "node", KeyPair.generate(), clock=Clock())
    s.create_vault("work")
    yield s
    s.close()


def test_create_list_rename_delete(svc: VaultService, tmp_path: Path) -> None:
    rows = svc.list_vaults()
    assert [(r["name"], r["role"]) for r in rows] == [("work", "owner")]
    vid = rows[0]["vaultId"]
    with pytest.raises(VaultExistsError):
        svc.create_vault("work")
    svc.create_vault("home")
    with pytest.raises(VaultExistsError):
        svc.rename_vault("home", "work")
    svc.rename_vault("work", "job")
    assert [r["name"] for r in svc.list_vaults()] == ["home", "job"]
    svc.set_secret(vid, "x", b"1")  # a VaultId names the vault too
    assert svc.get_secret("job", "x") == b"1"
    svc.delete_vault("job")
    assert [r["name"] for r in svc.list_vaults()] == ["home"]
    assert not (tmp_path / "node" / "vaults" / f"{vid}.git").exists()
    for op in (lambda: svc.get_secret("job", "x"), lambda: svc.delete_vault("job"), lambda: svc.log("job")):
        with pytest.raises(VaultNotFoundError):
            op()


@pytest.mark.parametrize("bad", ["", "a/b", "a:b", " x", "\x01", "v" + "0" * 26])
def test_bad_vault_names(svc: VaultService, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        svc.create_vault(bad)


def test_index_survives_reopen(svc: VaultService, tmp_path: Path) -> None:
    svc.set_secret("work", "a", b"1")
    again = VaultService(tmp_path / "node", svc.keypair)
    assert again.get_secret("work", "a") == b"1"
    other = VaultService(tmp_path / "node2", KeyPair.generate())
    assert other.list_vaults() == []


def test_set_get_binary_and_overwrite(svc: VaultService) -> None:
    value = bytes(range(256)) * 3
    assert svc.set_secret("work", "bin/blob", value)["created"] is True
    assert svc.get_secret("work", "/bin/blob") == value
    assert svc.set_secret("work", "bin/blob", b"")["created"] is False
    assert svc.get_secret("work", "bin/blob") == b""


def test_file_directory_conflicts(svc: VaultService) -> None:
    svc.set_secret("work", "db/password", b"p")
    with pytest.raises(SecretIsDirectoryError):
        svc.set_secret("work", "db", b"x")
    with pytest.raises(SecretNotDirectoryError):
        svc.set_secret("work", "db/password/inner", b"x")
    with pytest.raises(SecretIsDirectoryError):
        svc.get_secret("work", "db")
    with pytest.raises(SecretNotFoundError):
        svc.get_secret("work", "db/user")
    with pytest.raises(SecretNotDirectoryError):
        svc.mkdir("work", "db/password")
    with pytest.raises(SecretExistsError):
        svc.mkdir("work", "db")
    with pytest.raises(SecretNotDirectoryError):
        svc.mkdir("work", "db/password/x")
    with pytest.raises(SecretIsDirectoryError):
        svc.remove("work", "db")


def test_ls_mkdir_rm(svc: VaultService) -> None:
    svc.import_secrets("work", {"a/1": b"1", "a/2": b"2", "a/b/3": b"3", "top": b"t"})
    svc.mkdir("work", "empty/deeper")
    assert [(r["path"], r["type"]) for r in svc.list_secrets("work", "")] == [
        ("a", "dir"), ("empty", "dir"), ("top", "secret")]
    assert [r["path"] for r in svc.list_secrets("work", "a", recursive=True)] == ["a/1", "a/2", "a/b", "a/b/3"]
    assert svc.list_secrets("work", "empty") == [{"path": "empty/deeper", "name": "deeper", "type": "dir"}]
    assert svc.list_secrets("work", "top") == [{"path": "top", "name": "top", "type": "secret"}]
    with pytest.raises(SecretNotFoundError):
        svc.list_secrets("work", "nothing")
    assert svc.remove("work", "empty/deeper")["removed"] == 0  # an empty directory needs no -r
    assert svc.remove("work", "a", recursive=True)["removed"] == 3
    assert [r["path"] for r in svc.list_secrets("work", "", recursive=True)] == ["top"]
    with pytest.raises(SecretNotFoundError):
        svc.remove("work", "a/1")


def test_user_secrets_named_keep_are_not_directory_markers(svc: VaultService) -> None:
    svc.mkdir("work", "d")
    svc.set_secret("work", "d/.keep", b"mine")
    svc.set_secret("work", ".keep", b"top")
    svc.copy("work", "d", "e")
    svc.move("work", "e", "f")
    assert [r["path"] for r in svc.list_secrets("work", "", True)] == [".keep", "d", "d/.keep", "f", "f/.keep"]
    assert svc.get_secret("work", "f/.keep") == b"mine"
    svc.remove("work", "f/.keep")
    assert svc.list_secrets("work", "f") == []  # the copied mkdir marker keeps it
    assert svc.verify("work")["ok"]


def test_rename_to_a_name_that_reads_as_a_vault_id_is_refused(svc: VaultService) -> None:
    other = svc.create_vault("other")["vaultId"]
    with pytest.raises(InvalidInputError, match="look like a VaultId"):
        svc.rename_vault("work", other)
    assert [r["name"] for r in svc.list_vaults()] == ["other", "work"]


def test_history_of_an_unknown_path(svc: VaultService) -> None:
    with pytest.raises(SecretNotFoundError):
        svc.history("work", "never/written")


def test_move_and_copy(svc: VaultService) -> None:
    svc.import_secrets("work", {"d/x": b"X", "d/y/z": b"Z", "f": b"F"})
    svc.mkdir("work", "dest")
    assert svc.move("work", "f", "dest")["path"] == "dest/f"
    assert svc.copy("work", "d", "e")["path"] == "e"
    assert svc.get_secret("work", "e/y/z") == b"Z" and svc.get_secret("work", "d/y/z") == b"Z"
    svc.move("work", "e/x", "g")
    assert svc.get_secret("work", "g") == b"X"
    svc.copy("work", "g", "dest/f")  # secret over secret: replaced
    assert svc.get_secret("work", "dest/f") == b"X"
    with pytest.raises(SecretNotDirectoryError):
        svc.move("work", "d", "g")  # a directory over a secret
    with pytest.raises(InvalidInputError):
        svc.move("work", "d", "d/y")
    with pytest.raises(SecretNotFoundError):
        svc.move("work", "nope", "x")
    assert [r["path"] for r in svc.list_secrets("work", "", True)] == [
        "d", "d/x", "d/y", "d/y/z", "dest", "dest/f", "e", "e/y", "e/y/z", "g"]


def test_history_stat_revert_version(svc: VaultService) -> None:
    first = svc.set_secret("work", "k", b"one")["commit"]
    svc.set_secret("work", "other", b"o")
    svc.set_secret("work", "k", b"two!")
    hist = svc.history("work", "k")
    assert [h["action"] for h in hist] == ["modified", "created"]
    assert [h["size"] for h in hist] == [4, 3]
    st_ = svc.stat("work", "k")
    assert st_["revisions"] == 2 and st_["size"] == 4 and st_["created"] < st_["modified"]
    assert st_["author"] == str(svc.keypair.node_id)
    assert svc.get_secret("work", "k", commit=first[:8]) == b"one"
    out = svc.revert("work", "k", first)
    assert out["revertedTo"] == first and svc.get_secret("work", "k") == b"one"
    assert len(svc.history("work", "k")) == 3
    v = svc.version("work", first)
    assert v["commit"] == first and v["secrets"] == [{"path": "k", "type": "secret"}]
    svc.remove("work", "k")
    assert svc.history("work", "k")[0]["action"] == "removed"
    with pytest.raises(CommitNotFoundError):
        svc.version("work", "deadbeef")
    with pytest.raises(InvalidInputError):
        svc.version("work", "not-hex")
    assert len(svc.log("work", 2)) == 2


def test_generate(svc: VaultService) -> None:
    out = svc.generate("work", "pw", 40, "hex", False)
    assert "value" not in out and out["length"] == 40
    value = svc.get_secret("work", "pw")
    assert len(value) == 40 and set(value.decode()) <= set("0123456789abcdef")
    shown = svc.generate("work", "pw2", 12, "ab", True)
    assert svc.get_secret("work", "pw2").decode() == shown["value"] and set(shown["value"]) <= {"a", "b"}
    for length, charset in ((0, "alnum"), (5000, "alnum"), (8, "a"), (8, "a\nb")):
        with pytest.raises(InvalidInputError):
            svc.generate("work", "x", length, charset, False)


def test_members(svc: VaultService) -> None:
    assert svc.members("work") == [{"nodeId": str(svc.keypair.node_id), "role": "owner", "self": True, "lastSync": None}]


def test_threads_on_different_vaults(svc: VaultService) -> None:
    names = [f"v{i}x" for i in range(4)]
    for n in names:
        svc.create_vault(n)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for i in range(15):
                svc.set_secret(name, f"s{i}", f"{name}-{i}".encode())
                assert svc.get_secret(name, f"s{i}") == f"{name}-{i}".encode()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in names:
        assert len(svc.list_secrets(n, "")) == 15
        assert svc.verify(n)["ok"]


_names = itertools.count()
path_parts = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/\x7f"),
                     min_size=1, max_size=12).filter(lambda c: c not in (".", ".."))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.lists(path_parts, min_size=1, max_size=3).map("/".join), st.binary(max_size=300),
                       min_size=1, max_size=8))
def test_import_then_read_round_trip(svc: VaultService, items: dict[str, bytes]) -> None:
    paths = set(items)
    if any(other.startswith(p + "/") for p in paths for other in paths):
        with pytest.raises(InvalidInputError):
            svc.import_secrets("work", items)
        return
    name = f"p{next(_names)}"
    svc.create_vault(name)
    svc.import_secrets(name, items)
    for path, value in items.items():
        assert svc.get_secret(name, path) == value
    assert {r["path"] for r in svc.list_secrets(name, "", True) if r["type"] == "secret"} == paths


def test_values_read_are_fresh_objects_the_agent_may_wipe(svc: VaultService) -> None:
    """The agent zeroes every value it has replied with (docs/security.md "Memory"): a read must
    never hand out an object that a cache or the next read shares."""
    from polykey.crypto import memory

    svc.create_vault("w")
    svc.set_secret("w", "k", b"the value")
    first = svc.get_secret("w", "k")
    memory.wipe(first)
    assert svc.get_secret("w", "k") == b"the value"
    memory.wipe(svc.get_secret("w", "k", svc.log("w")[0]["commit"]))
    assert svc.get_secret("w", "k") == b"the value"


def test_reads_keep_nothing_per_request(svc: VaultService) -> None:
    """pygit2 keeps a reference to every Tree lookup key: a read must not hand it a fresh string
    each time (that leaked ~100 bytes per `secrets get` in a long-running agent)."""
    import tracemalloc

    svc.create_vault("app")
    svc.set_secret("app", "db/password", b"v")
    for _ in range(200):  # warm every cache
        svc.get_secret("app", "db/password")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5_000):
            svc.get_secret("app", "db/password")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes kept by 5,000 reads"  # was ~500,000 (≈100 bytes a read)
