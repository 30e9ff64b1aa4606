"""``python -m keynode.cluster``: what `pk cluster` runs (docs/cluster.md, docs/cli.md "Clusters").

`pk cluster ...` (polykey.cli.cluster) checks its options with click, which holds the help
text users read, and replaces itself with this process; this parser only takes what that
one passes. Errors are one line ``pk: message`` with the exit code of the error table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from polykey.errors import PolykeyError
from keynode.cluster import launcher, procs
from keynode.cluster.state import ClusterState

DEFAULT_DIR = "pk-cluster"


def default_dir() -> Path:
    return Path(os.environ.get("PK_CLUSTER_DIR") or DEFAULT_DIR)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None, help="cluster directory [env PK_CLUSTER_DIR; default ./pk-cluster]")
    common.add_argument("--format", choices=["human", "json"], default=None)
    p = argparse.ArgumentParser(prog="pk cluster", description="A local test cluster of keynodes (see `pk cluster --help`).")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common])

    up = command("up")
    up.add_argument("--nodes", type=int, required=True)
    up.add_argument("--base-port", type=int, default=0)
    up.add_argument("--netns", action="store_true")
    up.add_argument("--timeout", type=float, default=launcher.JOIN_TIMEOUT)
    up.add_argument("--sync-interval", type=float, default=None)
    command("status")
    for name in ("env", "pause", "resume"):
        command(name).add_argument("index", type=int)
    ex = command("exec")
    ex.add_argument("index", type=int)
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    kill = command("kill")
    kill.add_argument("index", type=int)
    kill.add_argument("--signal", default="TERM")
    restart = command("restart")
    restart.add_argument("index", type=int)
    restart.add_argument("--port", type=int, default=None)
    restart.add_argument("--timeout", type=float, default=launcher.JOIN_TIMEOUT)
    command("partition").add_argument("groups")
    command("heal")
    command("down").add_argument("--keep", action="store_true")
    return p


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _node_line(row: dict[str, Any]) -> str:
    parts = [f"node {row['index']}", row["nodeId"], f"pid {row['pid'] or '-'}", row["state"],
             _address(row["host"], row["port"])]
    if row.get("connections") is not None:
        parts.append(f"{row['connections']} connections")
    vaults = row.get("vaults")
    if vaults is not None:
        parts.append("vaults: " + (", ".join(f"{n}@{(h or '-')[:12]}" for n, h in sorted(vaults.items())) or "none"))
    if row.get("netns"):
        parts.append(f"netns {row['netns']}")
    return "  ".join(parts)


def _emit(json_mode: bool, human: str, data: Any) -> None:
    print(json.dumps(data, sort_keys=True) if json_mode else human, flush=True)


def run(ns: argparse.Namespace) -> int:
    cluster_dir = (ns.dir or default_dir()).absolute()
    as_json = (ns.format or os.environ.get("PK_FORMAT") or "human") == "json"
    cmd = ns.command
    launcher.clean_environment()
    if cmd == "up":
        state = launcher.up(cluster_dir, ns.nodes, base_port=ns.base_port, use_netns=ns.netns, timeout=ns.timeout,
                            sync_interval=ns.sync_interval)
        rows = [launcher.node_status(e) for e in state.nodes]
        _emit(as_json, "\n".join(_node_line(r) for r in rows),
              {"dir": state.dir, "netns": state.netns, "nodes": rows})
        return 0
    if cmd == "down":
        result = launcher.down(cluster_dir, keep=ns.keep)
        what = f"{len(result['stopped'])} processes stopped"
        if result["namespaces"]:
            what += f", {len(result['namespaces'])} namespaces removed"
        what += "; files kept" if result["kept"] else "; files removed"
        _emit(as_json, f"Cluster in {result['dir']} is down: {what}.", result)
        return 0
    state = ClusterState.load(cluster_dir)
    if cmd == "status":
        rows = [launcher.node_status(e) for e in state.nodes]
        data = {"dir": state.dir, "netns": state.netns, "partition": state.partition, "nodes": rows}
        human = "\n".join(_node_line(r) for r in rows)
        if state.partition:
            human += "\npartitioned: " + " / ".join(",".join(map(str, g)) for g in state.partition)
        _emit(as_json, human, data)
        return 0
    if cmd == "env":
        state.node(ns.index)
        env = launcher.node_env(state, ns.index)
        _emit(as_json, "\n".join(launcher.env_lines(state, ns.index)), env)
        return 0
    if cmd == "exec":
        argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
        state.node(ns.index)
        launcher.exec_in(state, ns.index, argv)
        return 0  # not reached: exec replaced this process
    if cmd == "kill":
        sig = procs.parse_signal(ns.signal)
        pid = procs.kill(state.node(ns.index), sig)
        _emit(as_json, f"node {ns.index}: sent {sig.name} to pid {pid}", {"index": ns.index, "pid": pid, "signal": sig.name})
        return 0
    if cmd in ("pause", "resume"):
        entry = state.node(ns.index)
        pid = procs.pause(entry) if cmd == "pause" else procs.resume(entry)
        word = "paused (SIGSTOP)" if cmd == "pause" else "resumed (SIGCONT)"
        _emit(as_json, f"node {ns.index}: pid {pid} {word}", {"index": ns.index, "pid": pid, "state": cmd + "d"})
        return 0
    if cmd == "restart":
        entry = launcher.restart(state, ns.index, port=ns.port, timeout=ns.timeout)
        row = launcher.node_status(entry)
        _emit(as_json, _node_line(row), row)
        return 0
    if cmd == "partition":
        groups = launcher.partition(state, ns.groups)
        _emit(as_json, "partitioned: " + " / ".join(",".join(map(str, g)) for g in groups), {"partition": groups})
        return 0
    if cmd == "heal":
        launcher.heal(state)
        _emit(as_json, "healed: every node is on the cluster bridge again", {"partition": None})
        return 0
    raise AssertionError(cmd)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `up` stops what it started; a SIGKILL leaves it to `down`


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        return run(ns)
    except PolykeyError as e:
        sys.stderr.write(f"pk: {e.message}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pk: interrupted\n")
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
