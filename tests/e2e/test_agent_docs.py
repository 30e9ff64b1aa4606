"""docs/automation.md: the machine-deploy flow (M's setup, A's share, the job step), the systemd unit's
ExecStart and the container entrypoint run as written (only paths, ports, NodeIds and the seed are replaced)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import stat
import subprocess
from pathlib import Path

from ..conftest import Node, agent_pid, base_env, bootstrap_node, pk_executable
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


def _sh(script: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script, "sh", *args], cwd=cwd, env=env, capture_output=True, timeout=120)


def test_machine_deploy_flow_as_written(tmp_path: Path) -> None:
    """"Deploying with a machine node": M's setup, A's share, the job step, a new key, unshare."""
    human = bootstrap_node(tmp_path, "human")  # A, also the seed
    assert pk(human, "agent", "start").code == 0
    seed = f"{human.node_id}@127.0.0.1:{status(human)['peer']['port']}"  # type: ignore[index]

    runner = tmp_path / "runner"
    runner.mkdir()
    node_path, password = tmp_path / "pk-node", tmp_path / "pk-password"
    password.write_text("machine password\n")
    password.chmod(0o600)
    setup = _replace(block("machine-node-setup"), {
        "/var/lib/ci-runner/pk-node": str(node_path), "/etc/ci-runner/pk-password": str(password),
        "v3k9a1...": human.node_id, "0.0.0.0": "127.0.0.1", "--port 1314": "--port 0",
        "v4b1l3...@seed1.example.net:1314": seed,
    })
    r = _sh(setup, runner, _env())
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((runner / "pk-node-recovery-code").stat().st_mode) == 0o600
    machine = Node(path=node_path, password_file=password, node_id="", recovery_code="")
    machine_id = pk(machine, "keys", "public", "--format", "json", password=False).json["nodeId"]  # type: ignore[index]
    assert machine_id in r.stdout.decode()  # `pk keys public` printed it for A
    assert agent_pid(node_path) is not None  # the agent stays up

    desk = tmp_path / "desk"
    desk.mkdir()
    (desk / "api-key").write_bytes(b"AK-7f3e\n")
    share = _replace(block("share-with-machine"), {"v7ph0f...": machine_id})
    r = _sh(share, desk, {**_env(), "PK_NODE_PATH": str(human.path)})
    assert r.returncode == 0, r.stderr
    assert b"it trusts this node" in r.stdout
    wait_for(lambda: "prod" in pk(machine, "vaults", "list", password=False).text, 30,
             "the machine node to clone prod on its own")

    job = tmp_path / "job"
    job.mkdir()
    (job / "deploy.sh").write_text(block("deploy-job"))
    step = job / "deploy"
    step.write_text('#!/bin/sh\nprintf "deploying %s with key %s" "$1" "$API_KEY"\nexit 5\n')
    step.chmod(0o755)
    env = {**_env(), "PK_NODE_PATH": str(node_path), "PK_PASSWORD_FILE": str(password)}

    def deploy() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["sh", "deploy.sh", "v1.2"], cwd=job, env=env, capture_output=True, timeout=120)

    r = deploy()
    assert r.returncode == 5, r.stderr  # the deploy step's own status
    assert r.stdout == b"deploying v1.2 with key AK-7f3e\n"

    # A changes the key; M's next run sees it (announced, fetched, verified on M)
    assert pk(human, "secrets", "set", "prod:api/key", input=b"AK-9c01\n").code == 0
    wait_for(lambda: pk(machine, "secrets", "get", "prod:api/key", password=False).out == b"AK-9c01\n", 30,
             "the machine node to receive the new key")
    assert deploy().stdout == b"deploying v1.2 with key AK-9c01\n"

    # A retires M: its pulls are refused; what it had stays readable (hence: rotate)
    r = pk(human, "vaults", "unshare", "prod", machine_id, "--yes", "--format", "json")
    assert r.code == 0 and r.json["rotate"] == ["api/key"], r.err  # type: ignore[index]
    refused = pk(machine, "vaults", "pull", "prod", human.node_id, password=False)
    assert refused.code == 87, refused.err
    assert pk(machine, "agent", "stop", password=False).code == 0
    r = deploy()  # the job starts M's agent on demand and still reads its own copy
    assert (r.returncode, r.stdout) == (5, b"deploying v1.2 with key AK-9c01\n"), r.stderr
    for path in (node_path, human.path):
        log = (path / "agent.log").read_bytes()
        assert b"AK-7f3e" not in log and b"AK-9c01" not in log and b"api/key" not in log
    assert not any("AK-" in p.name for p in job.iterdir())
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
