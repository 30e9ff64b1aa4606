"""The README's first command, `./scripts/demo`, runs end to end (against this interpreter's install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import base_env

ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_runs_the_main_job(tmp_path: Path) -> None:
    env = base_env(PK_VENV=sys.prefix, TMPDIR=str(tmp_path))
    env.pop("PK_KDF_PROFILE")  # the demo sets its own
    r = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "NodeId: v" in out
    assert "s3cret-db-password" in out  # pk secrets get
    assert "the program sees DB_PASSWORD of 18 characters" in out  # pk secrets env -- cmd
    assert "verified: 3 commits" in out or "3 commits" in out
    assert "  verified" in out and " ms" in out  # pk nodes find / ping
    assert not list(tmp_path.glob("polykey-demo.*/*/agent.sock"))  # agents stopped on exit
