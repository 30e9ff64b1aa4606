"""The local test cluster: N real keynode agents started, driven and stopped by one command.

`pk cluster` runs this module's commands as a process (``python -m keynode.cluster``); see
docs/cluster.md. Every node is an ordinary node directory with an ordinary agent: node 0 is
the seed, the others start with ``--seed`` pointing at it. Node keys use the test KDF
profile ``min`` (docs/cli.md "Common options"): a cluster is for trying things out and for
tests, never for real secrets. Each node's password is random and lies in a 0600 file next
to its directory.

Nothing here keeps running after a command returns: the agents are daemons of their own,
found again through their ``agent.lock`` (whose holder pid the kernel keeps honest), while
still starting by their argv (keynode.cluster.procs), and in ``--netns`` mode through the
cluster's namespaces. `down` stops an `up` still running first (its pid and start time are in
``cluster.json`` while it runs).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from polykey import crypto, fsutil
from polykey.agent_client import client as agent_client
from polykey.agent_client import spawn
from polykey.agent_client.passwords import read_password_file
from polykey.errors import (
    ClusterExistsError,
    ClusterNotFoundError,
    ClusterStartError,
    CommandNotFoundError,
    InvalidInputError,
    NetnsUnavailableError,
    PolykeyError,
)
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir
from keynode.cluster import netns
from keynode.cluster.procs import agent_processes, pid_of, start_time, stop_launcher, stop_node, stop_nodes
from polykey.agent_client.spawn import proc_state
from keynode.cluster.state import FILE, ClusterState, NodeEntry

MAX_NODES = 64
KDF_PROFILE = "min"  # the documented test profile: cheap to unlock, never for real keys
JOIN_TIMEOUT = 60.0  # `up` and `restart` wait this long at most for the nodes to join
START_WORKERS = 4  # agents started at once (after the seed)
HOST = "127.0.0.1"
MIN_SYNC_INTERVAL, MAX_SYNC_INTERVAL = 0.1, 86400.0  # as `pk agent start --sync-interval`
LAUNCHER = "launcher"  # cluster.json extra: the `up` still running ({"pid", "start"}), see down()
#: Settings of the user's shell that would change how an agent of the cluster starts.
AGENT_ENV = ("PK_PASSWORD", "PK_SEED_NODES", "PK_PEER_HOST", "PK_PEER_PORT", "PK_NODE_PATH")


def clean_environment() -> None:
    """Agents of the cluster get their address, port and seed from the cluster alone."""
    for name in AGENT_ENV:
        os.environ.pop(name, None)


# -- up --------------------------------------------------------------------------------


def up(cluster_dir: Path, count: int, *, base_port: int = 0, use_netns: bool = False,
       timeout: float = JOIN_TIMEOUT, sync_interval: float | None = None) -> ClusterState:
    """Bootstrap ``count`` nodes, start their agents, wait until every one has joined the DHT.

    ``sync_interval`` (seconds, 0.1 to 86400) is given to every agent as ``--sync-interval``
    (the anti-entropy period of automatic sync), now and at every `restart`; None leaves the
    agents' default."""
    if not 1 <= count <= MAX_NODES:
        raise InvalidInputError(f"--nodes must be 1 to {MAX_NODES}")
    if base_port and not 1 <= base_port <= 65536 - count:
        raise InvalidInputError(f"--base-port must leave room for {count} ports below 65536")
    if sync_interval is not None and not MIN_SYNC_INTERVAL <= sync_interval <= MAX_SYNC_INTERVAL:
        raise InvalidInputError(f"--sync-interval must be {MIN_SYNC_INTERVAL:g} to {MAX_SYNC_INTERVAL:g} seconds")
    if use_netns:
        netns.require()
    cluster_dir = cluster_dir.absolute()
    _refuse_existing(cluster_dir)
    fsutil.ensure_private_dir(cluster_dir)
    prefix = netns.prefix_for(cluster_dir)
    entries = [
        NodeEntry(
            index=i,
            node_path=str(cluster_dir / f"node{i}"),
            password_file=str(cluster_dir / f"node{i}.pw"),
            host=netns.address(i) if use_netns else HOST,
            port=base_port + i if base_port else 0,
            netns=netns.node_ns(prefix, i) if use_netns else None,
        )
        for i in range(count)
    ]
    for entry in entries:
        for path in (entry.node_path, entry.password_file):
            if os.path.lexists(path):
                raise ClusterExistsError(f"{path} already exists: choose an empty --dir")
    state = ClusterState(dir=str(cluster_dir), prefix=prefix, netns=use_netns, nodes=entries)
    if sync_interval is not None:
        state.extra["sync_interval"] = sync_interval
    started = start_time(os.getpid())
    if started is not None:  # `down` while this runs stops this process first (it starts agents)
        state.extra[LAUNCHER] = {"pid": os.getpid(), "start": started}
    state.save()  # first: `down` finds what to remove even if this process is killed from here on
    deadline = time.monotonic() + timeout
    try:
        for entry in entries:
            _bootstrap(entry)
        state.save()
        if use_netns:
            netns.create(prefix, count)
        _start(state, 0, deadline)
        with ThreadPoolExecutor(max_workers=START_WORKERS) as pool:
            for _ in pool.map(lambda i: _start(state, i, deadline), range(1, count)):
                pass
        state.save()
        wait_joined(state, range(count), deadline)
        state.state = "up"
        state.extra.pop(LAUNCHER, None)
        state.save()
    except BaseException as exc:
        state.extra.pop(LAUNCHER, None)
        state.save()
        stop_everything(state)
        if isinstance(exc, PolykeyError):
            raise ClusterStartError(
                f"{exc.message}; every node was stopped, their files kept in {cluster_dir}"
                f" (`pk cluster down --dir {shlex.quote(str(cluster_dir))}` removes them)"
            ) from None
        raise
    return state


