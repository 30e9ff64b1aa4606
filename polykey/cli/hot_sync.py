"""``pk vaults pull`` without click (the fast path, :mod:`polykey.cli.fast`), and the output
helpers the click commands of :mod:`polykey.cli.sync` share with it: one implementation of each.
Imports neither click nor pygit2, nacl, cryptography or asyncio."""

from __future__ import annotations

import sys
from typing import Any

from polykey.cli.hot import Options, emit


def node_id(text: str) -> str:
    """NODEID as its canonical text; InvalidInputError for anything else."""
    from polykey.ids import NodeId

    return str(NodeId.from_text(text))


def call(s: Options, method: str, params: dict[str, Any], progress: Any = None) -> Any:
    """One agent call (the agent started on demand); ``None`` parameters are not sent."""
    with s.session() as agent:
        return agent.call(method, {k: v for k, v in params.items() if v is not None}, progress)


class Progress:
    """Progress of a clone or pull: one updating line on a terminal, JSON lines with --format json."""

    def __init__(self, s: Options, verb: str) -> None:
        self._json = s.json
        self._tty = sys.stderr.isatty()
        self._verb = verb
        self._shown = False

    def __call__(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if self._json:
            import json

            sys.stderr.write(json.dumps({"progress": event}, sort_keys=True) + "\n")
            sys.stderr.flush()
        elif self._tty and "objects" in event:
            total = event.get("total")
            count = f"{event['objects']:,}" + (f"/{total:,}" if isinstance(total, int) and total else "")
            kib = event.get("bytes", 0) / 1024
            sys.stderr.write(f"\rpk: {self._verb}: {event.get('stage', 'receiving')} objects {count} ({kib:,.0f} KiB)  ")
            sys.stderr.flush()
            self._shown = True
        elif self._tty and "elapsed" in event:
            sys.stderr.write(f"\rpk: {self._verb}: still working ({event['elapsed']:.0f} s)  ")
            sys.stderr.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def merge_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result.get("conflicts") or []:
        lines.append(f"  conflict on {c['path']}: kept the later write ({c['winner'][:12]}); "
                     f"the other value stays in history at {c['loser'][:12]}")
    if result.get("dropped"):
        lines.append(f"  refused {len(result['dropped'])} commit(s) by a removed member")
    if result.get("reapplied"):
        lines.append(f"  re-applied this node's own {result['reapplied']} commit(s) on top")
    if result.get("reason"):
        lines.append(f"  {result['reason']}")
    return lines


ACTIONS = {
    "up-to-date": "already up to date",
    "fast-forward": "fast-forwarded",
    "merged": "merged",
    "adopted": "adopted the other node's identical merge",
    "rebased": "took the other node's history (it removed a member whose commits this node had)",
    "kept": "kept this node's head",
    "scheduled": "the other node will fetch it",
    "ignored": "the other node ignored it",
}


def pull_lines(vault: str, rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if r.get("action") == "failed":
            lines.append(f"{vault} from {r['peer']}: failed: {r['error']}")
            continue
        head = (r.get("after") or "")[:12]
        lines.append(f"{vault} from {r['peer']}: {ACTIONS.get(r['action'], r['action'])}"
                     + (f" (head {head}, {r.get('objects', 0):,} objects, {r.get('bytes', 0):,} bytes)"
                        if r["action"] not in ("up-to-date", "kept") else ""))
        lines += merge_lines(r)
    return "\n".join(lines)


def looks_like_node_id(text: str) -> bool:
    """Whether ``text`` has the form of a NodeId's text (``v`` and 52 base32hex digits), checked without
    importing :mod:`polykey.ids` (~20 ms on the fast path); the agent parses it strictly."""
    return len(text) == 53 and text[0] == "v" and all(c in "0123456789abcdefghijklmnopqrstuv" for c in text[1:])


def vaults_pull(s: Options, vault: str, node: str | None) -> None:
    """``pk vaults pull VAULT [NODEID]`` (``node`` already checked: :func:`node_id` or
    :func:`looks_like_node_id`)."""
    params = {"vault": vault, "nodeId": node}
    progress = Progress(s, "pulling")
    try:
        rows = call(s, "vaults.pull", params, progress)
    finally:
        progress.done()
    emit(s, pull_lines(vault, rows), rows)
