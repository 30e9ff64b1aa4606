"""The strict grammar of the git objects a vault may hold (docs/spec/vault-format.md section 8.1), sans-I/O.

Everything the agent reads from a vault is first parsed here, from the object's raw bytes:
a tree holds only modes ``100644`` and ``040000``, names ``.pk``, ``.keep`` or canonical
encrypted names, in git's order without duplicates; a commit holds exactly the headers
``tree``, ``parent`` (at most two), ``author``, ``committer`` and ``gpgsig``, in that order, a
committer and time equal to its author's, and a short ASCII message. A violation is a
:class:`VaultIntegrityError` naming the object (never a name or a value in clear).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from polykey.errors import VaultIntegrityError

MODE_BLOB = b"100644"
MODE_TREE = b"40000"
MAX_COMMIT_BYTES = 64 * 1024
MAX_TREE_BYTES = 32 * 1024 * 1024
MAX_TREE_ENTRIES = 100_000
MAX_MESSAGE_BYTES = 1024
MAX_PARENTS = 2
PK_DIR = ".pk"
DIR_MARKER = ".keep"
#: ``.pk/`` holds exactly these (kind is True for a tree); ``.pk/keys/`` holds epochs as 8 hex digits.
PK_ENTRIES = {"keys": True, "members": False, "vault": False}
_ENCRYPTED_NAME = re.compile(r"[0-9a-v]{26,512}")
_EPOCH_NAME = re.compile(r"[0-9a-f]{8}")
_OID = re.compile(rb"[0-9a-f]{40}")
_IDENT = re.compile(rb"([^<>\n]+) <([^<>\n]+)> ([0-9]{1,12}) \+0000")
_MESSAGE = re.compile(rb"[\x20-\x7e\n]*")


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: str
    is_tree: bool
    oid: str


@dataclass(frozen=True, slots=True)
class CommitHeader:
    tree: str
    parents: tuple[str, ...]
    signed: bool


def _bad(kind: str, oid: str, why: str) -> VaultIntegrityError:
    return VaultIntegrityError(f"{kind} {oid[:12]} is malformed: {why}", object=oid)


def parse_tree(oid: str, data: bytes) -> list[TreeEntry]:
    """The entries of a tree object, checked for modes, names' form, order and duplicates."""
    if len(data) > MAX_TREE_BYTES:
        raise _bad("tree", oid, f"larger than {MAX_TREE_BYTES} bytes")
    out: list[TreeEntry] = []
    pos, last = 0, b""
    while pos < len(data):
        space = data.find(b" ", pos, pos + 7)
        nul = data.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or nul < 0 or nul + 21 > len(data):
            raise _bad("tree", oid, "truncated entry")
        mode, raw_name = data[pos:space], data[space + 1 : nul]
        if mode not in (MODE_BLOB, MODE_TREE):
            raise _bad("tree", oid, f"entry mode {mode.decode('ascii', 'replace')} (only 100644 and 040000 are allowed)")
        if not raw_name or b"/" in raw_name:
            raise _bad("tree", oid, "an empty name or one with '/'")
        key = raw_name + (b"/" if mode == MODE_TREE else b"")
        if out and key <= last:
            raise _bad("tree", oid, "entries out of git order or duplicated")
        last = key
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise _bad("tree", oid, "a name that is not ASCII") from None
        out.append(TreeEntry(name, mode == MODE_TREE, data[nul + 1 : nul + 21].hex()))
        if len(out) > MAX_TREE_ENTRIES:
            raise _bad("tree", oid, f"more than {MAX_TREE_ENTRIES} entries")
        pos = nul + 21
    return out


def check_secret_tree(oid: str, entries: list[TreeEntry], root: bool) -> None:
    """A tree of secrets: ``.pk`` (a tree, at the root only), ``.keep`` (a blob), or encrypted names."""
    for e in entries:
        if e.name == PK_DIR:
            if not (root and e.is_tree):
                raise _bad("tree", oid, "a .pk entry other than the root's metadata directory")
        elif e.name == DIR_MARKER:
            if e.is_tree:
                raise _bad("tree", oid, "a .keep entry that is a directory")
        elif not _ENCRYPTED_NAME.fullmatch(e.name):
            raise _bad("tree", oid, "a name that is not a canonical encrypted name")
    if root and not any(e.name == PK_DIR for e in entries):
        raise _bad("tree", oid, "no .pk metadata directory")


def check_pk_tree(oid: str, entries: list[TreeEntry]) -> None:
    """``.pk/``: exactly ``keys/`` (a tree), ``members`` and ``vault`` (blobs), and optionally
    ``replicas`` (a blob, format version 2)."""
    found = {e.name: e.is_tree for e in entries}  # names are unique (parse_tree)
    if found.pop("replicas", False) or found != PK_ENTRIES:
        raise _bad("tree", oid, "the .pk directory must hold exactly keys/, members, vault and optionally replicas")


def check_keys_tree(oid: str, entries: list[TreeEntry]) -> None:
    """``.pk/keys/``: one blob per epoch, named by 8 lowercase hex digits."""
    if not entries or any(e.is_tree or not _EPOCH_NAME.fullmatch(e.name) for e in entries):
        raise _bad("tree", oid, ".pk/keys must hold only epoch files named by 8 hex digits")


def parse_commit(oid: str, data: bytes) -> CommitHeader:
    """The headers of a commit object, checked (section 8.1)."""
    if len(data) > MAX_COMMIT_BYTES:
        raise _bad("commit", oid, f"larger than {MAX_COMMIT_BYTES} bytes")
    end = data.find(b"\n\n")
    if end < 0:
        raise _bad("commit", oid, "no message separator")
    lines, message = data[:end].split(b"\n"), data[end + 2 :]
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line.startswith(b" ") and fields and fields[-1][0] == b"gpgsig":
            continue  # a continuation of the signature
        key, _, value = line.partition(b" ")
        fields.append((key, value))
    keys = [k for k, _ in fields]
    parents = [v for k, v in fields if k == b"parent"]
    expected = [b"tree"] + [b"parent"] * len(parents) + [b"author", b"committer"]
    if keys not in (expected, expected + [b"gpgsig"]):
        raise _bad("commit", oid, "headers other than tree, parent, author, committer, gpgsig in that order")
    if len(parents) > MAX_PARENTS:
        raise _bad("commit", oid, f"more than {MAX_PARENTS} parents")
    fv = dict(fields)
    if not all(_OID.fullmatch(v) for v in [fv[b"tree"], *parents]):
        raise _bad("commit", oid, "a tree or parent that is not a full object id")
    author = _IDENT.fullmatch(fv[b"author"])
    committer = _IDENT.fullmatch(fv[b"committer"])
    if author is None or committer is None:
        raise _bad("commit", oid, "an author or committer that is not 'name <email> time +0000'")
    if author.group(1, 2, 3) != committer.group(1, 2, 3):
        raise _bad("commit", oid, "a committer other than its author (name, email and time)")
    if len(message) > MAX_MESSAGE_BYTES or not _MESSAGE.fullmatch(message):
        raise _bad("commit", oid, f"a message that is not printable ASCII of at most {MAX_MESSAGE_BYTES} bytes")
    return CommitHeader(fv[b"tree"].decode("ascii"), tuple(p.decode("ascii") for p in parents), keys[-1] == b"gpgsig")
