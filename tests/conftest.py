"""Shared test helpers: run the real `pk` entry point as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"


async def until(check: Callable[[], object], what: str = "the condition", timeout: float = 15.0) -> None:
    """Poll ``check()`` in the running event loop until it is true: a liveness bound, not a timing
    assertion (tests wait on conditions, never for a fixed time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def pk_executable() -> str:
    """The installed `pk` console script next to this interpreter (the real entry point)."""
    candidate = Path(sys.executable).parent / "pk"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("pk")
    if not found:
        raise RuntimeError("the `pk` console script is not installed (pip install -e .)")
    return found


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for a pk subprocess: no inherited PK_* settings, cheap KDF."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env["PK_KDF_PROFILE"] = "min"
    env.update(extra)
    return env


#: What a prompt ends with: a password or value prompt (``...: ``) or a confirmation (``... [y/N] ``).
PROMPT_ENDINGS = (b":", b"[y/N]")


def run_on_pty(args: list[str], answers: list[bytes], env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """Run pk on a pty, answering each prompt (a line ending in ': ' or '[y/N] ') in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(pk_executable(), [pk_executable(), *args], env if env is not None else base_env())
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if pending and output.rstrip().endswith(PROMPT_ENDINGS):
                os.write(fd, pending.pop(0) + b"\n")
                output += b"<answered>"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output



@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8")

    @property
    def json(self) -> object:
        return json.loads(self.out)


def run_pk(
    *args: str | Path,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 60,
) -> Result:
    proc = subprocess.run(
        [pk_executable(), *map(str, args)],
        input=input if input is not None else b"",
        capture_output=True,
        env=env if env is not None else base_env(),
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


@dataclass
class Node:
    """A bootstrapped node in a temp dir, with its password file."""

    path: Path
    password_file: Path
    node_id: str
    recovery_code: str

    def pk(self, *args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
        return run_pk(*args, "--node-path", self.path, "--password-file", self.password_file, input=input, env=env)


def bootstrap_node(tmp: Path, name: str = "node", password: str = "correct horse") -> Node:
    pw = tmp / f"{name}.pw"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    path = tmp / name
    r = run_pk("bootstrap", "--node-path", path, "--password-file", pw, "--format", "json")
    assert r.code == 0, r.err
    data = r.json
    assert isinstance(data, dict)
    return Node(path=path, password_file=pw, node_id=data["nodeId"], recovery_code=data["recoveryCode"])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield bootstrap_node(tmp_path)


# -- agents ---------------------------------------------------------------------------
# Every pk command that touches vaults starts the node's agent on demand (a real keynode
# process). Whatever a test started under its tmp_path is stopped at the end, pass or fail.


def agent_pid(node_path: Path) -> int | None:
    """The pid of the agent holding ``node_path``'s agent.lock, or None if none holds it."""
    from keynode.agent.lockfile import holder_pid

    return holder_pid(node_path)


def stop_agents_under(root: Path) -> list[int]:
    """Stop every agent whose node directory lies under ``root`` as `pk cluster stop` does
    (SIGTERM, then SIGKILL if it lingers: keynode.cluster.procs.stop_pid)."""
    from keynode.cluster.procs import stop_pid

    stopped = []
    for lock in root.rglob("agent.lock"):
        pid = agent_pid(lock.parent)
        if pid is not None and pid > 0:
            stop_pid(pid)
            stopped.append(pid)
    return stopped


@pytest.fixture(autouse=True)
def _stop_agents_at_end(request: pytest.FixtureRequest) -> Iterator[None]:
    root = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if root is not None:
        stop_agents_under(root)