def _refuse_existing(cluster_dir: Path) -> None:
    quoted = shlex.quote(str(cluster_dir))
    if not (cluster_dir / FILE).exists():
        if netns.unavailable_reason() is None and netns.namespaces(netns.prefix_for(cluster_dir)):
            raise ClusterExistsError(f"namespaces of a cluster in {cluster_dir} remain: `pk cluster down --dir {quoted}`")
        return
    state = ClusterState.load(cluster_dir)
    if live(state):
        raise ClusterExistsError(
            f"a cluster of {len(state.nodes)} nodes is running in {cluster_dir}: "
            f"use it (`pk cluster status --dir {quoted}`) or stop it (`pk cluster down --dir {quoted}`)"
        )
    raise ClusterExistsError(
        f"{cluster_dir} holds a stopped cluster: `pk cluster down --dir {quoted}` removes it"
    )


def _bootstrap(entry: NodeEntry) -> None:
    password = secrets.token_urlsafe(24).encode("ascii")
    fd = os.open(entry.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(password + b"\n")
    pair = KeyPair.generate()
    NodeDir(Path(entry.node_path)).create(pair, password, crypto.KDF_PROFILES[KDF_PROFILE])
    entry.node_id = str(pair.node_id)


def _start(state: ClusterState, index: int, deadline: float) -> None:
    """Start node ``index``'s agent (seeded by node 0 unless it is node 0); record its port."""
    entry = state.nodes[index]
    password = read_password_file(entry.password_file)
    extra = ["--host", entry.host, "--port", str(entry.port)]
    if index != 0:
        extra += ["--seed", state.nodes[0].seed]
    interval = state.extra.get("sync_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool):
        extra += ["--sync-interval", f"{interval:g}"]
    wrap = netns.exec_prefix(state.prefix, index) if state.netns else []
    left = max(1.0, deadline - time.monotonic())
    try:
        status = spawn.start_agent(entry.node_path, password, extra, timeout=left, wrap=wrap)
    except PolykeyError as e:
        raise ClusterStartError(f"node {index} did not start: {e.message}") from None
    peer = status.get("peer")
    if not isinstance(peer, dict) or not isinstance(peer.get("port"), int):
        raise ClusterStartError(f"node {index} started without a peer listener; see {_log(entry)}")
    entry.port = peer["port"]


def _log(entry: NodeEntry) -> str:
    return os.path.join(entry.node_path, "agent.log")


def wait_joined(state: ClusterState, indices: Iterable[int], deadline: float) -> None:
    """Wait (until ``deadline``) for each node to be unlocked and to know another node."""
    waiting = list(indices)
    alone = len(state.nodes) == 1
    while waiting:
        waiting = [i for i in waiting if not _joined(state.nodes[i], alone)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            entry = state.nodes[waiting[0]]
            raise ClusterStartError(f"node {entry.index} did not join the DHT in time; see {_log(entry)}")
        time.sleep(0.05)


def _joined(entry: NodeEntry, alone: bool) -> bool:
    try:
        with agent_client.connect(entry.node_path, timeout=2.0, reply_timeout=5.0) as c:
            status = c.call("agent.status")
            if not isinstance(status, dict) or status.get("state") != "unlocked":
                return False
            return alone or any(row.get("bucket") is not None for row in c.call("nodes.list"))
    except PolykeyError:
        return False


# -- one node ----------------------------------------------------------------------------


def restart(state: ClusterState, index: int, *, port: int | None = None, timeout: float = JOIN_TIMEOUT) -> NodeEntry:
    """Stop node ``index`` if it runs and start it again: on its port, or on ``port`` (0: a free one)."""
    entry = state.node(index)
    stop_node(entry)
    if port is not None:
        entry.port = port
    deadline = time.monotonic() + timeout
    _start(state, index, deadline)
    state.save()
    wait_joined(state, [index], deadline)
    return entry


def node_status(entry: NodeEntry) -> dict[str, Any]:
    """What `pk cluster status` shows for one node; never hangs on a paused or stuck agent."""
    out: dict[str, Any] = {"index": entry.index, "nodeId": entry.node_id, "nodePath": entry.node_path,
                           "host": entry.host, "port": entry.port, "netns": entry.netns, "pid": None,
                           "state": "stopped", "connections": None, "vaults": None}
    pid = pid_of(entry)
    if pid is None:
        return out
    out["pid"] = pid
    if proc_state(pid) in ("T", "t"):
        out["state"] = "paused"
        return out
    try:
        with agent_client.connect(entry.node_path, timeout=2.0, reply_timeout=5.0) as c:
            status = c.call("agent.status")
            out["state"] = status.get("state", "unknown") if isinstance(status, dict) else "unknown"
            peer = status.get("peer") if isinstance(status, dict) else None
            if isinstance(peer, dict) and isinstance(peer.get("port"), int):
                out["port"] = peer["port"]
            if out["state"] == "unlocked":
                out["connections"] = len(c.call("nodes.connections"))
                heads = {}
                for vault in c.call("vaults.list"):
                    commits = c.call("vaults.log", {"vault": vault["vaultId"], "limit": 1})
                    heads[vault["name"]] = commits[0]["commit"] if commits else None
                out["vaults"] = heads
    except PolykeyError as e:
        out["state"] = "unresponsive" if out["state"] == "stopped" else out["state"]
        out["error"] = e.message
    return out


def node_env(state: ClusterState, index: int) -> dict[str, str]:
    """The environment that points plain `pk` at node ``index`` (and restarts it where it was)."""
    entry = state.node(index)
    env = {"PK_NODE_PATH": entry.node_path, "PK_CLUSTER_DIR": state.dir, "PK_PEER_HOST": entry.host}
    if entry.port:
        env["PK_PEER_PORT"] = str(entry.port)
    if index != 0:
        env["PK_SEED_NODES"] = state.nodes[0].seed
    return env


def env_lines(state: ClusterState, index: int) -> list[str]:
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(node_env(state, index).items())]
    entry = state.node(index)
    lines.append(f"# node {index} ({entry.node_id}); its password file: {entry.password_file}")
    return lines


def exec_in(state: ClusterState, index: int, argv: Sequence[str]) -> None:
    """Replace this process with ``argv`` run for node ``index`` (inside its namespace with --netns)."""
    if not argv:
        raise InvalidInputError("nothing to run: give a command after --, e.g. -- pk nodes list")
    env = {k: v for k, v in os.environ.items() if k not in AGENT_ENV}
    env.update(node_env(state, index))
    program = _program(argv[0], env.get("PATH"))
    full = [*netns.exec_prefix(state.prefix, index), program, *argv[1:]] if state.netns else [program, *argv[1:]]
    try:
        os.execvpe(full[0], full, env)
    except OSError as e:
        raise CommandNotFoundError(f"cannot run {full[0]}: {e.strerror}") from None


def _program(name: str, path: str | None) -> str:
    """``name`` as a path to run: ``pk`` is the one of this installation (it may not be on PATH)."""
    if name == "pk":
        ours = Path(sys.executable).parent / "pk"
        if ours.exists():
            return str(ours)
    found = shutil.which(name, path=path)
    if found is None:
        raise CommandNotFoundError(f"command not found: {name}")
    return found


# -- partitions --------------------------------------------------------------------------


def parse_groups(text: str, count: int) -> list[list[int]]:
    """``0,1/2,3`` -> [[0, 1], [2, 3]]; every index a node, none twice."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for part in text.split("/"):
        members = []
        for word in part.split(","):
            word = word.strip()
            if not word.isdigit() or not 0 <= int(word) < count:
                raise InvalidInputError(f"{text[:100]!r}: groups of node numbers 0..{count - 1}, e.g. 0,1/2,3")
            if int(word) in seen:
                raise InvalidInputError(f"node {word} is in two groups")
            seen.add(int(word))
            members.append(int(word))
        groups.append(members)
    if len(groups) < 2:
        raise InvalidInputError("a partition needs at least two groups separated by /, e.g. 0,1/2,3")
    return groups


def _require_netns(state: ClusterState, what: str) -> None:
    if not state.netns:
        raise InvalidInputError(f"{what} needs a cluster started with `pk cluster up --netns`")
    netns.require()


def partition(state: ClusterState, text: str) -> list[list[int]]:
    _require_netns(state, "partition")
    groups = parse_groups(text, len(state.nodes))
    netns.partition(state.prefix, len(state.nodes), groups)
    state.partition = groups
    state.save()
    return groups


def heal(state: ClusterState) -> None:
    _require_netns(state, "heal")
    netns.heal(state.prefix, len(state.nodes))
    state.partition = None
    state.save()


# -- down --------------------------------------------------------------------------------


def _launcher(state: ClusterState) -> tuple[int, int] | None:
    """The pid and start time of the `up` recorded in ``state``, if one is recorded."""
    rec = state.extra.get(LAUNCHER)
    if isinstance(rec, dict) and all(isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool)
                                     for k in ("pid", "start")):
        return rec["pid"], rec["start"]
    return None


def live(state: ClusterState) -> bool:
    """Whether anything of the cluster runs: its `up`, an agent (also one still starting) or a namespace."""
    launcher = _launcher(state)
    if launcher is not None and start_time(launcher[0]) == launcher[1]:
        return True
    if any(pid_of(e) is not None for e in state.nodes) or agent_processes({e.node_path for e in state.nodes}):
        return True
    return state.netns and netns.unavailable_reason() is None and bool(netns.namespaces(state.prefix))


def stop_everything(state: ClusterState) -> tuple[list[int], list[str]]:
    """Stop every agent of the cluster and remove its namespaces and links; pids and namespaces.

    Agents still starting count too (:func:`keynode.cluster.procs.stop_nodes`): after a launcher
    killed during `up`, an agent it had spawned may take its lock only now."""
    pids = stop_nodes(state.nodes, workers=START_WORKERS)
    removed: list[str] = []
    if netns.unavailable_reason() is None:
        more, removed = netns.remove(state.prefix)
        pids += [p for p in more if p not in pids]
    elif state.netns:
        raise NetnsUnavailableError(f"cannot remove the namespaces of this cluster: {netns.unavailable_reason()}")
    return pids, removed


def down(cluster_dir: Path, *, keep: bool = False) -> dict[str, Any]:
    """Stop everything of the cluster in ``cluster_dir``; remove its files unless ``keep``."""
    cluster_dir = cluster_dir.absolute()
    try:
        state = ClusterState.load(cluster_dir)
    except ClusterNotFoundError:
        state = _orphan_state(cluster_dir)
        keep = True
    launcher = _launcher(state)
    pids = []
    if launcher is not None and stop_launcher(*launcher):
        pids.append(launcher[0])  # an `up` still running would start agents after we looked
    more, namespaces = stop_everything(state)
    pids += more
    if not state.nodes and not pids and not namespaces:
        raise ClusterNotFoundError(f"no cluster in {cluster_dir}")
    removed = False
    if not keep:
        for entry in state.nodes:
            node_path, pw = Path(entry.node_path), Path(entry.password_file)
            if node_path.parent == cluster_dir and node_path.is_dir() and not node_path.is_symlink():
                shutil.rmtree(node_path, ignore_errors=True)
            if pw.parent == cluster_dir:
                pw.unlink(missing_ok=True)
        (cluster_dir / FILE).unlink(missing_ok=True)
        try:
            cluster_dir.rmdir()
            removed = True
        except OSError:
            pass  # something else lives there: left as it was
    return {"dir": str(cluster_dir), "stopped": sorted(pids), "namespaces": sorted(namespaces),
            "removed": removed, "kept": keep}


def _orphan_state(cluster_dir: Path) -> ClusterState:
    """No cluster.json: only the namespaces named after this directory can be ours (no file is
    touched: a node directory without the cluster file that lists it may be anyone's)."""
    return ClusterState(dir=str(cluster_dir), prefix=netns.prefix_for(cluster_dir), netns=False, nodes=[])
