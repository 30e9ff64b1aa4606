"""Password prompts on a real pseudo-terminal: hidden, asked twice for a new password."""

from __future__ import annotations

from pathlib import Path

from ..conftest import base_env, run_on_pty, run_pk


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
