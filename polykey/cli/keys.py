"""``pk bootstrap`` and ``pk keys``: node identity."""

from __future__ import annotations

import os
from pathlib import Path

import click

from polykey import fsutil
from polykey.agent_client.passwords import check_new_password
from polykey.cli import confirm
from polykey.crypto import memory, sshsig
from polykey.cli.common import (
    Options,
    common_options,
    emit,
    kdf_limits,
    kdf_option,
    node_password,
    prompt_password,
    read_secret_file,
    settings,
)
from polykey.errors import InvalidInputError, KeyFileError, NodeExistsError
from polykey.ids import NodeId
from polykey.keys import recovery
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir

_CODE_FILE_LIMIT = 1024


def _node(s: Options) -> NodeDir:
    """The node directory the common options name."""
    return NodeDir(Path(s.node_path))


def _check_code_out_file(path: Path, node_path: Path) -> None:
    """Everything that could stop the recovery code file from being written, checked up front."""
    if path.absolute().is_relative_to(node_path.absolute()):
        raise InvalidInputError(f"the recovery code file {path} must not be inside the node directory {node_path}")
    if os.path.lexists(path):
        raise InvalidInputError(f"{path} already exists; refusing to overwrite a recovery code file")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InvalidInputError(f"cannot write the recovery code to {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"cannot write the recovery code to {path}: directory {parent} is not writable")


def _write_recovery_code(path: Path, words: list[str]) -> None:
    try:
        fsutil.atomic_write(path, (" ".join(words) + "\n").encode("ascii"), exclusive=True)
    except FileExistsError:
        raise InvalidInputError(f"{path} already exists; refusing to overwrite a recovery code file") from None
    except OSError as e:
        raise InvalidInputError(f"cannot write the recovery code to {path}: {e.strerror}") from None


def _check_index_opens(node_path: Path, pair: KeyPair) -> None:
    """NodeExistsError unless the vault name index at ``node_path`` (if any) opens with ``pair``'s key:
    words of another node must not be written beside this node's vaults."""
    from polykey.errors import VaultIndexError
    from polykey.vaults import index

    path = node_path / "vaults" / "index"
    if not path.exists():
        return
    key = index.index_key(pair.seed)
    try:
        index.decode(key, fsutil.read_limited(path, index.MAX_INDEX_BYTES))
    except (VaultIndexError, ValueError):
        raise NodeExistsError(
            f"the recovery code is for node {pair.node_id}, but the vaults at {node_path} are not its own; "
            "recover into another --node-path"
        ) from None
    finally:
        memory.wipe(key)


def _stop_agent_of(s: Options) -> None:
    """Stop an agent serving the node about to be replaced (it holds the old identity)."""
    from polykey.cli.agent import stop_agent

    stop_agent(s)


yes_option = click.option("--yes", "-y", is_flag=True, help="Confirm without being asked (needed when there is no terminal).")
weak_password_option = click.option(
    "--allow-weak-password", is_flag=True, help="Accept a new password shorter than 8 characters."
)


@click.command()
@click.option(
    "--recovery-code-out-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the recovery code to this new file (0600) instead of printing it; it must not exist.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Replace an existing node at the node path: its keys, vaults and every other file are lost "
    "(asks first; --yes without a terminal).",
)
@yes_option
@weak_password_option
@kdf_option
@common_options
def bootstrap(recovery_code_out_file: Path | None, fresh: bool, yes: bool, allow_weak_password: bool,
              kdf_profile: str | None) -> None:
    """Create a new node: a root keypair, its NodeId and a 24-word recovery code.

    The recovery code is shown exactly once; it rebuilds the same node with
    `pk keys recover`. The private key is stored encrypted under the node
    password (asked twice on a terminal, or --password-file / PK_PASSWORD; at
    least 8 characters). Every input and output is checked first and the node
    is created all or nothing: a failure leaves no node and never replaces one.
    """
    s = settings()
    limits = kdf_limits(kdf_profile)
    replacing = _node(s).check_creatable(fresh=fresh)
    if recovery_code_out_file is not None:
        _check_code_out_file(recovery_code_out_file, Path(s.node_path))
    if replacing:
        try:
            old: str = str(NodeId(_node(s).public_key()))
        except KeyFileError:
            old = "(damaged key file)"
        confirm.confirm(
            yes,
            f"replace the node at {s.node_path}",
            f"Replace node {old} at {s.node_path}? Its keys, vaults and every other file in it are lost.",
        )
    password = check_new_password(node_password(s, confirm=True, prompt="New node password: "),
                                  allow_weak=allow_weak_password)
    words = recovery.new_code()
    pair = KeyPair.from_seed(recovery.code_to_ed25519_seed(words))

    written: list[Path] = []

    def before_commit() -> None:
        if replacing:
            _stop_agent_of(s)
        if recovery_code_out_file is not None:
            _write_recovery_code(recovery_code_out_file, words)
            written.append(recovery_code_out_file)

    try:
        _node(s).create(pair, password, limits, fresh=fresh, before_commit=before_commit)
    except BaseException:
        for path in written:  # the code of a node that was never put in place
            path.unlink(missing_ok=True)
        raise
    code = " ".join(words)
    if recovery_code_out_file is not None:
        emit(
            s,
            f"Node created at {s.node_path}\nNodeId: {pair.node_id}\n"
            f"Recovery code written to {recovery_code_out_file}",
            {"nodeId": str(pair.node_id), "nodePath": str(s.node_path),
             "recoveryCodeFile": str(recovery_code_out_file)},
        )
        return
    emit(
        s,
        f"Node created at {s.node_path}\nNodeId: {pair.node_id}\n"
        "Recovery code (shown only this once; write it down and keep it safe):\n" + code,
        {"nodeId": str(pair.node_id), "nodePath": str(s.node_path), "recoveryCode": code},
    )


@click.group()
def keys() -> None:
    """Manage the node's root keypair: show, change password, recover."""


@keys.command("public")
@click.option("--ssh", is_flag=True, help="Print an ssh-ed25519 line for git's allowed-signers file.")
@common_options
def keys_public(ssh: bool) -> None:
    """Show the NodeId and public key. Needs no password."""
    s = settings()
    public = _node(s).public_key()
    pair_id = NodeId(public)
    line = sshsig.public_key_line(public, str(pair_id))
    if ssh and not s.json:
        click.echo(line)
        return
    emit(
        s,
        f"NodeId: {pair_id}\nPublic key: {public.hex()}",
        {"nodeId": str(pair_id), "publicKey": public.hex(), "ssh": line},
    )


@keys.command("password")
@click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the new password from this file (else asked twice on the terminal).",
)
@weak_password_option
@kdf_option
@common_options
def keys_password(new_password_file: Path | None, allow_weak_password: bool, kdf_profile: str | None) -> None:
    """Change the node password (the new one: at least 8 characters).

    The current one comes from --password-file, PK_PASSWORD or a prompt.
    """
    s = settings()
    current = _node(s).read_keyfile()
    old = node_password(s, prompt="Current node password: ")
    new = (
        read_secret_file(new_password_file, "new password file")
        if new_password_file is not None
        else prompt_password("New node password: ", confirm=True)
    )
    check_new_password(new, allow_weak=allow_weak_password)
    limits = kdf_limits(kdf_profile) if kdf_profile else current.limits
    _node(s).change_password(old, new, limits)
    emit(s, "Password changed.", {"changed": True})


