"""Node graph file codec (keynode/peers/dht/graph.py, docs/spec/discovery.md section 8): our JSON, never pickle."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from keynode.peers.dht.graph import GraphEntry, decode_graph, encode_graph, load_graph, save_graph
from polykey.errors import NodeGraphFileError
from polykey.ids import NodeId

A = NodeId(bytes(range(32)))
ENTRIES = [GraphEntry(A, "127.0.0.1", 4242, True), GraphEntry(NodeId(bytes(32)), "::1", 1, False)]


def test_round_trip_and_atomic_private_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    assert load_graph(path) == []
    save_graph(path, ENTRIES)
    assert load_graph(path) == ENTRIES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert decode_graph(encode_graph(ENTRIES)) == ENTRIES
    assert [p.name for p in tmp_path.iterdir()] == ["graph.json"]  # no temp file left behind


def doc(**change: object) -> bytes:
    base: dict[str, object] = json.loads(encode_graph(ENTRIES))
    base.update(change)
    return json.dumps(base).encode()


def node(**change: object) -> dict[str, object]:
    entry: dict[str, object] = {"node_id": str(A), "host": "127.0.0.1", "port": 1, "manual": False}
    entry.update(change)
    return entry


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x04K\x01.",  # a pickle
        b"[]",
        doc(format="kademlia"),
        doc(version=2),
        doc(extra=1),
        doc(nodes={}),
        doc(nodes=[node(host="localhost")]),
        doc(nodes=[node(host="127.0.0.01")]),
        doc(nodes=[node(port=0)]),
        doc(nodes=[node(port="1")]),
        doc(nodes=[node(manual=1)]),
        doc(nodes=[node(node_id="v" + "0" * 51)]),
        doc(nodes=[node(node_id=str(A).upper())]),
        doc(nodes=[{**node(), "seen": 1}]),
        doc(nodes=[node()] * 5001),
        b" " * (1 << 20) + b"{}",
    ],
)
def test_strict_decoder(data: bytes) -> None:
    with pytest.raises(NodeGraphFileError):
        decode_graph(data)


@pytest.mark.parametrize("data", [b'{"nodes":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"a":1e999}', b'{"a":1,"a":2}'])
def test_a_deep_or_odd_graph_file_is_a_graph_file_error(data: bytes) -> None:
    with pytest.raises(NodeGraphFileError, match="the node graph file|JSON"):
        decode_graph(data)
