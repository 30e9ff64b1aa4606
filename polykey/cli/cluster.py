"""``pk cluster``: a local test cluster of real keynodes (docs/cluster.md, docs/cli.md "Clusters").

The launcher lives in keynode (``python -m keynode.cluster``); polykey never imports keynode,
so each command here checks its options, then replaces ``pk`` with that process (its output,
exit code and signals are the command's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from polykey.cli.common import common_options, settings

F = TypeVar("F", bound=Callable[..., Any])


def dir_option(f: F) -> F:
    return click.option(
        "--dir", "cluster_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="The cluster directory [env PK_CLUSTER_DIR; default ./pk-cluster].",
    )(f)


def _launch(command: str, cluster_dir: Path | None, *args: str, tail: tuple[str, ...] = ()) -> None:
    argv = [sys.executable, "-P", "-m", "keynode.cluster", command, "--format", settings().format]
    if cluster_dir is not None:
        argv += ["--dir", str(cluster_dir)]
    argv += [*args, *tail]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@click.group()
def cluster() -> None:
    """A local test cluster: N real keynodes on this machine, started and stopped by one command.

    Node 0 is the seed; every node is an ordinary node directory (nodeI/ in the cluster
    directory) with its agent running, a random password in nodeI.pw (0600) and a key
    file of the test KDF profile `min`: for trying Polykey out and for tests, never for
    real secrets. Drive a node with plain `pk` after `eval "$(pk cluster env I)"`, or with
    `pk cluster exec I -- pk ...`. See docs/cluster.md.
    """


@cluster.command("up")
@click.option("--nodes", "count", type=click.IntRange(1, 64), required=True, help="How many nodes (1 to 64).")
@click.option("--base-port", type=click.IntRange(0, 65535), default=0,
              help="Node I listens on PORT+I (TCP and UDP) [default: free ports].")
@click.option("--netns", is_flag=True,
              help="Each node in its own network namespace on 198.18.0.I+1 (root and iproute2 only).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for every node to start and join the DHT.")
@click.option("--sync-interval", type=click.FloatRange(0.1, 86400), default=None, metavar="SECONDS",
              help="Seconds between automatic sync's anti-entropy passes, for every agent (also after"
                   " `restart`) [default: the agent's, 60].")
@dir_option
@common_options
def cluster_up(count: int, base_port: int, netns: bool, timeout: float, sync_interval: float | None,
               cluster_dir: Path | None) -> None:
    """Bootstrap and start N nodes; return once every one is unlocked and has joined the DHT.

    Writes DIR/cluster.json and prints one line per node (NodeId, pid, state, address).
    Refuses (exit 73) a directory that already holds a cluster. If a node fails to start
    or join in time, every node is stopped again and the files are kept (exit 69).
    """
    args = ["--nodes", str(count), "--base-port", str(base_port), "--timeout", f"{timeout:g}"]
    if sync_interval is not None:
        args += ["--sync-interval", f"{sync_interval:g}"]
    _launch("up", cluster_dir, *args, *(["--netns"] if netns else []))


@cluster.command("status")
@dir_option
@common_options
def cluster_status(cluster_dir: Path | None) -> None:
    """Per node: NodeId, pid, state (unlocked, locked, paused, stopped), address, open
    connections and vault heads."""
    _launch("status", cluster_dir)


@cluster.command("env")
@click.argument("index", type=click.IntRange(min=0))
@dir_option
@common_options
def cluster_env(index: int, cluster_dir: Path | None) -> None:
    """Print the `export` lines that point plain `pk` at node INDEX: eval "$(pk cluster env 1)"."""
    _launch("env", cluster_dir, str(index))


@cluster.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("index", type=click.IntRange(min=0))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@dir_option
@common_options
def cluster_exec(index: int, command: tuple[str, ...], cluster_dir: Path | None) -> None:
    """Run COMMAND for node INDEX: `pk cluster exec 1 -- pk nodes list`.

    COMMAND gets the environment of `pk cluster env INDEX` (and runs inside the node's
    namespace with --netns); its exit status is the command's.
    """
    _launch("exec", cluster_dir, str(index), "--", tail=command)


@cluster.command("kill")
@click.argument("index", type=click.IntRange(min=0))
@click.option("--signal", "sig", default="TERM", show_default=True, metavar="SIGNAL",
              help="A signal number or name (9, KILL, TERM, ...).")
@dir_option
@common_options
def cluster_kill(index: int, sig: str, cluster_dir: Path | None) -> None:
    """Send a signal to node INDEX's agent (waits until it is gone for TERM, INT, HUP, QUIT, KILL)."""
    _launch("kill", cluster_dir, str(index), "--signal", sig)


@cluster.command("pause")
@click.argument("index", type=click.IntRange(min=0))
@dir_option
@common_options
def cluster_pause(index: int, cluster_dir: Path | None) -> None:
    """Freeze node INDEX's agent (SIGSTOP): it holds its sockets but answers nothing."""
    _launch("pause", cluster_dir, str(index))


@cluster.command("resume")
@click.argument("index", type=click.IntRange(min=0))
@dir_option
@common_options
def cluster_resume(index: int, cluster_dir: Path | None) -> None:
    """Let a paused node INDEX run again (SIGCONT)."""
    _launch("resume", cluster_dir, str(index))


@cluster.command("restart")
@click.argument("index", type=click.IntRange(min=0))
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Listen on this port from now on (0: a new free port) [default: the same port].")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for the node to start and join the DHT.")
@dir_option
@common_options
def cluster_restart(index: int, port: int | None, timeout: float, cluster_dir: Path | None) -> None:
    """Stop node INDEX (if it runs) and start it again, on the same port unless --port."""
    args = ["--timeout", f"{timeout:g}", *(["--port", str(port)] if port is not None else [])]
    _launch("restart", cluster_dir, str(index), *args)


@cluster.command("partition")
@click.argument("groups", metavar="GROUPS")
@dir_option
@common_options
def cluster_partition(groups: str, cluster_dir: Path | None) -> None:
    """Split a --netns cluster into groups that cannot reach each other: `partition 0,1/2,3`.

    Nodes within a group still reach each other; a node in no group reaches nobody.
    `pk cluster heal` undoes it.
    """
    _launch("partition", cluster_dir, groups)


@cluster.command("heal")
@dir_option
@common_options
def cluster_heal(cluster_dir: Path | None) -> None:
    """Undo `pk cluster partition`: every node reaches every other again."""
    _launch("heal", cluster_dir)


@cluster.command("down")
@click.option("--keep", is_flag=True, help="Keep the node directories and cluster.json (stop only).")
@dir_option
@common_options
def cluster_down(keep: bool, cluster_dir: Path | None) -> None:
    """Stop every process of the cluster, remove its namespaces and links, then its files.

    Works after a launcher was killed half-way through `up`, also on agents it was still
    starting; an `up` still running on the directory is stopped first. Only what the cluster
    made is removed: the directory itself only if nothing else is left in it.
    """
    _launch("down", cluster_dir, *(["--keep"] if keep else []))


__all__ = ["cluster"]
