"""Sync protocol bodies, sans-I/O: strict schemas for both directions (docs/spec/sync.md).

Every sync request and answer is a transport message body (:mod:`polykey.wire.messages`) whose
``"v"`` is :data:`SYNC_VERSION`. Each ``check_*`` function takes the decoded body (a dict of
msgpack values) from the other node, checks every field's type, size and count, and returns it as
a frozen dataclass; anything else is one :class:`ProtocolViolationError` (the request fails, the
connection and the node stay up). What we send is built by the ``*_body`` functions, which use
the same limits, so what we send always passes the other side's checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from polykey.errors import ProtocolViolationError
from polykey.ids import VaultId

SYNC_VERSION = 1
#: Vaults named in one ``vaults.heads`` request (and answered).
MAX_HEADS = 1024
#: Commits an asker lists as "haves" in one fetch.
MAX_HAVES = 64
#: Objects (or object parts) in one fetch page.
MAX_PAGE_OBJECTS = 100_000
#: Bytes of object data a fetch page may carry (below the transport's 4 MiB message cap).
MAX_PAGE_BYTES = 3 * 1024 * 1024
MIN_PAGE_BYTES = 64 * 1024
#: Vaults one node lists in a ``vaults.scan`` answer.
MAX_SCAN = 4096
MAX_NAME = 512
#: The largest object sent in parts: a secret blob's cap (16 MiB + overhead), with room.
MAX_OBJECT_BYTES = 17 * 1024 * 1024
OBJECT_TYPES = (1, 2, 3)  # commit, tree, blob (git's pack type numbers)
ROLES = ("owner", "writer", "reader")
_OID = re.compile(r"[0-9a-f]{40}\Z")
_CURSOR = re.compile(r"[0-9a-f]{32}\Z")
ACTIONS = ("ignored", "up-to-date", "scheduled", "fast-forward", "merged", "adopted", "rebased", "kept")


def _bad(what: str) -> ProtocolViolationError:
    return ProtocolViolationError(f"malformed sync message: {what}")


def _fields(body: Any, required: set[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("the body is not a map")
    keys = set(body)
    if not required <= keys or keys - required - optional - {"v"}:
        raise _bad(f"expected fields {', '.join(sorted(required | optional))}")
    if body.get("v") != SYNC_VERSION or type(body.get("v")) is not int:
        raise _bad(f"sync protocol version {str(body.get('v'))[:8]!r} is not supported (this node speaks {SYNC_VERSION})")
    return body


def _oid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _OID.match(value):
        raise _bad(f"{what} is not a full commit id")
    return value


def _vault_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise _bad("vaultId is not a VaultId")
    try:
        return str(VaultId.from_text(value))
    except Exception:  # noqa: BLE001 - any parse failure is the same protocol error
        raise _bad("vaultId is not a VaultId") from None


def _text(value: Any, limit: int, what: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > limit:
        raise _bad(f"{what} is not text of 1 to {limit} bytes")
    return value


def _role(value: Any) -> str:
    if value not in ROLES or not isinstance(value, str):
        raise _bad("role is not owner, writer or reader")
    return value


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _bad(f"{what} is out of range")
    return value


# -- invite -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invite:
    vault_id: str
    root: str
    head: str
    role: str
    name: str


def invite_body(inv: Invite) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "vaultId": inv.vault_id, "root": inv.root, "head": inv.head, "role": inv.role,
            "name": inv.name}


def check_invite(body: Any) -> Invite:
    b = _fields(body, {"vaultId", "root", "head", "role", "name"})
    return Invite(_vault_id(b["vaultId"]), _oid(b["root"], "root"), _oid(b["head"], "head"), _role(b["role"]),
                  _text(b["name"], MAX_NAME, "name"))


def check_invite_answer(body: Any) -> dict[str, Any]:
    b = _fields(body, {"stored", "autoAccept"})
    if type(b["stored"]) is not bool or type(b["autoAccept"]) is not bool:
        raise _bad("stored and autoAccept are booleans")
    return b


# -- scan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """One vault another node shares with us, as its ``vaults.scan`` answer lists it."""

    vault_id: str
    name: str
    role: str
    head: str
    root: str


def check_scan(body: Any) -> None:
    _fields(body, set())


def scan_answer(rows: list[Shared]) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "vaults": [
        {"vaultId": r.vault_id, "name": r.name, "role": r.role, "head": r.head, "root": r.root} for r in rows[:MAX_SCAN]]}


def check_scan_answer(body: Any) -> list[Shared]:
    rows = _fields(body, {"vaults"})["vaults"]
    if not isinstance(rows, list) or len(rows) > MAX_SCAN:
        raise _bad(f"vaults is not a list of at most {MAX_SCAN}")
    out = []
    for row in rows:
        r = _fields({**row, "v": SYNC_VERSION} if isinstance(row, dict) else row,
                    {"vaultId", "name", "role", "head", "root"})
        out.append(Shared(_vault_id(r["vaultId"]), _text(r["name"], MAX_NAME, "name"), _role(r["role"]),
                          _oid(r["head"], "head"), _oid(r["root"], "root")))
    return out


# -- heads --------------------------------------------------------------------------------


def heads_body(vault_ids: list[str]) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "vaults": vault_ids[:MAX_HEADS]}


def check_heads(body: Any) -> list[str]:
    vaults = _fields(body, {"vaults"})["vaults"]
    if not isinstance(vaults, list) or len(vaults) > MAX_HEADS:
        raise _bad(f"vaults is not a list of at most {MAX_HEADS} VaultIds")
    return [_vault_id(v) for v in vaults]


def heads_answer(heads: dict[str, str]) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "heads": heads}


def check_heads_answer(body: Any, asked: list[str]) -> dict[str, str]:
    """The heads answered, only for vaults we asked about."""
    heads = _fields(body, {"heads"})["heads"]
    if not isinstance(heads, dict) or len(heads) > len(asked):
        raise _bad("heads is not a map of the vaults asked about")
    wanted = set(asked)
    out = {}
    for vid, head in heads.items():
        if _vault_id(vid) not in wanted:
            raise _bad("heads names a vault not asked about")
        out[str(VaultId.from_text(vid))] = _oid(head, "head")
    return out


# -- fetch --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    vault_id: str
    want: str
    haves: tuple[str, ...]
    cursor: str | None
    max_bytes: int


def fetch_body(f: Fetch) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "vaultId": f.vault_id, "want": f.want, "haves": list(f.haves[:MAX_HAVES]),
            "cursor": f.cursor, "maxBytes": f.max_bytes}


def check_fetch(body: Any) -> Fetch:
    b = _fields(body, {"vaultId", "want", "haves", "cursor", "maxBytes"})
    haves = b["haves"]
    if not isinstance(haves, list) or len(haves) > MAX_HAVES:
        raise _bad(f"haves is not a list of at most {MAX_HAVES} commit ids")
    cursor = b["cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not _CURSOR.match(cursor)):
        raise _bad("cursor is not a cursor")
    return Fetch(_vault_id(b["vaultId"]), _oid(b["want"], "want"), tuple(_oid(h, "a have") for h in haves), cursor,
                 _int(b["maxBytes"], MIN_PAGE_BYTES, MAX_PAGE_BYTES, "maxBytes"))


#: One object of a page: ``(type, data)``, or a part of a large one ``(type, chunk, offset, size)``.
PageObject = tuple[int, bytes] | tuple[int, bytes, int, int]


@dataclass(frozen=True)
class Page:
    objects: list[PageObject]
    cursor: str | None
    #: Objects the whole transfer holds (for progress).
    total: int


def page_answer(page: Page) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "objects": [list(o) for o in page.objects], "cursor": page.cursor, "total": page.total}


def check_page(body: Any, max_bytes: int) -> Page:
    b = _fields(body, {"objects", "cursor", "total"})
    objects = b["objects"]
    if not isinstance(objects, list) or len(objects) > MAX_PAGE_OBJECTS:
        raise _bad(f"objects is not a list of at most {MAX_PAGE_OBJECTS}")
    out: list[PageObject] = []
    size = 0
    for o in objects:
        if not isinstance(o, list) or len(o) not in (2, 4) or not isinstance(o[1], bytes):
            raise _bad("an object is not [type, data] or [type, chunk, offset, size]")
        kind = _int(o[0], 1, 3, "an object type")
        size += len(o[1])
        if len(o) == 2:
            out.append((kind, o[1]))
        else:
            total = _int(o[3], 1, MAX_OBJECT_BYTES, "an object size")
            offset = _int(o[2], 0, total - 1, "a part offset")
            if offset + len(o[1]) > total or not o[1]:
                raise _bad("a part runs past its object's size")
            out.append((kind, o[1], offset, total))
    if size > max_bytes + MIN_PAGE_BYTES:
        raise _bad("the page is larger than asked")
    cursor = b["cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not _CURSOR.match(cursor)):
        raise _bad("cursor is not a cursor")
    return Page(out, cursor, _int(b["total"], 0, 1 << 32, "total"))


# -- announce -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Announce:
    vault_id: str
    head: str
    #: Push: answer only once this node has fetched and integrated the head.
    wait: bool


def announce_body(a: Announce) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "vaultId": a.vault_id, "head": a.head, "wait": a.wait}


def check_announce(body: Any) -> Announce:
    b = _fields(body, {"vaultId", "head", "wait"})
    if type(b["wait"]) is not bool:
        raise _bad("wait is not a boolean")
    return Announce(_vault_id(b["vaultId"]), _oid(b["head"], "head"), b["wait"])


def announce_answer(action: str, head: str | None, reason: str | None = None) -> dict[str, Any]:
    return {"v": SYNC_VERSION, "action": action, "head": head, "reason": reason}


def check_announce_answer(body: Any) -> dict[str, Any]:
    b = _fields(body, {"action", "head", "reason"})
    if b["action"] not in ACTIONS:
        raise _bad("action is unknown")
    if b["head"] is not None:
        _oid(b["head"], "head")
    if b["reason"] is not None:
        _text(b["reason"], 1024, "reason")
    return b
