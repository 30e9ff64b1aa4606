"""``pk nodes``: find and reach other keynodes (docs/cli.md "Nodes"; docs/spec/discovery.md)."""

from __future__ import annotations

from typing import Any

import click

from polykey.cli.common import common_options, emit, settings
from polykey.errors import InvalidInputError
from polykey.ids import NodeId


def _call(method: str, params: dict[str, Any] | None = None) -> Any:
    from polykey.cli.agent import session

    with session(settings()) as s:
        return s.call(method, params or {})


def _node_id(text: str) -> str:
    return str(NodeId.from_text(text))


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInputError(f"{text!r} must be written HOST:PORT (IPv6 as [ADDR]:PORT)")
    return host, int(port)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@click.group()
def nodes() -> None:
    """Find, reach and list other keynodes (through the agent's DHT and peer transport)."""


@nodes.command("add")
@click.argument("node_id", metavar="NODEID")
@click.argument("address", metavar="HOST:PORT")
@common_options
def nodes_add(node_id: str, address: str) -> None:
    """Add a node's address to the node graph by hand (kept across restarts)."""
    host, port = _host_port(address)
    result = _call("nodes.add", {"nodeId": _node_id(node_id), "host": host, "port": port})
    emit(settings(), f"Added {result['nodeId']} at {result['host']}:{result['port']}", result)


@nodes.command("find")
@click.argument("node_id", metavar="NODEID")
@common_options
def nodes_find(node_id: str) -> None:
    """Find a node's addresses (its signed DHT record) and verify them by connecting.

    An address is verified when the peer there proved NODEID over the encrypted channel.
    """
    result = _call("nodes.find", {"nodeId": _node_id(node_id)})
    lines = []
    for a in result["addresses"]:
        mark = "verified" if a["verified"] else f"not verified ({a.get('error', 'no answer')})"
        lines.append(f"{a['host']}:{a['port']}  {mark}")
    emit(settings(), "\n".join(lines), result)


@nodes.command("ping")
@click.argument("node_id", metavar="NODEID")
@common_options
def nodes_ping(node_id: str) -> None:
    """Round-trip time to a node over the authenticated channel (finding it first if needed)."""
    result = _call("nodes.ping", {"nodeId": _node_id(node_id)})
    emit(settings(), f"{result['nodeId']} at {result['host']}:{result['port']}: {result['rtt'] * 1000:.2f} ms",
         result)


@nodes.command("list")
@common_options
def nodes_list() -> None:
    """The node graph: the nodes this node knows, by DHT bucket; manual entries are marked."""
    rows = _call("nodes.list")
    lines = [f"{r['node_id']}  {r['host']}:{r['port']}  bucket {r['bucket']}{'  manual' if r.get('manual') else ''}"
             for r in rows]
    emit(settings(), "\n".join(lines) or "(no nodes known)", rows)


@nodes.command("connections")
@common_options
def nodes_connections() -> None:
    """Open authenticated channels: peer NodeId, address, direction, age, bytes sent and received."""
    rows = _call("nodes.connections")
    now_lines = []
    for r in rows:
        now_lines.append(
            f"{r['peer']}  {r['address']}  {r.get('direction', '')}  "
            f"age {_age(float(r.get('age', 0)))}  sent {r.get('bytes_sent', 0)} B  received {r.get('bytes_received', 0)} B"
        )
    emit(settings(), "\n".join(now_lines) or "(no open connections)", rows)


__all__ = ["nodes"]
