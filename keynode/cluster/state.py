"""``cluster.json``: what a cluster is made of (docs/cluster.md "cluster.json", version 1).

Written atomically (0600) before anything else is made and after every change, so `pk cluster
down` knows what to stop and remove even when the launcher that wrote it was killed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polykey import fsutil
from polykey.errors import ClusterError, ClusterNotFoundError

FILE = "cluster.json"
VERSION = 1
MAX_BYTES = 1 << 20


@dataclass
class NodeEntry:
    index: int
    node_path: str
    password_file: str
    host: str
    port: int  # 0 until the agent first listened (then the port it keeps across restarts)
    node_id: str = ""
    netns: str | None = None

    @property
    def seed(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.node_id}@{host}:{self.port}"


@dataclass
class ClusterState:
    dir: str
    prefix: str
    netns: bool
    nodes: list[NodeEntry]
    state: str = "starting"  # starting | up
    partition: list[list[int]] | None = None
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.dir) / FILE

    def node(self, index: int) -> NodeEntry:
        if not 0 <= index < len(self.nodes):
            from polykey.errors import InvalidInputError

            raise InvalidInputError(f"no node {index} in this cluster (nodes 0 to {len(self.nodes) - 1})")
        return self.nodes[index]

    def save(self) -> None:
        data = asdict(self)
        fsutil.atomic_write(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, cluster_dir: Path) -> ClusterState:
        path = cluster_dir / FILE
        try:
            raw = fsutil.read_limited(path, MAX_BYTES)
        except FileNotFoundError:
            raise ClusterNotFoundError(f"no cluster in {cluster_dir}: run `pk cluster up` first") from None
        except OSError as e:
            raise ClusterError(f"cannot read {path}: {e.strerror}") from None
        except ValueError:
            raise ClusterError(f"{path} is larger than {MAX_BYTES} bytes") from None
        try:
            data = json.loads(raw)
            if data.get("version") != VERSION:
                raise ValueError("unknown version")
            nodes = [NodeEntry(**n) for n in data.pop("nodes")]
            return cls(nodes=nodes, **data)
        except (ValueError, TypeError, AttributeError, KeyError):
            raise ClusterError(f"{path} is not a cluster file of version {VERSION}") from None
