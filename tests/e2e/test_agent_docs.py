"""docs/automation.md: the deploy-job script runs exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..conftest import Node, base_env
from .agent_util import pk, running_pid

DOC = Path(__file__).resolve().parents[2] / "docs" / "automation.md"


def deploy_script() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- deploy-job:begin -->\n```sh\n(.*?)```\n<!-- deploy-job:end -->", text, re.S)
    assert m, "the deploy-job block is missing from docs/automation.md"
    return m.group(1)


def test_deploy_job_as_written(node: Node, tmp_path: Path) -> None:
    assert pk(node, "vaults", "create", "deploy").code == 0
    assert pk(node, "secrets", "set", "deploy:api/key", input=b"AK-7f3e\n").code == 0
    assert pk(node, "agent", "stop", password=False).code == 0
    assert running_pid(node) is None  # the job starts from a machine with no agent running

    job = tmp_path / "job"
    job.mkdir()
    (job / "deploy.sh").write_text(deploy_script())
    step = job / "deploy-step"
    step.write_text('#!/bin/sh\nprintf "deploying %s with key %s" "$1" "$API_KEY"\nexit 5\n')
    step.chmod(0o755)
    env = base_env(PK_NODE_PATH=str(node.path), PK_PASSWORD_FILE=str(node.password_file))
    env.pop("PK_PASSWORD", None)
    r = subprocess.run(["sh", "deploy.sh", "v1.2"], cwd=job, env=env, capture_output=True, timeout=120)
    assert r.returncode == 5, r.stderr  # the deploy step's own status
    assert r.stdout == b"deploying v1.2 with key AK-7f3e\n"
    assert running_pid(node) is not None  # started on demand
    assert b"AK-7f3e" not in (node.path / "agent.log").read_bytes()
    assert not any("AK-7f3e" in p.name for p in job.iterdir())
    assert os.stat(node.path).st_mode & 0o077 == 0
