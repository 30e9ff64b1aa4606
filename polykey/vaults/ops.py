"""Tree-changing secret operations on an open :class:`Vault` (one signed commit each).

Commit messages name the operation and a count, never a secret name (spec section 6).
"""

from __future__ import annotations

from typing import Any

from polykey.errors import (
    InvalidInputError,
    SecretExistsError,
    SecretIsDirectoryError,
    SecretNotDirectoryError,
    SecretNotFoundError,
)
from polykey.vaults.format import join_path
from polykey.vaults.repo import BLOB, TREE, Change, Entry
from polykey.vaults.vault import MARKER, Parts, Snapshot, Vault, check_not_root

JSON = dict[str, Any]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def set_secret(v: Vault, parts: Parts, value: bytes, message: str = "set secret\n", *, replace: bool = True) -> JSON:
    check_not_root(parts)

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        e = v.find(snap, parts)
        if e is not None and e.kind == TREE:
            raise SecretIsDirectoryError(f"{join_path(parts)} is a directory; cannot write a secret over it")
        if e is not None and not replace:
            raise SecretExistsError(f"{join_path(parts)} already exists")
        if e is None:
            v.check_parents(snap, parts)
        blob = v.encrypt(snap, parts, value)
        return {parts: Entry(BLOB, blob)}, message, {"path": join_path(parts), "created": e is None}

    return v.write(build)


def import_secrets(v: Vault, items: dict[Parts, bytes]) -> JSON:
    if not items:
        raise InvalidInputError("nothing to import")
    prefixes = {p[:k] for p in items for k in range(1, len(p))}
    for p in items:
        check_not_root(p)
        if p in prefixes:
            raise InvalidInputError(f"{join_path(p)} is both a secret and a directory in the import")

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        dirs_ok: dict[Parts, bool] = {}
        created = 0
        for parts in items:
            e = v.find(snap, parts)
            created += e is None
            if e is not None and e.kind == TREE:
                raise SecretIsDirectoryError(f"{join_path(parts)} is a directory; cannot write a secret over it")
            if e is None and len(parts) > 1 and parts[:-1] not in dirs_ok:
                v.check_parents(snap, parts)
                for k in range(1, len(parts)):
                    dirs_ok[parts[:k]] = True
        oids = v.encrypt_many(snap, list(items.items()))
        changes: dict[Parts, Change] = {parts: Entry(BLOB, oid) for parts, oid in zip(items, oids)}
        return changes, f"import {_plural(len(items), 'secret')}\n", {"count": len(items), "created": created}

    return v.write(build)


def _secret_count(v: Vault, snap: Snapshot, e: Entry) -> int:
    if e.kind == BLOB:
        return 1
    return sum(1 for _p, found in v.walk(snap, e.oid, (), True) if found.kind == BLOB)


def remove(v: Vault, parts: Parts, recursive: bool) -> JSON:
    check_not_root(parts)

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        e = v.find(snap, parts)
        if e is None:
            raise SecretNotFoundError(f"no secret or directory {join_path(parts)!r} in this vault")
        count = _secret_count(v, snap, e)
        if e.kind == TREE and count and not recursive:
            raise SecretIsDirectoryError(f"{join_path(parts)} is a directory that is not empty; use -r")
        noun = "secret" if e.kind == BLOB else "directory"
        return {parts: None}, f"remove {noun} ({_plural(count, 'secret')})\n", {"removed": count}

    return v.write(build)


def mkdir(v: Vault, parts: Parts, parents: bool) -> JSON:
    check_not_root(parts)

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        e = v.find(snap, parts)
        if e is not None and e.kind == TREE:
            raise SecretExistsError(f"directory {join_path(parts)} already exists")
        if e is not None:
            raise SecretNotDirectoryError(f"{join_path(parts)} is a secret; cannot make a directory over it")
        v.check_parents(snap, parts)
        if not parents and len(parts) > 1 and v.find(snap, parts[:-1]) is None:
            raise SecretNotFoundError(f"no directory {join_path(parts[:-1])!r} (use --parents)")
        return {parts + (MARKER,): Entry(BLOB, v.empty_blob())}, "create directory\n", {"path": join_path(parts)}

    return v.write(build)


def transfer(v: Vault, src: Parts, dst: Parts, *, keep_source: bool) -> JSON:
    """``mv`` (``keep_source=False``) or ``cp``: re-encrypts every secret under its new path."""
    check_not_root(src)

    def build(snap: Snapshot) -> tuple[dict[Parts, Change], str, JSON]:
        se = v.find(snap, src)
        if se is None:
            raise SecretNotFoundError(f"no secret or directory {join_path(src)!r} in this vault")
        target = dst
        de = v.find(snap, target)
        if de is not None and de.kind == TREE:
            target = target + (src[-1],)
            de = v.find(snap, target)
        if target == src:
            raise InvalidInputError("source and destination are the same")
        if target[: len(src)] == src:
            raise InvalidInputError("cannot move or copy a directory into itself")
        if de is not None:
            if de.kind == TREE:
                raise SecretIsDirectoryError(f"{join_path(target)} is a directory; cannot write a secret over it")
            if se.kind == TREE:
                raise SecretNotDirectoryError(f"{join_path(target)} is a secret; cannot write a directory over it")
        else:
            v.check_parents(snap, target)
        entries = [((), se)] if se.kind == BLOB else list(v.walk(snap, se.oid, (), True, markers=True))
        changes: dict[Parts, Change] = {}
        count = 0
        for rel, e in entries:
            if e.kind != BLOB:
                continue
            if rel and rel[-1] == MARKER:
                changes[target + rel] = e
                continue
            value = v.decrypt(snap, src + rel, e.oid)
            changes[target + rel] = Entry(BLOB, v.encrypt(snap, target + rel, value))
            count += 1
        if not keep_source:
            changes[src] = None
        verb = "copy" if keep_source else "move"
        return changes, f"{verb} {_plural(count, 'secret')}\n", {"path": join_path(target), "count": count}

    return v.write(build)
