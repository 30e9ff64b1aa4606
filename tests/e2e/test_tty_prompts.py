"""Password prompts on a real pseudo-terminal: hidden, asked twice for a new password."""

from __future__ import annotations

import os
import pty
import select
import time
from pathlib import Path

from ..conftest import base_env, pk_executable, run_pk


def run_on_pty(args: list[str], answers: list[bytes], env: dict[str, str], timeout: float = 30) -> tuple[int, bytes]:
    """Run pk on a pty, answering each prompt (a line ending in ': ') in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(pk_executable(), [pk_executable(), *args], env)
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
            if pending and output.rstrip().endswith(b":"):
                os.write(fd, pending.pop(0) + b"\n")
                output += b"<answered>"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_bootstrap_asks_twice_and_hides_the_password(tmp_path: Path) -> None:
    env = base_env()
    code, out = run_on_pty(["bootstrap", "--node-path", str(tmp_path / "n")], [b"s3cret-pw", b"s3cret-pw"], env)
    assert code == 0, out
    assert b"New node password:" in out and b"Repeat to confirm:" in out
    assert b"s3cret-pw" not in out  # not echoed
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw")
    r = run_pk("keys", "password", "--node-path", tmp_path / "n", "--password-file", pw, "--new-password-file", pw)
    assert r.code == 0, r.err


def test_mismatched_confirmation_creates_nothing(tmp_path: Path) -> None:
    code, out = run_on_pty(["bootstrap", "--node-path", str(tmp_path / "n")], [b"one", b"two"], base_env())
    assert code == 64 and b"do not match" in out
    assert not (tmp_path / "n").exists()
