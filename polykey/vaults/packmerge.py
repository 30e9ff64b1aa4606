"""Merge packs by copying their entries, without reading a single object (docs/spec/vault-format.md s.1).

Our writer stores whole objects (no deltas), so a pack entry stays valid byte for byte in any
other pack: merging is a copy of each entry's compressed bytes (``pread`` from the source
``.pack``, at the offsets its ``.idx`` gives) into one new pack written straight to disk, and a
new ``.idx`` from the entries' ids, CRC32s (copied from the source indexes) and new offsets.
Memory stays proportional to the number of objects (about 60 bytes each), never to their
size: a vault with 100 MB of history merges its large packs in a few MB, where decoding every
object first held all of them in memory at once.

A pack with delta entries (one stock ``git gc`` or ``git repack`` made) cannot be copied so
(an offset delta points at a position in its own pack): :func:`copy_merge` then returns False,
and the caller merges by reading the objects instead. Durability as in ``pack.py``: temporary
names, both files fsynced, ``.pack`` renamed before ``.idx``, directory fsynced.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from polykey import fsutil
from polykey.vaults.pack import IDX_HEADER, IDX_LIMIT, TMP_PREFIX, index_bytes

_DELTA_TYPES = (6, 7)  # OBJ_OFS_DELTA, OBJ_REF_DELTA
_COPY_CHUNK = 1 << 20


class _Source:
    """One pack to merge: its entries ``(sha, crc, offset, length)`` and an open descriptor."""

    def __init__(self, idx_path: Path) -> None:
        with open(idx_path, "rb") as f:
            data = f.read(IDX_LIMIT + 1)
        if len(data) > IDX_LIMIT or len(data) < 8 + 1024 + 40 or data[:8] != IDX_HEADER:
            raise ValueError(f"{idx_path.name} is not a pack index v2")
        count = struct.unpack_from(">I", data, 8 + 255 * 4)[0]
        shas_at, crcs_at, offs_at = 8 + 1024, 8 + 1024 + 20 * count, 8 + 1024 + 24 * count
        if len(data) < offs_at + 4 * count + 40:
            raise ValueError(f"{idx_path.name} is truncated")
        crcs = struct.unpack_from(f">{count}I", data, crcs_at)
        offsets = struct.unpack_from(f">{count}I", data, offs_at)
        self.pack_path = idx_path.with_suffix(".pack")
        self.fd = os.open(self.pack_path, os.O_RDONLY)
        try:
            size = os.fstat(self.fd).st_size
            self.large = any(o & 0x80000000 for o in offsets)  # 64-bit offsets: a pack we never write
            ends = sorted(offsets) + [size - 20]
            end_of = {o: ends[i + 1] for i, o in enumerate(ends[:-1])}
            self.entries = [
                (data[shas_at + 20 * i : shas_at + 20 * (i + 1)], crcs[i], offsets[i], end_of[offsets[i]] - offsets[i])
                for i in range(count)
            ]
        except BaseException:
            os.close(self.fd)
            raise

    def has_deltas(self) -> bool:
        for _sha, _crc, offset, _length in self.entries:
            first = os.pread(self.fd, 1, offset)
            if not first or (first[0] >> 4) & 7 in _DELTA_TYPES:
                return True
        return False

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
    seen: set[bytes] = set()
    plan: list[tuple[_Source, bytes, int, int, int]] = []
    for s in sources:
        for sha, crc, offset, length in s.entries:
            if sha not in seen:
                seen.add(sha)
                plan.append((s, sha, crc, offset, length))
    token = os.urandom(6).hex()
    tmp_pack, tmp_idx = pack_dir / f"{TMP_PREFIX}pack_{token}", pack_dir / f"{TMP_PREFIX}idx_{token}"
    try:
        hasher = hashlib.sha1()
        index: list[tuple[bytes, int, int]] = []  # (sha, offset, crc32)
        fd = os.open(tmp_pack, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb", buffering=_COPY_CHUNK) as out:
            header = b"PACK" + struct.pack(">II", 2, len(plan))
            out.write(header)
            hasher.update(header)
            position = len(header)
            for s, sha, crc, offset, length in plan:
                if position >= 1 << 31:
                    raise ValueError("merged pack too large for 32-bit offsets")
                index.append((sha, position, crc))
                done = 0
                while done < length:
                    chunk = os.pread(s.fd, min(_COPY_CHUNK, length - done), offset + done)
                    if not chunk:
                        raise ValueError(f"{s.pack_path.name} is truncated")
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                position += length
            pack_sha = hasher.digest()
            out.write(pack_sha)
            out.flush()
            os.fsync(out.fileno())
        idx = index_bytes(index, pack_sha)
        fd = os.open(tmp_idx, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb") as f:
            f.write(idx)
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
