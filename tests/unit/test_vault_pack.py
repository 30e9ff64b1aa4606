"""The bulk-import packfile writer: stock git and libgit2 read what it writes."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pygit2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polykey.vaults.objects import MODE_BLOB, MODE_TREE, signed_commit_bytes, tree_bytes
from polykey.vaults.pack import build_pack, object_id, write_pack

_n = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=40))
def test_pack_round_trip_through_libgit2_and_git(tmp_path: Path, blobs: list[bytes]) -> None:
    repo_path = tmp_path / f"r{next(_n)}.git"
    repo = pygit2.init_repository(str(repo_path), bare=True)
    ids = write_pack(repo_path / "objects", blobs)
    assert ids == [object_id(b"blob", b).hex() for b in blobs]
    for oid, data in zip(ids, blobs):
        assert repo[oid].data == data
    idx = next((repo_path / "objects" / "pack").glob("*.idx"))
    r = subprocess.run(["git", "verify-pack", str(idx)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for oid, data in zip(ids, blobs):
        out = subprocess.run(["git", "-C", str(repo_path), "cat-file", "blob", oid], capture_output=True)
        assert out.stdout == data


def test_duplicates_are_packed_once_and_large_sizes_encode() -> None:
    pack, idx, ids = build_pack([b"a", b"a", b"x" * 70000])
    assert int.from_bytes(pack[8:12], "big") == 2 and ids[0] == ids[1]
    assert idx[:8] == b"\xfftOc\x00\x00\x00\x02"


names = st.text(st.sampled_from("0123456789abcdefghijklmnopqrstuv.-_"), min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and n != ".git"
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(names, st.booleans(), min_size=1, max_size=12))
def test_tree_bytes_match_libgit2(tmp_path: Path, spec: dict[str, bool]) -> None:
    repo = pygit2.Repository(str(tmp_path / "t.git")) if (tmp_path / "t.git").exists() else \
        pygit2.init_repository(str(tmp_path / "t.git"), bare=True)
    blob = repo.create_blob(b"x")
    empty = repo.TreeBuilder()
    empty.insert("f", blob, pygit2.enums.FileMode.BLOB)
    sub = empty.write()
    tb = repo.TreeBuilder()
    entries = {}
    for name, is_tree in spec.items():
        oid = sub if is_tree else blob
        mode = MODE_TREE if is_tree else MODE_BLOB
        tb.insert(name, oid, pygit2.enums.FileMode.TREE if is_tree else pygit2.enums.FileMode.BLOB)
        entries[name] = (mode, oid.raw)
    assert repo[tb.write()].read_raw() == tree_bytes(entries)


def test_signed_commit_matches_libgit2(tmp_path: Path) -> None:
    repo = pygit2.init_repository(str(tmp_path / "c.git"), bare=True)
    tree = repo.TreeBuilder().write()
    parent = "a" * 40
    who = pygit2.Signature("vabc", "vabc@polykey", 1_700_000_000, 0)
    sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\nBBBB\n-----END SSH SIGNATURE-----\n"
    ours = signed_commit_bytes(str(tree), [], "vabc", "vabc@polykey", 1_700_000_000, "set secret\n",
                               lambda payload: sig)
    content = repo.create_commit_string(who, who, "set secret\n", tree, [])
    theirs = repo[repo.create_commit_with_signature(content, sig.rstrip("\n"))].read_raw()
    assert ours == theirs
    seen: list[bytes] = []
    signed_commit_bytes(str(tree), [parent], "vabc", "vabc@polykey", 1, "m\n", lambda p: seen.append(p) or sig)
    assert seen == [f"tree {tree}\nparent {parent}\nauthor vabc <vabc@polykey> 1 +0000\n"
                    f"committer vabc <vabc@polykey> 1 +0000\n\nm\n".encode()]


def test_geometric_merge_set() -> None:
    from polykey.vaults.pack import geometric_merge_set

    p = [Path(f"p{i}") for i in range(40)]
    assert geometric_merge_set([(10, x) for x in p[:5]], 16) == []
    # one tiny pack, many similar ones, one huge one: all but the huge one merge
    packs = [(1, p[0])] + [(10, x) for x in p[1:30]] + [(10_000, p[30])]
    assert set(geometric_merge_set(packs, 16)) == set(p[:30])
    # already a progression: nothing to do
    prog = [(3**i, p[i]) for i in range(20)]
    assert geometric_merge_set(prog, 16) == []


def test_many_writes_keep_few_packs(tmp_path: Path) -> None:
    from polykey.keys.keypair import KeyPair
    from polykey.vaults.service import VaultService

    svc = VaultService(tmp_path / "n", KeyPair.generate())
    vid = svc.create_vault("v")["vaultId"]
    svc.import_secrets("v", {f"d/{i}": b"x" for i in range(300)})
    for i in range(120):
        svc.set_secret("v", f"s{i % 7}", b"%d" % i)
    packs = list((tmp_path / "n" / "vaults" / f"{vid}.git" / "objects" / "pack").glob("*.idx"))
    assert len(packs) <= 16
    assert svc.get_secret("v", "s0") == b"119"
    assert svc.verify("v")["commits"] == 122
    r = subprocess.run(["git", "-C", str(packs[0].parents[2]), "fsck", "--strict"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_writer_removes_half_renamed_packs(tmp_path: Path) -> None:
    from polykey.keys.keypair import KeyPair
    from polykey.vaults.pack import OBJ_BLOB, build_objects_pack
    from polykey.vaults.service import VaultService

    svc = VaultService(tmp_path / "n", KeyPair.generate())
    vid = svc.create_vault("v")["vaultId"]
    pack_dir = tmp_path / "n" / "vaults" / f"{vid}.git" / "objects" / "pack"
    pack, idx, _ids = build_objects_pack([(OBJ_BLOB, b"orphan one")])
    (pack_dir / f"pack-{pack[-20:].hex()}.idx").write_bytes(idx)  # an .idx whose .pack never landed
    pack2, _idx2, _ = build_objects_pack([(OBJ_BLOB, b"orphan two")])
    (pack_dir / f"pack-{pack2[-20:].hex()}.pack").write_bytes(pack2)  # a .pack whose .idx never landed
    (pack_dir / "tmp_pk_pack_0123").write_bytes(b"half")
    svc.set_secret("v", "k", b"v")
    for name in (f"pack-{pack[-20:].hex()}.idx", f"pack-{pack2[-20:].hex()}.pack", "tmp_pk_pack_0123"):
        assert not (pack_dir / name).exists(), name
    r = subprocess.run(["git", "-C", str(pack_dir.parents[1]), "fsck", "--strict"], capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stdout + r.stderr
    assert svc.get_secret("v", "k") == b"v"
    svc.close()


def _pack_dir_with(tmp_path: Path, batches: list[list[bytes]]) -> tuple[Path, list[Path]]:
    import pygit2

    from polykey.vaults.pack import write_pack

    repo_dir = tmp_path / "r.git"
    pygit2.init_repository(str(repo_dir), bare=True)
    idxs = []
    for blobs in batches:
        write_pack(repo_dir / "objects", blobs)
        idxs.append(sorted((repo_dir / "objects" / "pack").glob("*.idx"), key=lambda p: p.stat().st_mtime_ns)[-1])
    return repo_dir, idxs


def _merged_alone_holds_every_object(tmp_path: Path, batches: list[list[bytes]]) -> None:
    """Merge one pack per batch, delete the sources: git verifies the merged pack, it holds each
    distinct object once, and libgit2 reads every one back."""
    import pygit2

    from polykey.vaults.pack import object_id
    from polykey.vaults.packmerge import copy_merge

    repo_dir, idxs = _pack_dir_with(tmp_path, batches)
    merged = copy_merge(repo_dir / "objects", idxs)
    assert merged is not None and merged not in idxs
    for idx in idxs:
        idx.unlink()
        idx.with_suffix(".pack").unlink()
    r = subprocess.run(["git", "verify-pack", "-v", str(merged)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    blobs = {b for batch in batches for b in batch}
    assert len(pack_ids_of(merged)) == len(blobs)
    repo = pygit2.Repository(str(repo_dir))
    for blob in blobs:
        assert repo[object_id(b"blob", blob).hex()].data == blob


def test_copy_merge_gives_a_pack_git_verifies_with_every_object(tmp_path: Path) -> None:
    _merged_alone_holds_every_object(tmp_path, [[b"shared", b"a%d" % i] for i in range(5)] + [[b"big" * 5000]])


def pack_ids_of(idx: Path) -> list[str]:
    from polykey.vaults.pack import pack_ids

    return pack_ids(idx)


def test_copy_merge_declines_packs_with_deltas(tmp_path: Path) -> None:
    from polykey.vaults.packmerge import copy_merge

    from polykey.vaults.pack import object_id

    blobs = [b"x" * 4000 + b"1", b"x" * 4000 + b"2"]
    repo_dir, idxs = _pack_dir_with(tmp_path, [blobs])
    # stock git packs them with a delta: our copy merge must not copy those entries
    oids = "".join(object_id(b"blob", b).hex() + "\n" for b in blobs)
    r = subprocess.run(["git", "-C", str(repo_dir), "pack-objects", "--no-reuse-object", "objects/pack/pack"], input=oids,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    idxs[0].unlink()
    idxs[0].with_suffix(".pack").unlink()
    git_packs = list((repo_dir / "objects" / "pack").glob("*.idx"))
    verify = subprocess.run(["git", "verify-pack", "-v", str(git_packs[0])], capture_output=True, text=True).stdout
    assert "delta" in verify or "chain length" in verify
    _d, ours = _pack_dir_with(tmp_path / "more", [[b"other"]])
    (repo_dir / "objects" / "pack" / ours[0].name).write_bytes(ours[0].read_bytes())
    (repo_dir / "objects" / "pack" / ours[0].with_suffix(".pack").name).write_bytes(ours[0].with_suffix(".pack").read_bytes())
    before = sorted(p.name for p in (repo_dir / "objects" / "pack").iterdir())
    assert copy_merge(repo_dir / "objects", git_packs + [repo_dir / "objects" / "pack" / ours[0].name]) is None
    assert sorted(p.name for p in (repo_dir / "objects" / "pack").iterdir()) == before  # nothing written


def test_consolidation_with_a_git_made_delta_pack_keeps_every_object(tmp_path: Path) -> None:
    from polykey.keys.keypair import KeyPair
    from polykey.vaults.service import VaultService

    svc = VaultService(tmp_path / "n", KeyPair.generate())
    vid = svc.create_vault("v")["vaultId"]
    repo_dir = tmp_path / "n" / "vaults" / f"{vid}.git"
    for i in range(5):
        svc.set_secret("v", f"k{i}", b"y" * 3000 + b"%d" % i)
    r = subprocess.run(["git", "-C", str(repo_dir), "repack", "-a", "-d", "-f"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for i in range(40):  # enough packs to merge, the git-made one among the smallest
        svc.set_secret("v", f"n{i % 3}", b"%d" % i)
    assert len(list((repo_dir / "objects" / "pack").glob("*.idx"))) <= 16
    assert [svc.get_secret("v", f"k{i}") for i in range(5)] == [b"y" * 3000 + b"%d" % i for i in range(5)]
    assert svc.verify("v")["commits"] == 46
    r = subprocess.run(["git", "-C", str(repo_dir), "fsck", "--strict"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    svc.close()


def test_copy_merge_leaves_out_an_object_an_earlier_pack_holds(tmp_path: Path) -> None:
    """An id in two sources is stored once: the later source's entry (mid-pack here) is left out
    of the copy, and every entry after it still lands at the offset the new index gives."""
    _merged_alone_holds_every_object(
        tmp_path, [[b"first", b"dup" * 300], [b"before" * 50, b"dup" * 300, b"after" * 70, b"last"], [b"dup" * 300, b"x"]])


def test_copy_merge_holds_no_python_object_per_entry(tmp_path: Path) -> None:
    """docs/architecture.md "Agent memory": a merge's memory is a few flat tables, under 100
    bytes an object; the version that kept tuples, dict and set entries per object peaked at
    ~590 (and read each index into a 64 MiB buffer first)."""
    import os
    import tracemalloc

    from polykey.vaults.pack import OBJ_BLOB, store_objects_pack
    from polykey.vaults.packmerge import copy_merge

    objects_dir = tmp_path / "objects"
    (objects_dir / "pack").mkdir(parents=True)
    n = 20_000
    store_objects_pack(objects_dir, [(OBJ_BLOB, os.urandom(40)) for _ in range(n)])
    for _ in range(4):
        store_objects_pack(objects_dir, [(OBJ_BLOB, os.urandom(40)) for _ in range(50)])
    idxs = sorted((objects_dir / "pack").glob("*.idx"))
    tracemalloc.start()
    try:
        merged = copy_merge(objects_dir, idxs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert merged is not None and len(pack_ids_of(merged)) == n + 200
    assert peak < 200 * n, f"{peak / n:.0f} bytes per object"
