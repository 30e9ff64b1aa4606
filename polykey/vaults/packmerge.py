"""Merge packs by copying their entries, without reading a single object (docs/spec/vault-format.md s.1).

Our writer stores whole objects (no deltas), so a pack entry stays valid byte for byte in any
other pack: merging is a copy of each source pack's entries (their compressed bytes, ``pread``
in 1 MiB chunks from the source ``.pack``) into one new pack written straight to disk, and a
new ``.idx`` from the entries' ids and CRC32s (copied from the source indexes) and new offsets.

Memory (docs/architecture.md "Agent memory"): the agent merges after its writes, and the
largest pack holds the vault's whole history (100,000+ objects after a day of writes). The
sources' tables stay in their raw ``.idx`` bytes and the new tables are built in flat byte
arrays, about 60 bytes per object in a few large buffers that go back to the system when the
merge ends (a traced peak of 9.5 MB for 100,000 objects); the ids are merged in order
(``heapq.merge``), one object at a time. The version before kept tuples, a dict slot and a
set entry per object (a traced peak of 58.6 MB of small Python objects for the same merge),
and Python's allocator kept most of the 1 MiB arenas of that peak for the life of the agent:
a few survivors pin each one.

Each object is stored once: an id found in two sources keeps the entry of the first, and the
second's entry is left out of the copy (its length is the distance to the next entry of its
pack). A pack with delta entries (one stock ``git gc`` or ``git repack`` made) cannot be copied so
(an offset delta points at a position in its own pack): :func:`copy_merge` then returns None,
and the caller merges by reading the objects instead. Durability as in ``pack.py``: temporary
names, both files fsynced, ``.pack`` renamed before ``.idx``, directory fsynced.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import struct
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from polykey import fsutil
from polykey.vaults.pack import TMP_PREFIX, index_tables, read_index

_DELTA_TYPES = (6, 7)  # OBJ_OFS_DELTA, OBJ_REF_DELTA
_COPY_CHUNK = 1 << 20
_PACK_HEADER = 12


def _big_endian_u32(raw: bytes | memoryview) -> array[int]:
    values = array("I")
    if values.itemsize != 4:  # pragma: no cover - every platform we run on has a 4-byte unsigned int
        raise RuntimeError("array('I') is not 32 bits here")
    values.frombytes(raw)
    if sys.byteorder == "little":
        values.byteswap()
    return values


class _Source:
    """One pack to merge: its ``.idx`` tables as read (ids sorted, CRC32s, offsets) and an open
    descriptor on its ``.pack``. No object per entry."""

    def __init__(self, idx_path: Path) -> None:
        data, count = read_index(idx_path)
        shas_at, crcs_at, offs_at = 8 + 1024, 8 + 1024 + 20 * count, 8 + 1024 + 24 * count
        self.count = count
        self.data = data
        self.shas_at, self.crcs_at = shas_at, crcs_at
        self.offsets = _big_endian_u32(memoryview(data)[offs_at : offs_at + 4 * count])
        self.large = count > 0 and max(self.offsets) & 0x80000000 != 0  # 64-bit offsets: a pack we never write
        self.pack_path = idx_path.with_suffix(".pack")
        self.fd = os.open(self.pack_path, os.O_RDONLY)
        try:
            self.size = os.fstat(self.fd).st_size
            if self.size < _PACK_HEADER + 20:
                raise ValueError(f"{self.pack_path.name} is truncated")
        except BaseException:
            os.close(self.fd)
            raise
        #: Offsets of the entries left out (their object is kept from an earlier source), sorted.
        self.skipped: list[int] = []

    def sha(self, i: int) -> bytes:
        at = self.shas_at + 20 * i
        return self.data[at : at + 20]

    def crc(self, i: int) -> bytes:
        at = self.crcs_at + 4 * i
        return self.data[at : at + 4]

    def ids(self, number: int) -> Iterator[tuple[bytes, int, int]]:
        """``(sha, number, i)`` for each entry ``i``, in id order (the ``.idx`` keeps them sorted)."""
        data, at = self.data, self.shas_at
        for i in range(self.count):
            yield data[at + 20 * i : at + 20 * i + 20], number, i

    def has_deltas(self) -> bool:
        for offset in self.offsets:
            first = os.pread(self.fd, 1, offset)
            if not first or (first[0] >> 4) & 7 in _DELTA_TYPES:
                return True
        return False

    def skipped_ranges(self) -> list[tuple[int, int]]:
        """``(start, end)`` in this pack of each entry left out, in pack order. Only a pack with
        an object that an earlier source also holds has any (rare: an id repeats only when the
        same content was written twice), so the sort of all its offsets is paid only then."""
        if not self.skipped:
            return []
        ordered = array("I", sorted(self.offsets))
        end = self.size - 20
        ranges = []
        for start in sorted(self.skipped):
            j = bisect.bisect_right(ordered, start)
            ranges.append((start, ordered[j] if j < len(ordered) else end))
        return ranges

    def close(self) -> None:
        os.close(self.fd)


def copy_merge(objects_dir: Path, idx_paths: list[Path]) -> Path | None:
    """Write the entries of ``idx_paths``' packs as one durable new pack (each object once).

    Returns the new ``.idx`` path (which may coincide with a source's, if that one already held
    every object: the caller deletes the merged packs but that one), or None, writing nothing,
    if a source pack holds deltas or 64-bit offsets.
    """
    sources: list[_Source] = []
    try:
        for idx in idx_paths:
            sources.append(_Source(idx))
        if any(s.large or s.has_deltas() for s in sources):
            return None
        return _write_merged(objects_dir / "pack", sources)
    finally:
        for s in sources:
            s.close()


def _write_merged(pack_dir: Path, sources: list[_Source]) -> Path:
    # 1. The new index's ids and CRC32s in id order, each id once; which entry of which source
    #    each one is (to place it once the copy fixed the offsets).
    shas, crcs = bytearray(), bytearray()
    from_source, from_entry = array("H"), array("I")
    previous = b""
    for sha, number, i in heapq.merge(*(s.ids(n) for n, s in enumerate(sources))):
        s = sources[number]
        if sha == previous:
            s.skipped.append(s.offsets[i])
            continue
        previous = sha
        shas += sha
        crcs += s.crc(i)
        from_source.append(number)
        from_entry.append(i)
    count = len(from_entry)
    # 2. The pack: each source's entries in its own order, less the ones left out.
    token = os.urandom(6).hex()
    tmp_pack, tmp_idx = pack_dir / f"{TMP_PREFIX}pack_{token}", pack_dir / f"{TMP_PREFIX}idx_{token}"
    try:
        hasher = hashlib.sha1()
        bases: list[int] = []  # where each source's first entry lands in the new pack
        cuts: list[tuple[list[int], list[int]]] = []  # per source: starts of the ranges left out, bytes left out before each end
        fd = os.open(tmp_pack, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb", buffering=_COPY_CHUNK) as out:
            header = b"PACK" + struct.pack(">II", 2, count)
            out.write(header)
            hasher.update(header)
            position = len(header)
            for s in sources:
                bases.append(position)
                ranges = s.skipped_ranges()
                starts, dropped, gone = [r[0] for r in ranges], [], 0
                at = _PACK_HEADER
                for start, end in [*ranges, (s.size - 20, s.size - 20)]:
                    position += _copy(s, at, start, out, hasher)
                    gone += end - start
                    dropped.append(gone)
                    at = end
                cuts.append((starts, dropped))
                if position >= 1 << 31:
                    raise ValueError("merged pack too large for 32-bit offsets")
            pack_sha = hasher.digest()
            out.write(pack_sha)
            out.flush()
            os.fsync(out.fileno())
        # 3. The index: each kept entry's offset in the new pack.
        offsets = array("I", bytes(4 * count))
        for k in range(count):
            s_no = from_source[k]
            old = sources[s_no].offsets[from_entry[k]]
            starts, dropped = cuts[s_no]
            before = dropped[bisect.bisect_right(starts, old) - 1] if starts and old > starts[0] else 0
            offsets[k] = bases[s_no] + old - _PACK_HEADER - before
        if sys.byteorder == "little":
            offsets.byteswap()
        fd = os.open(tmp_idx, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb") as f:
            for part in index_tables(shas, crcs, offsets.tobytes(), pack_sha):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        name = "pack-" + pack_sha.hex()
        os.replace(tmp_pack, pack_dir / f"{name}.pack")
        os.replace(tmp_idx, pack_dir / f"{name}.idx")  # the .idx makes the pack visible: last
    except BaseException:
        tmp_pack.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    fsutil.fsync_dir(pack_dir)
    return pack_dir / f"{name}.idx"


def _copy(s: _Source, start: int, end: int, out: BinaryIO, hasher: hashlib._Hash) -> int:
    """Copy bytes ``[start, end)`` of ``s``'s pack to ``out`` (and the hash); returns how many."""
    write = out.write
    done = start
    while done < end:
        chunk = os.pread(s.fd, min(_COPY_CHUNK, end - done), done)
        if not chunk:
            raise ValueError(f"{s.pack_path.name} is truncated")
        write(chunk)
        hasher.update(chunk)
        done += len(chunk)
    return end - start
