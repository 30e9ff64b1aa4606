"""``pk vaults share|unshare|invites|scan|clone|pull|push|sync|status`` and ``pk nodes trust|untrust|trusted``.

Sharing and sync (docs/sync.md, docs/spec/sync.md): the agent does the work over the peer
transport; these commands ask it and print what happened. Every command takes --format json;
clone and pull show progress on a terminal, and with --format json write progress events as
JSON lines on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from polykey.cli import hot_sync
from polykey.cli.common import Options, common_options, emit, settings
from polykey.cli.vaults import utf8, vaults, when
from polykey.cli.nodes import nodes

ROLES = ("owner", "writer", "reader")




@vaults.command("share")
@click.argument("vault", callback=utf8)
@click.argument("node_id", metavar="NODEID")
@click.option("--role", type=click.Choice(ROLES), default="reader", show_default=True,
              help="What NODEID may do: read, write secrets, or also change members (owner).")
@common_options
def vaults_share(vault: str, node_id: str, role: str) -> None:
    """Share VAULT with node NODEID (owners only): add it as a member and send it an invite.

    One signed commit adds the member and wraps the vault's key for it; the invite goes over the
    peer transport (if NODEID cannot be reached now, the agent retries with backoff). NODEID
    clones the vault with `pk vaults clone`, or on its own if it trusts this node with
    `pk nodes trust NODEID --auto-accept`. Sharing with a member again changes its role.
    """
    s = settings()
    out = hot_sync.call(s, "vaults.share", {"vault": vault, "nodeId": hot_sync.node_id(node_id), "role": role})
    change = {"added": f"added {node_id} as {out['role']}", "role": f"{node_id} is now {out['role']}",
              "unchanged": f"{node_id} already is {out['role']}"}.get(out.get("changed", ""), "shared")
    invite = ("invite sent" + (" (it clones the vault on its own: it trusts this node)" if out.get("autoAccept") else "")
              if out.get("invite") == "sent" else
              f"invite queued: {out.get('error', 'the node is unreachable')}; the agent retries with backoff")
    emit(s, f"Vault {vault}: {change}; {invite}.", out)


@vaults.command("unshare")
@click.argument("vault", callback=utf8)
@click.argument("node_id", metavar="NODEID")
@click.option("--yes", "-y", is_flag=True, help="Confirm without being asked (needed when there is no terminal).")
@common_options
def vaults_unshare(vault: str, node_id: str, yes: bool) -> None:
    """Remove node NODEID from VAULT (owners only) and re-key the vault.

    One signed commit starts a new key epoch wrapped only for the remaining members and re-encrypts
    every secret under it; NODEID's fetches are refused from then on. History NODEID already
    fetched stays readable to it: the command lists the secrets it could read, to rotate. The last
    owner cannot be removed. Asks first on a terminal; without one, --yes is required.
    """
    from polykey.cli import confirm

    s = settings()
    node = hot_sync.node_id(node_id)
    confirm.confirm(yes, f"unshare vault {vault!r}",
                    f"Remove {node} from vault {vault!r} and re-key it?")
    out = hot_sync.call(s, "vaults.unshare", {"vault": vault, "nodeId": node})
    rotate = out.get("rotate", [])
    lines = [f"Vault {vault}: removed {node}; new key epoch {out.get('epoch')} for the remaining members.",
             "History that node already fetched stays readable to it."]
    if rotate:
        lines.append(f"Rotate these {len(rotate)} secret(s) it could read:")
        lines += [f"  {p}" for p in rotate]
    else:
        lines.append("The vault holds no secrets: nothing to rotate.")
    emit(s, "\n".join(lines), out)


@vaults.command("invites")
@common_options
def vaults_invites() -> None:
    """Invites this node received (clone one with `pk vaults clone`) and invites it is still sending."""
    s = settings()
    out = hot_sync.call(s, "vaults.invites", {})
    lines = []
    for i in out["received"]:
        held = "  (cloned)" if i.get("held") else ""
        lines.append(f"from {i['from']}: {i['name']} ({i['vaultId']}) as {i['role']}, {when(i.get('received'))}{held}")
    for q in out["pending"]:
        lines.append(f"to {q['to']}: {q['name']} ({q['vaultId']}) as {q['role']}: not delivered yet "
                     f"({q.get('error') or 'retrying'}; next try in {q['retryIn']:.0f} s)")
    emit(s, "\n".join(lines) or "(no invites)", out)


@vaults.command("scan")
@click.argument("node_id", metavar="NODEID")
@common_options
def vaults_scan(node_id: str) -> None:
    """The vaults node NODEID shares with this node (its name for each, this node's role)."""
    s = settings()
    rows = hot_sync.call(s, "vaults.scan", {"nodeId": hot_sync.node_id(node_id)})
    lines = [f"{r['name']}\t{r['vaultId']}\t{r['role']}" + ("\t(held here)" if r.get("held") else "") for r in rows]
    emit(s, "\n".join(lines) or "(it shares no vault with this node)", rows)


@vaults.command("clone")
@click.argument("vault", callback=utf8)
@click.argument("node_id", metavar="NODEID")
@click.argument("name", required=False, callback=utf8)
@common_options
def vaults_clone(vault: str, node_id: str, name: str | None) -> None:
    """Clone VAULT (a VaultId, or the name NODEID gave it) from NODEID, as NAME (default: its name there).

    Every commit is verified before the vault appears; a clone stopped half-way leaves nothing.
    """
    s = settings()
    progress = hot_sync.Progress(s, "cloning")
    try:
        out = hot_sync.call(s, "vaults.clone", {"vault": vault, "nodeId": hot_sync.node_id(node_id), "name": name}, progress)
    finally:
        progress.done()
    emit(s, f"Vault {out['name']} cloned from {node_id} ({out['vaultId']}, {out.get('commits', 0)} commits verified).",
         out)


@vaults.command("pull")
@click.argument("vault", callback=utf8)
@click.argument("node_id", metavar="[NODEID]", required=False)
@common_options
def vaults_pull(vault: str, node_id: str | None) -> None:
    """Fetch VAULT's new commits from NODEID (default: every other member in turn), verify, and merge.

    Concurrent changes merge on their own: the same secret changed on both sides keeps the later
    write, and the other value stays in history (reported here and by `pk vaults status`).
    """
    hot_sync.vaults_pull(settings(), vault, hot_sync.node_id(node_id) if node_id else None)


@vaults.command("push")
@click.argument("vault", callback=utf8)
@click.argument("node_id", metavar="[NODEID]", required=False)
@common_options
def vaults_push(vault: str, node_id: str | None) -> None:
    """Tell NODEID (default: every other member) about VAULT's head and wait until it has fetched it.

    The other node fetches and verifies: nothing is written to it that it does not check.
    """
    s = settings()
    rows = hot_sync.call(s, "vaults.push", {"vault": vault, "nodeId": hot_sync.node_id(node_id) if node_id else None})
    lines = [f"{vault} to {r['peer']}: " + (f"failed: {r['error']}" if r.get("action") == "failed" else
                                             hot_sync.ACTIONS.get(r["action"], r["action"])
                                             + (f" ({r['reason']})" if r.get("reason") else ""))
             for r in rows]
    emit(s, "\n".join(lines), rows)


@vaults.command("sync")
@click.argument("vault", required=False, callback=utf8)
@common_options
def vaults_sync(vault: str | None) -> None:
    """Pull from and push to every reachable member of VAULT (default: of every vault)."""
    s = settings()
    rows = hot_sync.call(s, "vaults.sync", {"vault": vault})
    lines = []
    for r in rows:
        if r.get("action") == "failed":
            lines.append(f"{r['vault']} with {r['peer']}: failed: {r['error']}")
        else:
            lines.append(f"{r['vault']} with {r['peer']}: {hot_sync.ACTIONS.get(r['action'], r['action'])}"
                         + (f"; pushed: {hot_sync.ACTIONS.get(r['pushed'], r['pushed'])}" if r.get("pushed") else ""))
            lines += hot_sync.merge_lines(r)
    emit(s, "\n".join(lines) or "(no vault is shared with another node)", rows)


@vaults.command("status")
@click.argument("vault", required=False, callback=utf8)
@common_options
def vaults_status(vault: str | None) -> None:
    """Per member of VAULT (default: every vault): ahead/behind, last sync, last error, last merge."""
    s = settings()
    rows = hot_sync.call(s, "vaults.status", {"vault": vault})
    lines = []
    for v in rows:
        lines.append(f"{v['name']} ({v['vaultId']}) head {v['head'][:12]}")
        if not v["members"]:
            lines.append("  not shared")
        for m in v["members"]:
            rel = "" if m["ahead"] is None else f" (this node {m['ahead']} ahead, {m['behind']} behind)"
            last = when(int(m["lastSync"])) if m.get("lastSync") else "never"
            err = f"; last error: {m['lastError']}" if m.get("lastError") else ""
            lines.append(f"  {m['nodeId']}  {m['role']}  {m['state']}{rel}; last sync {last}{err}")
        for q in v.get("queuedInvites") or []:
            lines.append(f"  invite to {q['to']} not delivered yet: {q.get('error') or 'retrying'}")
        merge = v.get("lastMerge")
        if merge:
            for c in merge["conflicts"]:
                lines.append(f"  last merge (with {merge['peer']}): {c['path']} kept {c['winner'][:12]}, "
                             f"other value in history at {c['loser'][:12]}")
    emit(s, "\n".join(lines) or "(no vaults)", rows)


@nodes.command("trust", short_help="Trust a node's invites (--auto-accept: clone them unattended).")
@click.argument("node_id", metavar="NODEID")
@click.option("--auto-accept", is_flag=True,
              help="Clone the vaults NODEID shares with this node without asking (machines: the deploy flow).")
@common_options
def nodes_trust(node_id: str, auto_accept: bool) -> None:
    """Trust NODEID. With --auto-accept, vaults it shares with this node are cloned with nobody at this node.

    Invites from every node are kept and shown (`pk vaults invites`); trust decides only whether they are
    acted on unattended. Trust again without --auto-accept to turn it off; `pk nodes untrust` removes it.
    """
    s = settings()
    out = hot_sync.call(s, "nodes.trust", {"nodeId": hot_sync.node_id(node_id), "autoAccept": auto_accept})
    emit(s, f"Trusting {out['nodeId']}" + (": its invites are cloned on their own." if auto_accept else "."), out)


@nodes.command("untrust", short_help="Stop trusting a node.")
@click.argument("node_id", metavar="NODEID")
@common_options
def nodes_untrust(node_id: str) -> None:
    """Stop trusting NODEID: its invites are kept and shown, never acted on unattended."""
    s = settings()
    out = hot_sync.call(s, "nodes.untrust", {"nodeId": hot_sync.node_id(node_id)})
    emit(s, f"No longer trusting {out['nodeId']}." if out["removed"] else f"{out['nodeId']} was not trusted.", out)


@nodes.command("trusted", short_help="The nodes this node trusts.")
@common_options
def nodes_trusted() -> None:
    """The nodes this node trusts, and whether their invites are cloned on their own."""
    s = settings()
    rows = hot_sync.call(s, "nodes.trusted", {})
    emit(s, "\n".join(f"{r['nodeId']}" + ("  auto-accept" if r.get("autoAccept") else "") for r in rows)
         or "(no trusted nodes)", rows)

