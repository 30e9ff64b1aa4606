"""Git object encodings we write ourselves, sans-I/O (git's format; docs/spec/vault-format.md §1, §5).

Each vault write stages its objects (blobs, trees, the signed commit) in memory and
stores them as one pack, so a write costs two new files instead of one per object.
"""

from __future__ import annotations

from collections.abc import Callable

MODE_TREE = 0o040000
MODE_BLOB = 0o100644

#: Tree entries: name -> (mode, 20-byte object id).
Entries = dict[str, tuple[int, bytes]]


def tree_bytes(entries: Entries) -> bytes:
    """A git tree object's content, entries in git's order (a tree sorts as ``name + "/"``)."""

    def key(name: str) -> bytes:
        return name.encode("utf-8") + (b"/" if entries[name][0] == MODE_TREE else b"")

    out = []
    for name in sorted(entries, key=key):
        mode, raw = entries[name]
        if len(raw) != 20 or not name or "/" in name or "\0" in name:
            raise ValueError("invalid tree entry")
        out.append(b"%o %s\0" % (mode, name.encode("utf-8")) + raw)
    return b"".join(out)


def commit_header(tree: str, parents: list[str], name: str, email: str, when: int) -> str:
    for text in (name, email):
        if any(c in text for c in "<>\n\0"):
            raise ValueError("invalid commit identity")
    ident = f"{name} <{email}> {when} +0000"
    return f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + f"author {ident}\ncommitter {ident}\n"


def signed_commit_bytes(
    tree: str, parents: list[str], name: str, email: str, when: int, message: str,
    signer: Callable[[bytes], str],
) -> bytes:
    """The commit object with its ``gpgsig`` header, laid out as git and libgit2 write it.

    ``signer`` gets the payload git verifies (the commit without ``gpgsig``) and returns the
    armored signature.
    """
    header = commit_header(tree, parents, name, email, when)
    payload = (header + "\n" + message).encode("utf-8")
    armored = signer(payload).rstrip("\n")
    return (header + "gpgsig " + armored.replace("\n", "\n ") + "\n\n" + message).encode("utf-8")
