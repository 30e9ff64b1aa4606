"""The README's first command, `./scripts/demo`, runs end to end (against this interpreter's install);
it prints every pk command exactly as it ran, and its closing hint works when pasted."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ..conftest import base_env, pk_executable

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def recording_venv(where: Path, log: Path) -> Path:
    """A stand-in for .venv that scripts/_venv.sh takes as installed: `python` is this
    interpreter, `pk` the real one, but each `pk` call first appends its argv to ``log``."""
    bin_dir = where / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    pk = bin_dir / "pk"
    pk.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({pk_executable()!r}, [{pk_executable()!r}, *sys.argv[1:]])\n"
    )
    for script in (python, pk):
        script.chmod(0o755)
    (bin_dir / "activate").write_text(f"PATH={shlex.quote(str(bin_dir))}:$PATH\nexport PATH\n")
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (where / ".pk-installed").write_text(stamp + "\n")
    return where


def pk_commands(line: str) -> list[list[str]]:
    """The pk invocations of one printed shell command line (each stage of a pipeline)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    stages: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            stages.append([])
        else:
            stages[-1].append(token)
    return [stage[1:] for stage in stages if stage and stage[0] == "pk"]


def test_demo_script_runs_the_main_job(tmp_path: Path) -> None:
    log = tmp_path / "pk-calls"
    venv = recording_venv(tmp_path / "venv", log)
    env = base_env(PK_VENV=str(venv), TMPDIR=str(tmp_path))
    env.pop("PK_KDF_PROFILE")  # the demo sets its own
    r = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = ANSI.sub("", r.stdout)
    assert "NodeId: v" in out
    assert "s3cret-db-password" in out  # pk secrets get
    assert "the program sees DB_PASSWORD of 18 characters" in out  # pk secrets env -- cmd
    assert "verified: 3 commits" in out or "3 commits" in out
    assert "  verified" in out and " ms" in out  # pk nodes find / ping
    assert "invite sent" in out and "cloned from" in out  # pk vaults share / clone
    assert "rotated-by-bob" in out  # bob's write, read back on alice's node
    assert not list(tmp_path.glob("polykey-demo.*/*/agent.sock"))  # agents stopped on exit

    # Every pk command it ran was printed, exactly (quotes kept), in order; then the exit trap
    # stopped the three agents without a word.
    printed = [cmd for line in out.splitlines() if line.startswith("$ ") for cmd in pk_commands(line[2:])]
    ran = [json.loads(line) for line in log.read_text().splitlines()]
    assert printed and ran[: len(printed)] == printed
    demo = next(tmp_path.glob("polykey-demo.*"))
    assert ran[len(printed):] == [["agent", "stop", "--node-path", str(demo / n)] for n in ("alice", "bob", "carol")]
    assert ("$ pk secrets env app:db/password=DB_PASSWORD -- sh -c "
            "'echo \"the program sees DB_PASSWORD of ${#DB_PASSWORD} characters\"'\n") in out

    # The closing hint, pasted into a new shell (no PK_* settings), reads the secret: it names
    # the node and the password file the demo used.
    hint = out.split("paste:\n\n", 1)[1]
    lines = [line[2:] for line in hint.splitlines() if line.startswith("  ")]
    assert any("--password-file" in line for line in lines) and any("PK_NODE_PATH=" in line for line in lines)
    fresh = base_env()
    fresh.pop("PK_KDF_PROFILE")
    pasted = subprocess.run(["bash", "-c", "set -e\n" + "\n".join(lines)], capture_output=True, text=True,
                            env=fresh, cwd=tmp_path, timeout=120)
    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stdout.startswith("rotated-by-bob")  # bob's write, synced; then `pk --help`
    assert "Usage: pk" in pasted.stdout
