"""The decrypted tree-listing cache: its bounds, and listings that stay right as the vault changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from polykey.errors import SecretNotFoundError, VaultIntegrityError
from polykey.ids import VaultId
from polykey.keys.keypair import KeyPair
from polykey.vaults.cache import Listed, NameCache, TreeNames, listing_size
from polykey.vaults.format import EpochKeys
from polykey.vaults.repo import Entry
from polykey.vaults.service import VaultService


def _entries(n: int, tag: str = "x") -> tuple[Listed, ...]:
    return tuple(Listed(f"enc{tag}{i}", f"{tag}{i}", Entry("blob", "0" * 40)) for i in range(n))


def test_bounded_by_tree_count_least_recently_used_first() -> None:
    cache = TreeNames(max_trees=3, max_bytes=1 << 30)
    for k in "abc":
        cache.put((b"v", 0, k), _entries(1, k))
    assert cache.get((b"v", 0, "a")) is not None  # a is now the most recent
    cache.put((b"v", 0, "d"), _entries(1, "d"))
    assert len(cache) == 3
    assert cache.get((b"v", 0, "b")) is None  # the least recently used went
    assert all(cache.get((b"v", 0, k)) is not None for k in "acd")


def test_bounded_by_bytes() -> None:
    one = listing_size(_entries(10))
    cache = TreeNames(max_trees=1000, max_bytes=3 * one + one // 2)
    for i in range(10):
        cache.put((b"v", 0, str(i)), _entries(10))
        assert cache.size <= cache.max_bytes
    assert len(cache) == 3
    assert cache.size == 3 * one
    cache.put((b"v", 0, "huge"), _entries(1000))  # larger than the whole budget: not kept
    assert cache.get((b"v", 0, "huge")) is None and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_same_key_replaced_not_counted_twice() -> None:
    cache = TreeNames()
    cache.put((b"v", 0, "t"), _entries(5))
    cache.put((b"v", 0, "t"), _entries(5))
    assert len(cache) == 1 and cache.size == listing_size(_entries(5))


KEYS = EpochKeys.derive(VaultId(b"\x01" * 16), 0, b"\x02" * 32)
OTHER = EpochKeys.derive(VaultId(b"\x01" * 16), 1, b"\x03" * 32)


def test_names_a_decrypted_name_is_kept_both_ways_an_encrypted_one_one_way() -> None:
    names = NameCache()
    stored = names.stored(KEYS, "db")
    assert stored == KEYS.encrypt_name("db") and len(names) == 1  # plain -> stored only
    assert names.plain(KEYS, stored) == "db" and len(names) == 2
    other = OTHER.encrypt_name("api")
    assert names.plain(OTHER, other) == "api" and len(names) == 4
    assert names.stored(OTHER, "api") == other and len(names) == 4  # kept from the decryption
    assert names.stored(OTHER, "db") != stored  # per key: another epoch's name is another name


def test_names_a_forged_or_foreign_name_is_refused_and_not_kept() -> None:
    names = NameCache()
    for bad in (OTHER.encrypt_name("db"), "a" * 40, KEYS.encrypt_name("db").upper()):
        with pytest.raises(VaultIntegrityError):
            names.plain(KEYS, bad)
    assert len(names) == 0


def test_names_bounded_start_over_when_full() -> None:
    names = NameCache(limit=3)
    for part in ("a", "b", "c"):
        names.stored(KEYS, part)
    assert len(names) == 3
    assert names.plain(KEYS, KEYS.encrypt_name("d")) == "d" and len(names) == 2
    assert names.stored(KEYS, "a") == KEYS.encrypt_name("a") and len(names) == 3
    names.clear()
    assert len(names) == 0


def test_a_flat_vault_listed_after_a_write_decrypts_only_the_new_name(tmp_path: Path) -> None:
    svc = VaultService(tmp_path / "node", KeyPair.generate())
    svc.create_vault("w")
    svc.import_secrets("w", {f"S{i:03d}": b"v" for i in range(300)})
    svc.list_secrets("w", "", recursive=True)
    v = svc._vault("w")
    before = len(v.names)
    svc.set_secret("w", "NEW", b"n")  # one new name; the other 300 are looked up
    assert [r["path"] for r in svc.list_secrets("w", "", recursive=True)] == sorted([f"S{i:03d}" for i in range(300)] + ["NEW"])
    assert len(v.names) == before + 2  # NEW's stored name kept by the write, then its plain name by the listing
    v.wipe_keys()  # what locking does: the plain names go with the keys
    assert len(v.names) == 0
    svc.close()


def _paths(svc: VaultService, vault: str) -> list[tuple[str, str]]:
    return [(r["path"], r["type"]) for r in svc.list_secrets(vault, "", recursive=True)]


def test_listing_follows_writes_deletes_and_moves(tmp_path: Path) -> None:
    kp = KeyPair.generate()
    svc = VaultService(tmp_path / "node", kp)
    svc.create_vault("w")
    svc.import_secrets("w", {f"d{i % 3}/s{i}": b"v" for i in range(30)})
    first = _paths(svc, "w")
    assert len(svc.tree_names) > 0 and _paths(svc, "w") == first  # the second listing is from the cache
    svc.set_secret("w", "d1/new", b"n")
    svc.remove("w", "d0", recursive=True)
    svc.move("w", "d2", "moved/d2")
    svc.copy("w", "d1/s1", "top")
    svc.mkdir("w", "empty")
    svc.rename_vault("w", "renamed")
    got = _paths(svc, "renamed")
    assert ("d1/new", "secret") in got and ("top", "secret") in got and ("empty", "dir") in got
    assert not any(p.startswith("d0") or p.startswith("d2") for p, _t in got)
    assert ("moved/d2/s2", "secret") in got
    svc.close()
    fresh = VaultService(tmp_path / "node", kp)  # nothing cached: the oracle
    assert len(fresh.tree_names) == 0
    assert _paths(fresh, "renamed") == got
    assert [(r["path"], r["type"]) for r in fresh.list_secrets("renamed", "moved")] == [("moved/d2", "dir")]
    with pytest.raises(SecretNotFoundError):
        fresh.list_secrets("renamed", "d0")
    fresh.close()


def test_close_drops_the_cache(tmp_path: Path) -> None:
    svc = VaultService(tmp_path / "node", KeyPair.generate())
    svc.create_vault("w")
    svc.import_secrets("w", {"a/b": b"1", "c": b"2"})
    svc.list_secrets("w", "", recursive=True)
    assert len(svc.tree_names) >= 2 and len(svc.listings) == 1
    svc.close()  # what the agent does when it locks
    assert len(svc.tree_names) == 0 and svc.tree_names.size == 0
    assert len(svc.listings) == 0 and svc.listings.size == 0


def test_a_cached_answer_is_not_changed_by_its_caller(tmp_path: Path) -> None:
    svc = VaultService(tmp_path / "node", KeyPair.generate())
    svc.create_vault("w")
    svc.import_secrets("w", {"a": b"1", "b": b"2"})
    svc.list_secrets("w", "", recursive=True)  # notes the tree
    second = svc.list_secrets("w", "", recursive=True)  # unchanged: this answer is kept
    assert svc.listings.get((svc._vault("w").vault_id.raw, (), True)) is not None
    second.clear()
    assert [r["path"] for r in svc.list_secrets("w", "", recursive=True)] == ["a", "b"]
    svc.set_secret("w", "c", b"3")  # a new tree: the kept answer is not used
    assert [r["path"] for r in svc.list_secrets("w", "", recursive=True)] == ["a", "b", "c"]
    svc.close()


def test_open_repositories_are_bounded(tmp_path: Path) -> None:
    from polykey.vaults.service import MAX_OPEN_VAULTS

    svc = VaultService(tmp_path / "node", KeyPair.generate())
    for i in range(MAX_OPEN_VAULTS + 5):
        svc.create_vault(f"v{i}")
        svc.set_secret(f"v{i}", "k", b"%d" % i)
    assert len(svc._open) <= MAX_OPEN_VAULTS
    assert [svc.get_secret(f"v{i}", "k") for i in range(MAX_OPEN_VAULTS + 5)] == [
        b"%d" % i for i in range(MAX_OPEN_VAULTS + 5)]  # an evicted vault opens again
    assert len(svc._open) <= MAX_OPEN_VAULTS
    svc.close()
