"""Write many blobs as one git packfile (pack v2 + idx v2), for bulk imports.

Creating one loose object file per secret costs a file creation and an fsync each; an
import of 10,000 secrets instead writes one ``.pack`` and one ``.idx`` (git's standard
format, Documentation/gitformat-pack.txt), each fsynced and renamed into
``objects/pack/``, ``.idx`` last, so a crash leaves either no pack or a whole one.
Pure byte formatting plus one atomic file pair; git and libgit2 read it as any pack.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

from polykey import fsutil

OBJ_COMMIT, OBJ_TREE, OBJ_BLOB = 1, 2, 3
TYPE_NAMES = {OBJ_COMMIT: b"commit", OBJ_TREE: b"tree", OBJ_BLOB: b"blob"}
TMP_PREFIX = "tmp_pk_"
IDX_LIMIT = 64 * 1024 * 1024
IDX_HEADER = b"\xfftOc\x00\x00\x00\x02"


def object_id(kind: bytes, data: bytes) -> bytes:
    """Git's SHA-1 object name of ``data`` as an object of ``kind`` (b"blob", ...)."""
    return hashlib.sha1(kind + b" " + str(len(data)).encode() + b"\0" + data).digest()


def _entry_header(obj_type: int, size: int) -> bytes:
    out = bytearray()
    byte = (obj_type << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def build_pack(blobs: list[bytes]) -> tuple[bytes, bytes, list[str]]:
    """``(pack bytes, idx bytes, hex ids)`` for ``blobs`` (duplicates packed once)."""
    return build_objects_pack([(OBJ_BLOB, b) for b in blobs])


def build_objects_pack(objects: list[tuple[int, bytes]]) -> tuple[bytes, bytes, list[str]]:
    """``(pack bytes, idx bytes, hex ids)`` for ``(type, content)`` objects (duplicates packed once)."""
    seen: dict[bytes, None] = {}
    parts = [b""]  # header placeholder
    entries: list[tuple[bytes, int, int]] = []  # (sha, offset, crc32)
    offset = 12
    ids = []
    for obj_type, data in objects:
        sha = object_id(TYPE_NAMES[obj_type], data)
        ids.append(sha.hex())
        if sha in seen:
            continue
        seen[sha] = None
        packed = _entry_header(obj_type, len(data)) + zlib.compress(data, 1)
        entries.append((sha, offset, zlib.crc32(packed)))
        parts.append(packed)
        offset += len(packed)
    parts[0] = b"PACK" + struct.pack(">II", 2, len(entries))
    body = b"".join(parts)
    pack_sha = hashlib.sha1(body).digest()
    pack = body + pack_sha

    if offset >= 1 << 31:
        raise ValueError("pack too large for 32-bit offsets")
    idx = index_bytes(entries, pack_sha)
    return pack, idx, ids


def index_bytes(entries: list[tuple[bytes, int, int]], pack_sha: bytes) -> bytes:
    """The idx v2 file of a pack: ``entries`` are ``(sha, offset, crc32)`` (sorted here), 32-bit offsets."""
    entries.sort()
    return b"".join(index_tables(
        b"".join(sha for sha, _o, _c in entries),
        b"".join(struct.pack(">I", crc) for _s, _o, crc in entries),
        b"".join(struct.pack(">I", offset) for _s, offset, _c in entries),
        pack_sha,
    ))


def index_tables(shas: bytes | bytearray, crcs: bytes | bytearray, offsets: bytes, pack_sha: bytes) -> list[bytes | bytearray]:
    """The idx v2 file of a pack, in parts to write one after the other, from its tables already
    in id order: the 20-byte ids, then each one's CRC32 and 32-bit offset, big-endian
    (gitformat-pack, "pack-*.idx files have the following format", version 2). The tables are
    not copied: a merge's are several MB."""
    count = len(shas) // 20
    if len(shas) != 20 * count or len(crcs) != 4 * count or len(offsets) != 4 * count:
        raise ValueError("pack index tables of different lengths")
    fanout = [0] * 256
    for first in shas[::20]:
        fanout[first] += 1
    total = 0
    for i in range(256):
        total += fanout[i]
        fanout[i] = total
    parts: list[bytes | bytearray] = [IDX_HEADER + struct.pack(">256I", *fanout), shas, crcs, offsets, pack_sha]
    hasher = hashlib.sha1()
    for part in parts:
        hasher.update(part)
    return [*parts, hasher.digest()]


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pack(objects_dir: Path, blobs: list[bytes]) -> list[str]:
    """Store ``blobs`` as one pack under ``objects_dir/pack``; returns their hex ids in order."""
    return write_objects_pack(objects_dir, [(OBJ_BLOB, b) for b in blobs])


def write_objects_pack(objects_dir: Path, objects: list[tuple[int, bytes]]) -> list[str]:
    """Store ``(type, content)`` objects as one durable pack; returns their hex ids in order."""
    return store_objects_pack(objects_dir, objects)[0]


def store_objects_pack(objects_dir: Path, objects: list[tuple[int, bytes]]) -> tuple[list[str], Path]:
    """Like :func:`write_objects_pack`, also returning the path of the pack's ``.idx``."""
    pack, idx, ids = build_objects_pack(objects)
    pack_dir = objects_dir / "pack"
    pack_dir.mkdir(exist_ok=True)
    name = "pack-" + pack[-20:].hex()
    final_pack, final_idx = pack_dir / f"{name}.pack", pack_dir / f"{name}.idx"
    if final_idx.exists():
        return ids, final_idx
    token = os.urandom(6).hex()
    # Temporary names must not end in .pack/.idx: git fsck would read a half-written one as a pack.
    tmp_pack, tmp_idx = pack_dir / f"{TMP_PREFIX}pack_{token}", pack_dir / f"{TMP_PREFIX}idx_{token}"
    try:
        _write_durably(tmp_pack, pack)
        _write_durably(tmp_idx, idx)
        os.replace(tmp_pack, final_pack)
        os.replace(tmp_idx, final_idx)  # the .idx makes the pack visible: last
    except BaseException:
        tmp_pack.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    fsutil.fsync_dir(pack_dir)
    return ids, final_idx


def remove_stale_temporaries(objects_dir: Path) -> None:
    """Delete half-written packs a killed writer left (call under the write lock only)."""
    pack_dir = objects_dir / "pack"
    if pack_dir.is_dir():
        for p in pack_dir.glob(f"{TMP_PREFIX}*"):
            p.unlink(missing_ok=True)
        for p in pack_dir.glob("pack-*.pack"):  # renamed, but killed before its .idx was
            if not p.with_suffix(".idx").exists():
                p.unlink(missing_ok=True)
        for p in pack_dir.glob("pack-*.idx"):  # only after a power loss reordered the two renames
            if not p.with_suffix(".pack").exists():
                p.unlink(missing_ok=True)


def read_index(idx_path: Path) -> tuple[bytes, int]:
    """An idx v2 file's bytes and its object count, header and size strictly checked (ValueError).
    Read at its own size: ``read(IDX_LIMIT + 1)`` would allocate the whole limit first."""
    with open(idx_path, "rb") as f:
        data = f.read(min(os.fstat(f.fileno()).st_size, IDX_LIMIT) + 1)
    if len(data) > IDX_LIMIT or len(data) < 8 + 1024 + 40 or data[:8] != IDX_HEADER:
        raise ValueError(f"{idx_path.name} is not a pack index v2")
    count = struct.unpack_from(">I", data, 8 + 255 * 4)[0]
    if len(data) < 8 + 1024 + 28 * count + 40:
        raise ValueError(f"{idx_path.name} is truncated")
    return data, count


def pack_ids(idx_path: Path) -> list[str]:
    """The object ids an idx v2 file lists (strictly checked header and size)."""
    data, count = read_index(idx_path)
    start = 8 + 1024
    return [data[start + 20 * i : start + 20 * (i + 1)].hex() for i in range(count)]


def geometric_merge_set(packs: list[tuple[int, Path]], max_packs: int) -> list[Path]:
    """Which packs (``(size, idx path)``) to merge so that pack sizes form a factor-2 progression.

    Only when there are more than ``max_packs``. In ascending size order, the merged set is the
    shortest prefix after which every pack is at least twice the sum of all smaller ones (git's
    ``repack --geometric=2`` idea), so the remaining packs number O(log(total size)).
    """
    if len(packs) <= max_packs:
        return []
    ordered = sorted(packs)
    total, last = ordered[0][0], 0
    for j in range(1, len(ordered)):
        if ordered[j][0] < 2 * total:
            last = j
        total += ordered[j][0]
    return [p for _s, p in ordered[: last + 1]] if last >= 1 else []
