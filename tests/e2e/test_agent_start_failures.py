"""A key file with hostile KDF limits, and a start that fails: no hang, no agent left running (issue 8 item 4)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from polykey.agent_client.spawn import lock_held, start_agent
from polykey.errors import AgentUnavailableError
from polykey.keys.keypair import KeyPair

from ..conftest import Node
from .agent_util import pk, running_pid, wait_for


@pytest.mark.parametrize(
    "field,value",
    [("opslimit", 2**32 - 1), ("memlimit", 512 << 30)],
    ids=["opslimit-2^32-1", "memlimit-512GiB"],
)
def test_a_key_file_with_out_of_range_kdf_limits_is_refused_naming_the_file(node: Node, field: str, value: int) -> None:
    key = node.path / "keys" / "node.key"
    data = key.read_bytes()
    if field == "opslimit":
        data = data[:6] + value.to_bytes(4, "big") + data[10:]
    else:
        data = data[:10] + value.to_bytes(8, "big") + data[18:]
    key.write_bytes(data)
    r = pk(node, "secrets", "get", "app:x", timeout=60)  # before: ~130 s of Argon2id, then exit 69
    assert r.code == 65, r.err
    assert r.err.count("\n") == 1 and "out-of-range KDF limits" in r.err and str(key) in r.err
    assert "Traceback" not in r.err
    assert running_pid(node) is None
    r = pk(node, "agent", "start", timeout=60)
    assert r.code == 65 and "out-of-range KDF limits" in r.err
    assert running_pid(node) is None


def _daemons_of(node_path: Path) -> list[int]:
    """Pids of every keynode process started for ``node_path`` (its argv names the node)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"keynode" in argv and str(node_path).encode() in argv:
            found.append(int(entry))
    return found


def test_a_start_that_times_out_leaves_no_agent_running(node: Node) -> None:
    # A seed that never answers holds the start in its first bootstrap (up to 5 s): longer
    # than the starter is told to wait, so the start fails, and nothing may stay behind.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        seed_id = KeyPair.from_seed(b"\x44" * 32).node_id
        seed = f"{seed_id}@127.0.0.1:{silent.getsockname()[1]}"
        password = node.password_file.read_bytes().rstrip(b"\n")
        with pytest.raises(AgentUnavailableError, match="failed to start"):
            start_agent(str(node.path), password, ["--seed", seed], timeout=0.3)
        # its argv leaves /proc before the kernel closes its files (and so its lock): wait for both
        wait_for(lambda: not _daemons_of(node.path) and not lock_held(str(node.path)), timeout=15,
                 what="the abandoned agent to be gone and its lock released")
    assert not lock_held(str(node.path)) and running_pid(node) is None
    assert pk(node, "vaults", "list").code == 0  # and the node starts normally afterwards
