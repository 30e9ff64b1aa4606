"""The bulk-import packfile writer: stock git and libgit2 read what it writes."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pygit2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
