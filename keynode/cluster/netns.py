"""Network namespaces for `pk cluster up --netns` (docs/cluster.md "Network namespaces").

Every name this module makes starts with the cluster's prefix (``pk`` and 8 hex digits of
the cluster directory's hash), so :func:`remove` finds everything of one cluster, and only
of that cluster, even after the launcher that made it was killed. Layout:

- a hub namespace ``<prefix>x`` holding the bridge ``<prefix>b``;
- per node ``i`` a namespace ``<prefix>n<i>`` with ``eth0`` at ``198.18.0.<i+1>/24`` (the
  RFC 2544 benchmarking range) and ``lo``; its veth peer ``<prefix>h<i>`` is a port of the
  bridge in the hub.

The root namespace gets no link and no address: the test addresses exist only inside the
namespaces made here, so no traffic of the cluster can reach any other host or network.
A partition moves each group's hub-side links onto a bridge of its own (``<prefix>g<k>``)
and takes the links of nodes in no group down; healing puts every link back on the bridge
and up. Deleting a namespace deletes the links in it, so removing the namespaces removes
every link as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from polykey.errors import ClusterError, NetnsUnavailableError

SUBNET = ipaddress.ip_network("198.18.0.0/24")
MAX_NODES = 200  # addresses .1 .. .200 of SUBNET
IP_TIMEOUT = 20.0


def prefix_for(cluster_dir: Path) -> str:
    """The name prefix of the cluster in ``cluster_dir``: the same for the same directory."""
    digest = hashlib.blake2b(os.fsencode(os.path.realpath(cluster_dir)), digest_size=4).hexdigest()
    return f"pk{digest}"


def hub(prefix: str) -> str:
    return f"{prefix}x"


def node_ns(prefix: str, index: int) -> str:
    return f"{prefix}n{index}"


def address(index: int) -> str:
    return str(SUBNET.network_address + index + 1)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    if not hasattr(os, "geteuid") or not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "--netns needs root (network namespaces are made with `ip netns`)"
    if shutil.which("ip") is None:
        return "--netns needs the `ip` command (iproute2), which is not installed"
    return None


def require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise NetnsUnavailableError(reason)


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its stdout. A failure is a ClusterError naming the command and ip's message."""
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, timeout=IP_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ClusterError(f"`ip {' '.join(args)}` failed: {e}") from None
    if check and proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ClusterError(f"`ip {' '.join(args)}` failed: {message[0] if message else proc.returncode}")
    return proc.stdout.decode("utf-8", "replace")


def exec_prefix(prefix: str, index: int) -> list[str]:
    """The command prefix that runs a program inside node ``index``'s namespace."""
    return ["ip", "netns", "exec", node_ns(prefix, index)]


def create(prefix: str, count: int) -> list[str]:
    """The hub, the bridge and ``count`` node namespaces; their addresses, by index."""
    if not 1 <= count <= MAX_NODES:
        raise ClusterError(f"--netns supports 1 to {MAX_NODES} nodes")
    h, bridge = hub(prefix), f"{prefix}b"
    ip("netns", "add", h)
    ip("-n", h, "link", "add", bridge, "type", "bridge")
    ip("-n", h, "link", "set", bridge, "up")
    addresses = []
    for i in range(count):
        ns, port = node_ns(prefix, i), f"{prefix}h{i}"
        ip("netns", "add", ns)
        ip("-n", h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", h, "link", "set", port, "master", bridge, "up")
        ip("-n", ns, "addr", "add", f"{address(i)}/{SUBNET.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        addresses.append(address(i))
    return addresses


def partition(prefix: str, count: int, groups: Sequence[Sequence[int]]) -> None:
    """Each group on a bridge of its own; nodes in no group cut off (their link down)."""
    heal(prefix, count)
    h = hub(prefix)
    grouped: set[int] = set()
    for g, members in enumerate(groups):
        bridge = f"{prefix}g{g}"
        ip("-n", h, "link", "add", bridge, "type", "bridge")
        ip("-n", h, "link", "set", bridge, "up")
        for i in members:
            ip("-n", h, "link", "set", f"{prefix}h{i}", "master", bridge)
            grouped.add(i)
    for i in range(count):
        if i not in grouped:
            ip("-n", h, "link", "set", f"{prefix}h{i}", "down")


def heal(prefix: str, count: int) -> None:
    """Every node's link back on the cluster bridge and up; the group bridges removed."""
    h, bridge = hub(prefix), f"{prefix}b"
    for i in range(count):
        ip("-n", h, "link", "set", f"{prefix}h{i}", "master", bridge, "up")
    for name in links(prefix, h):
        if name.startswith(f"{prefix}g"):
            ip("-n", h, "link", "del", name)


def links(prefix: str, namespace: str | None = None) -> list[str]:
    """Names of the links starting with ``prefix`` (in ``namespace``, or the root namespace)."""
    where = ["-n", namespace] if namespace else []
    out = ip(*where, "-o", "link", "show", check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def namespaces(prefix: str) -> list[str]:
    """This cluster's namespaces that exist now."""
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix)]


def pids(namespace: str) -> list[int]:
    out = ip("netns", "pids", namespace, check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def remove(prefix: str, grace: float = 10.0) -> tuple[list[int], list[str]]:
    """Stop every process in this cluster's namespaces, then delete them and every link of ours.

    Returns the pids signalled and the namespaces deleted.
    """
    found = namespaces(prefix)
    signalled: list[int] = []
    for ns in found:
        for pid in pids(ns):
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGTERM)
            signalled.append(pid)
    deadline = time.monotonic() + grace
    while any(pids(ns) for ns in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    for ns in found:
        for pid in pids(ns):
            _signal(pid, signal.SIGKILL)
    for ns in found:
        ip("netns", "del", ns, check=False)
    for name in links(prefix):  # none are made in the root namespace; a foreign tool might have moved one
        ip("link", "del", name, check=False)
    return signalled, found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
