"""``pk vaults``: create, list, rename, delete, log, version, members, verify, reset.

Every vault and secret command calls :func:`backend`, which yields a
:class:`polykey.agent_client.vaults.VaultClient`: typed calls to the node's agent,
which is started on demand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from polykey.cli.common import Options, common_options, emit, settings
from polykey.errors import InvalidInputError

if TYPE_CHECKING:
    from polykey.agent_client.vaults import VaultClient


@contextmanager
def backend(s: Options) -> Iterator[VaultClient]:
    """The vault API for one command, called through the node's agent (started on demand; see
    polykey.cli.agent.session)."""
    from polykey.agent_client.vaults import VaultClient
    from polykey.cli.agent import session

    with VaultClient(session(s)) as client:
        yield client


def utf8(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Argument callback: vault names, secret paths and commits are UTF-8 text (the agent protocol is
    JSON). A non-UTF-8 argument is one usage error, not an internal one."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(f"{param.human_readable_name} is not valid UTF-8 text") from None
    return value


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def short(node_id: str | None) -> str:
    return "-" if node_id is None else node_id[:12] + "…"


def commit_lines(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['commit'][:12]}  {when(r['time'])}  {short(r['author'])}  {r['message']}" for r in rows)


@click.group()
@common_options
def vaults() -> None:
    """Manage vaults: encrypted, signed, git-backed collections of secrets."""


@vaults.command("create")
@click.argument("name", callback=utf8)
@common_options
def vaults_create(name: str) -> None:
    """Create a vault NAME with this node as its sole owner."""
    s = settings()
    with backend(s) as b:
        out = b.create_vault(name)
    emit(s, f"Vault {out['name']} created ({out['vaultId']}).", out)


@vaults.command("list")
@common_options
def vaults_list() -> None:
    """List the vaults on this node: name, VaultId and this node's role."""
    from polykey.cli import hot

    hot.vaults_list(settings())


@vaults.command("rename")
@click.argument("old", callback=utf8)
@click.argument("new", callback=utf8)
@common_options
def vaults_rename(old: str, new: str) -> None:
    """Rename vault OLD to NEW (local name only; its VaultId and history do not change)."""
    s = settings()
    with backend(s) as b:
        out = b.rename_vault(old, new)
    emit(s, f"Vault {old} renamed to {out['name']}.", out)


@vaults.command("delete")
@click.argument("name", callback=utf8)
@click.option("--yes", "-y", is_flag=True, help="Confirm without being asked (needed when there is no terminal).")
@common_options
def vaults_delete(name: str, yes: bool) -> None:
    """Delete vault NAME and all its history from this node.

    Asks first on a terminal; without one, --yes is required. Other members' copies are untouched.
    """
    from polykey.cli import confirm

    s = settings()
    ask = confirm.must_ask(yes, f"delete vault {name!r}")
    with backend(s) as b:
        if ask:
            ids = [r["vaultId"] for r in b.list_vaults() if name in (r["name"], r["vaultId"])]
            shown = f"{name!r} ({ids[0]})" if ids else repr(name)
            confirm.ask(f"Delete vault {shown} and all its history from this node?")
        out = b.delete_vault(name)
    emit(s, f"Vault {out['name']} deleted.", out)


@vaults.command("log")
@click.argument("vault", callback=utf8)
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Show at most N commits.")
@common_options
def vaults_log(vault: str, limit: int | None) -> None:
    """The vault's commits, newest first: id, time (UTC), author NodeId, message."""
    s = settings()
    with backend(s) as b:
        rows = b.log(vault, limit)
    emit(s, commit_lines(rows), rows)


@vaults.command("version")
@click.argument("vault", callback=utf8)
@click.argument("commit", callback=utf8)
@common_options
def vaults_version(vault: str, commit: str) -> None:
    """Show VAULT as it was at COMMIT (read-only). Read values with `pk secrets get --commit`."""
    s = settings()
    with backend(s) as b:
        out = b.version(vault, commit)
    lines = [commit_lines([out])] + [
        f"{e['path']}/" if e["type"] == "dir" else e["path"] for e in out["secrets"]
    ]
    emit(s, "\n".join(lines), out)


@vaults.command("members")
@click.argument("vault", callback=utf8)
@common_options
def vaults_members(vault: str) -> None:
    """The vault's members, their roles (owner, writer, reader) and this node's last sync with each."""
    s = settings()
    with backend(s) as b:
        rows = b.members(vault)
    emit(s, "\n".join(f"{r['nodeId']}\t{r['role']}" + ("  (this node)" if r["self"] else
                                                        f"\tlast sync {when(r['lastSync']) if r.get('lastSync') else 'never'}") for r in rows), rows)


@vaults.command("verify")
@click.argument("vault", callback=utf8)
@common_options
def vaults_verify(vault: str) -> None:
    """Check every commit's signature and its author's right to make it. Fails on the first bad commit."""
    s = settings()
    with backend(s) as b:
        out = b.verify(vault)
    emit(s, f"Vault {vault} verified: {out['commits']} commits, all correctly signed by allowed members.", out)


@vaults.command("reset")
@click.argument("vault", callback=utf8)
@click.option("--to", "to", required=True, callback=utf8, metavar="COMMIT", help="The commit to reset the vault to.")
@click.option("--yes", "-y", is_flag=True, help="Confirm without being asked (needed when there is no terminal).")
@common_options
def vaults_reset(vault: str, to: str, yes: bool) -> None:
    """Reset VAULT's history to COMMIT and trust it from there on (owners only).

    The way out of a rollback or a bad commit: COMMIT's whole history must verify. Commits after it
    are no longer part of the vault. Asks first on a terminal; without one, --yes is required.
    """
    from polykey.cli import confirm

    s = settings()
    confirm.confirm(yes, f"reset vault {vault!r}",
                    f"Reset vault {vault!r} to commit {to}? Commits after it leave the vault's history.")
    with backend(s) as b:
        out = b.reset_vault(vault, to)
    lines = [f"Vault {vault} reset to {out['commit']} (its branch was at {out['previous'] or 'nothing'}; "
             f"the head this node last verified was {out['verified'] or 'unknown'})."]
    if out["pending"]:
        lines.append(f"The node's vault state was rebuilt: {out['pending']} other vault(s) will be verified "
                     "in full at their next use.")
    emit(s, "\n".join(lines), out)
