"""``pk bootstrap`` and ``pk keys``: node identity."""

from __future__ import annotations

from pathlib import Path

import click

from polykey import crypto, fsutil
from polykey.cli.common import (
    Settings,
    common_options,
    emit,
    kdf_limits,
    kdf_option,
    node_password,
    prompt_password,
    read_secret_file,
    settings,
)
from polykey.errors import InvalidInputError, NodeExistsError
from polykey.ids import NodeId
from polykey.keys import recovery
from polykey.keys.keypair import KeyPair, ssh_public_key_line

_CODE_FILE_LIMIT = 1024


def _write_recovery_code(path: Path, words: list[str]) -> None:
    if path.exists():
        raise InvalidInputError(f"{path} already exists; refusing to overwrite a recovery code file")
    fsutil.atomic_write(path, (" ".join(words) + "\n").encode("ascii"))


def _replace_node(s: Settings, pair: KeyPair, password: bytes, limits: crypto.KdfLimits, fresh: bool) -> None:
    """Create the node; with ``fresh`` first stop an agent serving the node being replaced."""
    if fresh and s.node.exists():
        from polykey.cli.agent import stop_agent

        stop_agent(s)
    s.node.create(pair, password, limits, fresh=fresh)


@click.command()
@click.option(
    "--recovery-code-out-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the recovery code to this new file (0600) instead of printing it.",
)
@click.option("--fresh", is_flag=True, help="Replace an existing node at the node path (its keys and vaults are lost).")
@kdf_option
@common_options
def bootstrap(recovery_code_out_file: Path | None, fresh: bool, kdf_profile: str | None) -> None:
    """Create a new node: a root keypair, its NodeId and a 24-word recovery code.

    The recovery code is shown exactly once; it rebuilds the same node with
    `pk keys recover`. The private key is stored encrypted under the node
    password (asked twice on a terminal, or --password-file / PK_PASSWORD).
    """
    s = settings()
    limits = kdf_limits(kdf_profile)
    if s.node.exists() and not fresh:
        raise NodeExistsError(f"a node already exists at {s.node_path} (use --fresh to replace it)")
    password = node_password(s, confirm=True, prompt="New node password: ")
    words = recovery.new_code()
    pair = KeyPair.from_seed(recovery.code_to_ed25519_seed(words))
    _replace_node(s, pair, password, limits, fresh)
    code = " ".join(words)
    if recovery_code_out_file is not None:
        _write_recovery_code(recovery_code_out_file, words)
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
    public = s.node.public_key()
    pair_id = NodeId(public)
    line = ssh_public_key_line(public, str(pair_id))
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
@kdf_option
@common_options
def keys_password(new_password_file: Path | None, kdf_profile: str | None) -> None:
    """Change the node password. The current one comes from --password-file, PK_PASSWORD or a prompt."""
    s = settings()
    current = s.node.read_keyfile()
    old = node_password(s, prompt="Current node password: ")
    new = (
        read_secret_file(new_password_file, "new password file")
        if new_password_file is not None
        else prompt_password("New node password: ", confirm=True)
    )
    limits = kdf_limits(kdf_profile) if kdf_profile else current.limits
    s.node.change_password(old, new, limits)
    emit(s, "Password changed.", {"changed": True})


@keys.command("recover")
@click.option(
    "--recovery-code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the 24 words from this file (else asked on the terminal).",
)
@click.option("--fresh", is_flag=True, help="Replace an existing node at the node path.")
@kdf_option
@common_options
def keys_recover(recovery_code_file: Path | None, fresh: bool, kdf_profile: str | None) -> None:
    """Rebuild a node's keypair from its 24-word recovery code, under a new password."""
    s = settings()
    limits = kdf_limits(kdf_profile)
    if recovery_code_file is not None:
        raw = read_secret_file(recovery_code_file, "recovery code file")
        text = raw.decode("utf-8", errors="replace")
    else:
        text = prompt_password("Recovery code: ", confirm=False).decode("utf-8")
    words = recovery.parse_code(text)
    if s.node.exists() and not fresh:
        raise NodeExistsError(f"a node already exists at {s.node_path} (use --fresh to replace it)")
    password = node_password(s, confirm=True, prompt="New node password: ")
    pair = KeyPair.from_seed(recovery.code_to_ed25519_seed(words))
    _replace_node(s, pair, password, limits, fresh)
    emit(
        s,
        f"Node recovered at {s.node_path}\nNodeId: {pair.node_id}",
        {"nodeId": str(pair.node_id), "nodePath": str(s.node_path)},
    )
