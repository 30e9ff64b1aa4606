"""``pk nodes``: find and reach other keynodes (docs/cli.md "Nodes"; docs/spec/discovery.md)."""

from __future__ import annotations

import time
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


def _addr(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 host in brackets (as `pk nodes add` and seeds take it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@click.group()
def nodes() -> None:
    """Find, reach and list other keynodes (through the agent's DHT and peer transport).

    The agent (started on demand) joins the network through its seeds (`pk agent start
    --seed NODEID@HOST:PORT`, or PK_SEED_NODES) and the node graph it saved. A NodeId is
    the text `pk keys public` prints on that node; HOST:PORT is the peer listener that
    `pk agent status` shows there. Every command takes --format json.
    """


@nodes.command("add", short_help="Add a node's address by hand (kept across restarts).")
@click.argument("node_id", metavar="NODEID")
@click.argument("address", metavar="HOST:PORT")
@common_options
def nodes_add(node_id: str, address: str) -> None:
    """Add a node's address to the node graph by hand (kept across restarts).

    HOST is an IP address or a name (resolved once, now); IPv6 as [ADDR]:PORT. Use it for a
    node that shares no seed with this one. The address is only a hint: `pk nodes ping`
    still checks that the node there proves NODEID.
    """
    host, port = _host_port(address)
    result = _call("nodes.add", {"nodeId": _node_id(node_id), "host": host, "port": port})
    emit(settings(), f"Added {result['nodeId']} at {result['host']}:{result['port']}", result)


@nodes.command("find", short_help="Find a node's addresses and verify each one.")
@click.argument("node_id", metavar="NODEID")
@common_options
def nodes_find(node_id: str) -> None:
    """Find a node's addresses (its signed DHT record and the node graph) and verify each.

    An address is verified when the peer there proved NODEID in the encrypted handshake.
    Exit 84 if no address is known, 69 if none of them answers as NODEID.
    """
    result = _call("nodes.find", {"nodeId": _node_id(node_id)})
    record = result.get("record")
    in_record = {(h, p) for h, p in record["addresses"]} if record else set()
    lines = []
    for a in result["addresses"]:
        mark = "verified" if a["verified"] else f"not verified ({a.get('error', 'no answer')})"
        source = "" if (a["host"], a["port"]) in in_record else "  (node graph)"
        lines.append(f"{_addr(a['host'], a['port'])}  {mark}{source}")
    if record:
        left = _age(max(0.0, record["expiry"] - time.time()))
        lines.append(f"signed DHT record: seq {record['seq']}, expires in {left}")
    else:
        lines.append("no DHT record found: addresses from the node graph")
    emit(settings(), "\n".join(lines), result)


@nodes.command("ping", short_help="Round-trip time over the authenticated channel.")
@click.argument("node_id", metavar="NODEID")
@common_options
def nodes_ping(node_id: str) -> None:
    """Round-trip time to a node over the authenticated channel.

    Uses the open channel to NODEID if there is one, else finds the node first (as
    `pk nodes find`). Exit 84 if no address is known, 69 if it cannot be reached.
    """
    result = _call("nodes.ping", {"nodeId": _node_id(node_id)})
    via = "connected to" if result.get("direction") != "inbound" else "connected from"
    emit(settings(), f"{result['nodeId']} ({via} {_addr(result['host'], result['port'])}): {result['rtt'] * 1000:.2f} ms",
         result)


@nodes.command("list", short_help="The node graph: the nodes this node knows.")
@common_options
def nodes_list() -> None:
    """The node graph: the nodes this node knows, by DHT bucket; manual entries are marked."""
    rows = _call("nodes.list")
    lines = [f"{r['node_id']}  {_addr(r['host'], r['port'])}  "
             + (f"bucket {r['bucket']}" if r.get("bucket") is not None else "not in the routing table")
             + ("  manual" if r.get("manual") else "")
             for r in rows]
    emit(settings(), "\n".join(lines) or "(no nodes known)", rows)


@nodes.command("connections", short_help="Open authenticated channels to other nodes.")
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
