"""Errors of the local test cluster, `pk cluster` (docs/cluster.md)."""

from __future__ import annotations

from polykey.errors._base import EX_CANTCREAT, EX_NOINPUT, EX_UNAVAILABLE, PolykeyError


class ClusterError(PolykeyError):
    """A problem with a local test cluster (`pk cluster`). See the agent logs in its node directories."""

    exit_code = EX_UNAVAILABLE
    default_message = "cluster error"


class ClusterExistsError(ClusterError):
    """The directory already holds a cluster (running or stopped).

    Use it (`pk cluster status`), remove it with `pk cluster down`, or choose another --dir.
    """

    exit_code = EX_CANTCREAT
    default_message = "this directory already holds a cluster"


class ClusterNotFoundError(ClusterError):
    """There is no cluster in this directory. Start one with `pk cluster up`, or give the right --dir."""

    exit_code = EX_NOINPUT
    default_message = "no cluster here: run `pk cluster up` first"


class ClusterStartError(ClusterError):
    """A node of the cluster did not start, unlock or join the DHT in time. Its agent.log says why."""

    exit_code = EX_UNAVAILABLE
    default_message = "a cluster node did not start in time"


class NetnsUnavailableError(ClusterError):
    """Network namespaces cannot be used here: `--netns` needs root and the `ip` command (iproute2).

    Run without --netns (every node on 127.0.0.1), or as root on Linux with iproute2 installed.
    """

    exit_code = EX_UNAVAILABLE
    default_message = "network namespaces are not available (--netns needs root and iproute2's `ip`)"
