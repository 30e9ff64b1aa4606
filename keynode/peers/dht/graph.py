"""The node graph file: known DHT contacts saved across restarts (docs/spec/discovery.md section 8).

Our own JSON format, never pickle (kademlia's ``save_state``/``load_state`` are
not used)::

    {"format": "polykey-node-graph", "version": 1,
     "nodes": [{"node_id": "v...", "host": "127.0.0.1", "port": 4242, "manual": false}, ...]}

Written atomically (write, fsync, rename, fsync dir) with mode 0600; read with a
size limit and strict validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from polykey.agent_client import strict_json
from polykey.errors import NodeGraphFileError, PolykeyError
from polykey.fsutil import atomic_write, read_limited
from polykey.ids import NodeId
from polykey.wire.records import check_host, check_port

FORMAT = "polykey-node-graph"
VERSION = 1
MAX_FILE_BYTES = 1 << 20
MAX_ENTRIES = 5000


@dataclass(frozen=True)
class GraphEntry:
    node_id: NodeId
    host: str
    port: int
    manual: bool

    def to_json(self) -> dict[str, object]:
        return {"node_id": str(self.node_id), "host": self.host, "port": self.port, "manual": self.manual}


def encode_graph(entries: list[GraphEntry]) -> bytes:
    doc = {"format": FORMAT, "version": VERSION, "nodes": [e.to_json() for e in entries[:MAX_ENTRIES]]}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def decode_graph(data: bytes) -> list[GraphEntry]:
    if len(data) > MAX_FILE_BYTES:
        raise NodeGraphFileError("the node graph file is too large")
    doc = strict_json.loads(data, max_depth=4, error=NodeGraphFileError, what="the node graph file")
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "nodes"} or doc["format"] != FORMAT:
        raise NodeGraphFileError("not a node graph file")
    if doc["version"] != VERSION:
        raise NodeGraphFileError("unknown node graph file version")
    nodes = doc["nodes"]
    if not isinstance(nodes, list) or len(nodes) > MAX_ENTRIES:
        raise NodeGraphFileError("the node graph file has a bad node list")
    entries = []
    for item in nodes:
        if not isinstance(item, dict) or set(item) != {"node_id", "host", "port", "manual"}:
            raise NodeGraphFileError("the node graph file has a bad entry")
        try:
            entry = GraphEntry(
                NodeId.from_text(item["node_id"]),
                check_host(item["host"], allow_names=False),
                check_port(item["port"]),
                item["manual"],
            )
        except PolykeyError:
            raise NodeGraphFileError("the node graph file has a bad entry") from None
        if not isinstance(entry.manual, bool):
            raise NodeGraphFileError("the node graph file has a bad entry")
        entries.append(entry)
    return entries


def load_graph(path: Path) -> list[GraphEntry]:
    """The saved entries, or ``[]`` if there is no file yet. Errors name the file."""
    try:
        try:
            data = read_limited(path, MAX_FILE_BYTES)
        except ValueError:
            raise NodeGraphFileError("the node graph file is too large") from None
        return decode_graph(data)
    except FileNotFoundError:
        return []
    except NodeGraphFileError as exc:  # it is only a cache: say which file and what to do
        raise NodeGraphFileError(f"{path}: {exc.message}; move it away (it is rebuilt from the seeds)") from None


def save_graph(path: Path, entries: list[GraphEntry]) -> None:
    atomic_write(path, encode_graph(entries))
