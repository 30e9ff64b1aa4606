"""History queries on an open :class:`Vault`: log, version, history of one path, stat."""

from __future__ import annotations

from typing import Any

from polykey.errors import SecretNotFoundError
from polykey.vaults.format import join_path, secret_size
from polykey.vaults.repo import BLOB, CommitInfo, Entry
from polykey.vaults.vault import Parts, Vault

JSON = dict[str, Any]


def commit_json(c: CommitInfo) -> JSON:
    return {
        "commit": c.id,
        "parents": list(c.parents),
        "author": c.author_name,
        "time": c.time,
        "message": c.message.rstrip("\n"),
    }


def log(v: Vault, limit: int | None) -> list[JSON]:
    with v.repo.read_lock():
        head = v.snapshot().commit
        out: list[JSON] = []
        for c in v.repo.walk(head):
            if limit is not None and len(out) >= limit:
                break
            out.append(commit_json(c))
        return out


def version(v: Vault, commit: str) -> JSON:
    with v.repo.read_lock():
        snap = v.snapshot(commit)
        c = v.repo.commit_info(snap.commit)
        entries = [
            {"path": join_path(p), "type": "secret" if e.kind == BLOB else "dir"}
            for p, e in v.walk(snap, snap.tree, (), True)
        ]
        return {**commit_json(c), "secrets": sorted(entries, key=lambda e: e["path"])}


def _entry_at(v: Vault, commit: str, parts: Parts) -> Entry | None:
    snap = v.load(commit)
    if snap.keys is None:
        return None
    return v.find(snap, parts)


def history(v: Vault, parts: Parts, limit: int | None = None) -> list[JSON]:
    """Commits that changed ``parts`` (created, modified, removed), newest first."""
    with v.repo.read_lock():
        head = v.snapshot().commit
        out: list[JSON] = []
        seen: dict[str, Entry | None] = {}

        def at(commit: str) -> Entry | None:
            if commit not in seen:
                seen[commit] = _entry_at(v, commit, parts)
            return seen[commit]

        for c in v.repo.walk(head):
            if limit is not None and len(out) >= limit:
                break
            now = at(c.id)
            before = [at(p) for p in c.parents]
            if before and all(b == now for b in before):
                continue
            if now is None and not any(before):
                continue
            if now is None:
                action = "removed"
            elif not any(before):
                action = "created"
            else:
                action = "modified"
            size = None
            if now is not None and now.kind == BLOB:
                size = secret_size(v.repo.blob_size(now.oid))
            out.append({**commit_json(c), "action": action, "size": size,
                        "type": None if now is None else ("secret" if now.kind == BLOB else "dir")})
        return out


def stat(v: Vault, parts: Parts) -> JSON:
    with v.repo.read_lock():
        snap = v.snapshot()
        e = v.find(snap, parts)
        if e is None:
            raise SecretNotFoundError(f"no secret or directory {join_path(parts)!r} in this vault")
        revisions = history(v, parts)
        life = []
        for r in revisions:
            if r["action"] == "removed":
                break
            life.append(r)
        first, last = (life[-1], life[0]) if life else (None, None)
        if e.kind == BLOB:
            size = secret_size(v.repo.blob_size(e.oid))
            entries = None
        else:
            size = None
            entries = sum(1 for _ in v.walk(snap, e.oid, (), False))
        return {
            "path": join_path(parts) or "/",
            "type": "secret" if e.kind == BLOB else "dir",
            "size": size,
            "entries": entries,
            "created": first["time"] if first else None,
            "modified": last["time"] if last else None,
            "author": last["author"] if last else None,
            "revisions": len(life),
            "commit": last["commit"] if last else None,
        }

