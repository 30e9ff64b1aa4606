"""What an attacker with write access to a node's vault directory can build there, with stock git.

Objects are written with `git hash-object --literally` / `git mktree` and the branch moved with
`git update-ref`, exactly as someone with disk access would; commits are signed (or not) with a
key the test chooses, using the project's own commit layout.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from polykey.crypto import sshsig
from polykey.ids import NodeId, VaultId
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir
from polykey.vaults.format import EpochKeys, Members, VaultInfo, WrappedKeys, keys_file_name
from polykey.vaults.identity import author_email
from polykey.vaults.objects import commit_header

from ..conftest import Node


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, check=True)
    return r.stdout.decode().strip()


def owner_key(node: Node) -> KeyPair:
    return NodeDir(node.path).unlock(node.password_file.read_text().strip().encode())


def repo_of(node: Node, vault_id: str) -> Path:
    return node.path / "vaults" / f"{vault_id}.git"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "refs/heads/main")


def write(repo: Path, kind: str, data: bytes) -> str:
    return git(repo, "hash-object", "--literally", "-t", kind, "-w", "--stdin", input=data)


def tree(repo: Path, entries: list[tuple[str, str, str]]) -> str:
    """A tree of ``(mode, name, oid)`` entries in the order given (unsorted if so given)."""
    return write(repo, "tree", b"".join(f"{m} {n}\0".encode() + bytes.fromhex(o) for m, n, o in entries))


def entries(repo: Path, tree_oid: str) -> list[tuple[str, str, str]]:
    out = []
    for line in git(repo, "ls-tree", tree_oid).splitlines():
        meta, name = line.split("\t")
        mode, _kind, oid = meta.split()
        out.append((mode.lstrip("0"), name, oid))
    return out


def commit(repo: Path, tree_oid: str, parents: list[str], who: NodeId, signer: KeyPair | None,
           extra_header: str = "", message: str = "set secret\n", when: int | None = None) -> str:
    """A commit claiming author ``who``, signed by ``signer`` (None: unsigned), with ``extra_header``
    lines after the committer, dated ``when`` (now by default: commit times never go back)."""
    when = int(time.time()) if when is None else when
    header = commit_header(tree_oid, parents, str(who), author_email(who), when) + extra_header
    if signer is None:
        return write(repo, "commit", (header + "\n" + message).encode())
    armored = sshsig.sign(signer.seed, (header + "\n" + message).encode()).rstrip("\n")
    return write(repo, "commit", (header + "gpgsig " + armored.replace("\n", "\n ") + "\n\n" + message).encode())


def move_main(repo: Path, oid: str) -> None:
    git(repo, "update-ref", "refs/heads/main", oid)


def attacker_vault_tree(repo: Path, vault_id: str, node_id: str, path: tuple[str, ...], value: bytes) -> str:
    """The issue 11 attack: a new epoch-0 secret sealed to the node's public key (a NodeId is one),
    and ``value`` encrypted under it with the project's own codecs, at ``path``."""
    vid, me = VaultId.from_text(vault_id), NodeId.from_text(node_id)
    secret = b"\x42" * 32
    return vault_tree(repo, VaultInfo(vid, 0), Members(((me, "owner"),)), WrappedKeys.create(0, secret, [me]),
                      secret, path, value)


def vault_tree(repo: Path, info: VaultInfo, members: Members, wrapped: WrappedKeys, secret: bytes,
               path: tuple[str, ...], value: bytes, replicas: bytes | None = None) -> str:
    """A whole vault tree: ``.pk`` of ``info``, ``members`` and ``wrapped`` (the keys file of
    ``wrapped.epoch``), and ``value`` at ``path`` encrypted under ``secret`` at ``info``'s epoch (which
    need not be what ``wrapped`` holds: the attacker chooses)."""
    keys = EpochKeys.derive(info.vault_id, info.epoch, secret)
    oid, mode = write(repo, "blob", keys.encrypt_secret("/".join(path), value)), "100644"
    names = [keys.encrypt_name(p) for p in path]
    for name in reversed(names[1:]):
        oid, mode = tree(repo, [(mode, name, oid)]), "40000"
    keys_tree = tree(repo, [("100644", keys_file_name(wrapped.epoch), write(repo, "blob", wrapped.encode()))])
    pk_entries = [("40000", "keys", keys_tree),
                  ("100644", "members", write(repo, "blob", members.encode())),
                  ("100644", "vault", write(repo, "blob", info.encode()))]
    if replicas is not None:
        pk_entries.insert(2, ("100644", "replicas", write(repo, "blob", replicas)))
    pk = tree(repo, pk_entries)
    root = sorted([(".pk", "40000", pk), (names[0], mode, oid)], key=lambda e: e[0] + ("/" if e[1] == "40000" else ""))
    return tree(repo, [(m, n, o) for n, m, o in root])


def vault_info(repo: Path, commit: str) -> VaultInfo:
    """The ``.pk/vault`` of ``commit``."""
    return VaultInfo.decode(subprocess.run(["git", "-C", str(repo), "cat-file", "blob", f"{commit}:.pk/vault"],
                                           capture_output=True, check=True).stdout)


def wrapped_keys(repo: Path, commit: str, epoch: int = 0) -> WrappedKeys:
    """The ``.pk/keys/<epoch>`` file of ``commit``."""
    return WrappedKeys.decode(subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", f"{commit}:.pk/keys/{keys_file_name(epoch)}"],
        capture_output=True, check=True).stdout)


def put(repo: Path, tree_oid: str, parts: tuple[str, ...], mode: str, oid: str) -> str:
    """``tree_oid`` with the entry at ``parts`` set to ``(mode, oid)`` (git's order kept)."""
    found = {n: (m, o) for m, n, o in entries(repo, tree_oid)}
    if len(parts) == 1:
        found[parts[0]] = (mode, oid)
    else:
        found[parts[0]] = ("40000", put(repo, found[parts[0]][1], parts[1:], mode, oid))
    ordered = sorted(found.items(), key=lambda kv: kv[0] + ("/" if kv[1][0] == "40000" else ""))
    return tree(repo, [(m, n, o) for n, (m, o) in ordered])


def tree_of(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}")
