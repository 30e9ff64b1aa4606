"""A locked agent's memory holds no key, password or value (issue 8, item 9; docs/security.md).

Reads a real agent's memory through ``/proc/PID/maps`` and ``/proc/PID/mem``. The agent sets
PR_SET_DUMPABLE 0, so only root (or a holder of CAP_SYS_PTRACE) may read it: run as another user,
the test checks that the read is refused instead, which is the protection itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from polykey.crypto import noise_suite
from polykey.keys import recovery

from .agent_util import pk, status
from ..conftest import Node

#: Copies of each secret that may remain in a locked agent's memory (docs/security.md "Memory").
#: Zero today; this may only go down.
ALLOWED_COPIES = {"seed": 0, "x25519": 0, "password": 0, "value": 0}


def _count_in_memory(pid: int, needles: dict[str, bytes]) -> dict[str, int]:
    counts = dict.fromkeys(needles, 0)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("r") or fields[-1] in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            try:
                mem.seek(low)
                data = mem.read(high - low)
            except OSError:  # a mapping that vanished or cannot be read (e.g. a guard page)
                continue
            for name, needle in needles.items():
                counts[name] += data.count(needle)
    return counts


def _may_read_memory(pid: int) -> bool:
    """True when this test may read the agent's memory (root); otherwise check that it is refused."""
    if os.geteuid() == 0:
        return True
    try:
        open(f"/proc/{pid}/mem", "rb").close()
    except PermissionError:
        return False  # not dumpable: another process of the same user may not read it
    raise AssertionError("a non-root process could open the agent's /proc/PID/mem")


def _pid(node: Node) -> int:
    pid = status(node)["pid"]
    assert isinstance(pid, int)
    return pid


def test_a_locked_agent_keeps_no_seed_password_or_value(node: Node) -> None:
    value = b"zq-canary-" + os.urandom(12).hex().encode()
    assert pk(node, "vaults", "create", "app").code == 0
    assert pk(node, "secrets", "set", "app:k", input=value).code == 0
    assert pk(node, "agent", "lock", password=False).code == 0
    assert pk(node, "agent", "unlock").code == 0  # the password also crosses the socket once
    assert pk(node, "secrets", "get", "app:k").out == value
    assert pk(node, "agent", "lock", password=False).code == 0
    pid = _pid(node)
    seed = recovery.code_to_ed25519_seed(node.recovery_code.split())
    needles = {
        "seed": seed,
        "x25519": noise_suite.static_private_key(seed),  # the Noise static key derived from it
        "password": node.password_file.read_bytes().rstrip(b"\n"),
        "value": value,
    }
    if _may_read_memory(pid):
        counts = _count_in_memory(pid, needles)
        assert counts == ALLOWED_COPIES, counts


def test_an_unlocked_agent_holds_exactly_one_seed_and_no_password(node: Node) -> None:
    """The counting works (it finds the one seed an unlocked agent needs) and the password is gone."""
    assert pk(node, "agent", "start").code == 0
    needles = {
        "seed": recovery.code_to_ed25519_seed(node.recovery_code.split()),
        "password": node.password_file.read_bytes().rstrip(b"\n"),
    }
    pid = _pid(node)
    if _may_read_memory(pid):
        assert _count_in_memory(pid, needles) == {"seed": 1, "password": 0}


def test_the_agent_is_not_dumpable_and_has_no_core_limit(node: Node) -> None:
    assert pk(node, "agent", "start").code == 0
    st = status(node)
    assert st["dumpable"] is False  # read back with prctl(PR_GET_DUMPABLE) inside the agent
    limits = Path(f"/proc/{st['pid']}/limits").read_text().splitlines()
    core = next(line for line in limits if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