@keys.command("recover")
@click.option(
    "--recovery-code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the 24 words from this file (else asked on the terminal).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="The node already exists here: write its key file anew under the new password. Only the old "
    "key file (its password) is discarded; vaults and every other file are kept (asks first; --yes "
    "without a terminal). Refused if the words are another node's.",
)
@yes_option
@weak_password_option
@kdf_option
@common_options
def keys_recover(recovery_code_file: Path | None, fresh: bool, yes: bool, allow_weak_password: bool,
                 kdf_profile: str | None) -> None:
    """Rebuild a node's keypair from its 24-word recovery code, under a new password.

    The same words always give the same NodeId. Into an empty node path this creates the node;
    over the same node (--fresh, e.g. a forgotten password) it replaces only keys/node.key, so
    every vault, which is wrapped to that same key, stays readable.
    """
    s = settings()
    limits = kdf_limits(kdf_profile)
    exists = _node(s).exists()
    # A node whose key file was lost: its vaults are still there, wrapped to the recovered key.
    keyless = not exists and (Path(s.node_path) / "vaults").is_dir()
    if exists and not fresh:
        raise NodeExistsError(f"a node already exists at {s.node_path} (use --fresh to give it a new key file)")
    if keyless and not fresh:
        raise NodeExistsError(f"{s.node_path} holds a node whose key file is missing (use --fresh to write it anew)")
    if not exists and not keyless:
        _node(s).check_creatable()
    if recovery_code_file is not None:
        raw = read_secret_file(recovery_code_file, "recovery code file")
        text = raw.decode("utf-8", errors="replace")
    else:
        text = prompt_password("Recovery code: ", confirm=False).decode("utf-8")
    words = recovery.parse_code(text)
    pair = KeyPair.from_seed(recovery.code_to_ed25519_seed(words))
    if keyless:
        _check_index_opens(Path(s.node_path), pair)
    if exists or keyless:
        _node(s).check_own_key(pair)
        confirm.confirm(
            yes,
            f"replace the key file of the node at {s.node_path}",
            f"Replace the key file of node {pair.node_id} at {s.node_path}? Its vaults are kept; "
            "the old password stops working.",
        )
    password = check_new_password(node_password(s, confirm=True, prompt="New node password: "),
                                  allow_weak=allow_weak_password)
    if exists or keyless:
        _node(s).rekey(pair, password, limits)
    else:
        _node(s).create(pair, password, limits)
    emit(
        s,
        f"Node recovered at {s.node_path}\nNodeId: {pair.node_id}",
        {"nodeId": str(pair.node_id), "nodePath": str(s.node_path), "keptExisting": exists or keyless},
    )
