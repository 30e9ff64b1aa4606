"""docs/automation.md: the machine-node setup, the deploy job, the systemd unit's ExecStart and the
container entrypoint run as written (only the paths, ports and the seed are replaced)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import stat
import subprocess
from pathlib import Path

from ..conftest import agent_pid, base_env, bootstrap_node, pk_executable
from .agent_util import alive, pk, running_pid, status, wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "automation.md"


def block(name: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- {name}:begin -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert m, f"the {name} block is missing from docs/automation.md"
    return m.group(1)


def _replace(text: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _env() -> dict[str, str]:
    env = base_env()
    env.pop("PK_PASSWORD", None)
    return env


def test_machine_node_setup_and_deploy_job_as_written(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    runner.mkdir()
    node_path, password = tmp_path / "pk-node", tmp_path / "pk-password"
    password.write_text("machine password\n")
    password.chmod(0o600)
    (runner / "api-key").write_bytes(b"AK-7f3e\n")
    setup = _replace(block("machine-node-setup"), {
        "/var/lib/ci-runner/pk-node": str(node_path), "/etc/ci-runner/pk-password": str(password),
    })
    r = subprocess.run(["sh", "-c", setup], cwd=runner, env=_env(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((runner / "pk-node-recovery-code").stat().st_mode) == 0o600
    assert agent_pid(node_path) is None  # the job starts from a machine with no agent running

    job = tmp_path / "job"
    job.mkdir()
    (job / "deploy.sh").write_text(block("deploy-job"))
    step = job / "deploy-step"
    step.write_text('#!/bin/sh\nprintf "deploying %s with key %s" "$1" "$API_KEY"\nexit 5\n')
    step.chmod(0o755)
    env = {**_env(), "PK_NODE_PATH": str(node_path), "PK_PASSWORD_FILE": str(password)}
    r = subprocess.run(["sh", "deploy.sh", "v1.2"], cwd=job, env=env, capture_output=True, timeout=120)
    assert r.returncode == 5, r.stderr  # the deploy step's own status
    assert r.stdout == b"deploying v1.2 with key AK-7f3e\n"
    assert agent_pid(node_path) is not None  # started on demand
    assert b"AK-7f3e" not in (node_path / "agent.log").read_bytes()
    assert not any("AK-7f3e" in p.name for p in job.iterdir())
    assert os.stat(node_path).st_mode & 0o077 == 0


def test_systemd_exec_start_as_written(tmp_path: Path) -> None:
    seed = bootstrap_node(tmp_path, "seed")
    assert pk(seed, "agent", "start").code == 0
    seed_port = status(seed)["peer"]["port"]  # type: ignore[index]
    machine = bootstrap_node(tmp_path, "machine")
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "pk-password").write_bytes(machine.password_file.read_bytes())

    unit = block("systemd-unit")
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    env = _env()
    for line in re.findall(r"^Environment=(.*)$", unit, re.M):
        name, _, value = shlex.split(line)[0].partition("=")
        env[name] = value
    assert settings["Type"] == "notify" and env["PK_NODE_PATH"] == "/var/lib/polykey"
    env["PK_NODE_PATH"] = str(machine.path)
    env["PK_SEED_NODES"] = f"{seed.node_id}@127.0.0.1:{seed_port}"
    exec_start = _replace(settings["ExecStart"], {
        "/usr/local/bin/pk": pk_executable(), "%d": str(creds), "0.0.0.0": "127.0.0.1", "--port 1314": "--port 0",
    })
    exec_stop = _replace(settings["ExecStop"], {"/usr/local/bin/pk": pk_executable()})

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    proc = subprocess.Popen(shlex.split(exec_start), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert notify.recv(64) == b"READY=1"
        assert running_pid(machine) == proc.pid  # Type=notify: the main pid is the agent
        st = status(machine)
        assert st["state"] == "unlocked" and st["peer"]["host"] == "127.0.0.1"  # type: ignore[index]
        wait_for(lambda: machine.node_id in pk(seed, "nodes", "list", password=False).text,
                 what="the seed to learn the machine node")
        r = subprocess.run(shlex.split(exec_stop), env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=15) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (machine.path / "agent.sock").exists() and not alive(proc.pid)


def test_container_entrypoint_as_written(tmp_path: Path) -> None:
    node = bootstrap_node(tmp_path, "pk-node")
    assert pk(node, "vaults", "create", "app").code == 0
    for path, value in [("prod/DB_URL", b"postgres://u:p@db/x"), ("prod/TOKEN", b"tok\n"), ("conf/db", b"it's")]:
        assert pk(node, "secrets", "set", f"app:{path}", input=value).code == 0
    (tmp_path / "config.tmpl").write_text("db={{ pk://app/conf/db }}\n")
    script = tmp_path / "entrypoint.sh"
    mapping = {
        "/pk-node": str(node.path), "/run/secrets/pk-password": str(node.password_file),
        "/etc/myapp/config.tmpl": str(tmp_path / "config.tmpl"), "/run/myapp/config.ini": str(tmp_path / "config.ini"),
    }
    script.write_text(_replace(block("container-entrypoint"), mapping))
    script.chmod(0o755)
    app = ["sh", "-c", 'printf "[%s][%s]" "$DB_URL" "$TOKEN"; exit 3']

    r = subprocess.run([str(script), *app], env=_env(), capture_output=True, timeout=120)
    assert (r.returncode, r.stdout) == (3, b"[postgres://u:p@db/x][tok\n]"), r.stderr  # the app's own status
    assert (tmp_path / "config.ini").read_bytes() == b"db=it's\n"
    assert stat.S_IMODE((tmp_path / "config.ini").stat().st_mode) == 0o600
    assert running_pid(node) is None  # the entrypoint stopped the agent

    # A failing pk stops the entrypoint before the application starts without its secrets.
    script.write_text(script.read_text().replace("app:prod", "app:nope"))
    r = subprocess.run([str(script), "sh", "-c", "echo APP STARTED"], env=_env(), capture_output=True, timeout=120)
    assert r.returncode == 81 and b"APP STARTED" not in r.stdout
    assert r.stderr.decode().strip().splitlines() == ["pk: app:nope: no secret or directory 'nope' in this vault"]
