"""The agent's lifecycle through the real `pk` and real keynode processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from ..conftest import Node, base_env, pk_executable, run_on_pty
from .agent_util import alive, no_password_env, pk, ping, running_pid, status, wait_for


def test_start_status_stop(node: Node) -> None:
    r = pk(node, "agent", "start", "--format", "json")
    assert r.code == 0, r.err
    started = r.json
    assert isinstance(started, dict) and started["started"] is True
    pid = started["pid"]
    assert running_pid(node) == pid and alive(pid)

    st = status(node)
    assert st["state"] == "unlocked" and st["nodeId"] == node.node_id and st["pid"] == pid
    assert st["openVaults"] == [] and isinstance(st["uptime"], float)
    assert "Agent: unlocked" in pk(node, "agent", "status", password=False).text

    sock = node.path / "agent.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(node.path.stat().st_mode) == 0o700
    status_file = json.loads((node.path / "agent.json").read_text())
    assert status_file["pid"] == pid and status_file["state"] == "unlocked"
    assert status_file["socket"] == str(sock) and status_file["nodeId"] == node.node_id

    again = pk(node, "agent", "start", "--format", "json")
    assert again.code == 0 and again.json["started"] is False and again.json["pid"] == pid  # type: ignore[index]
    again = pk(node, "agent", "start", "--idle-lock", "5")  # not silently taken as applied
    assert again.code == 0 and "options are unchanged" in again.err + again.text
    assert status(node)["idleLock"] is None

    stopped = pk(node, "agent", "stop", password=False)
    assert stopped.code == 0, stopped.err
    assert not alive(pid) and running_pid(node) is None
    assert not sock.exists() and not (node.path / "agent.json").exists()
    assert status(node) == {"state": "stopped"}
    log = (node.path / "agent.log").read_text()
    assert "serving on" in log and "stopped" in log
    assert "correct horse" not in log
    assert pk(node, "agent", "stop", password=False).text.startswith("No agent")


def test_sigterm_stops_the_agent(node: Node) -> None:
    assert pk(node, "agent", "start").code == 0
    pid = running_pid(node)
    assert pid
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: running_pid(node) is None, what="agent exit after SIGTERM")
    assert not (node.path / "agent.sock").exists() and not (node.path / "agent.json").exists()
    assert "received SIGTERM" in (node.path / "agent.log").read_text()


def test_lock_unlock_and_auto_unlock(node: Node) -> None:
    assert pk(node, "vaults", "create", "app").code == 0  # starts the agent on demand
    assert pk(node, "secrets", "set", "app:k", input=b"v").code == 0
    assert pk(node, "agent", "lock", password=False).code == 0
    assert status(node)["state"] == "locked"
    assert json.loads((node.path / "agent.json").read_text())["state"] == "locked"

    r = pk(node, "secrets", "get", "app:k", password=False, env=no_password_env())
    assert r.code == 75 and r.err.strip().splitlines() == ["pk: the agent is locked: run `pk agent unlock`"]

    # With a password source at hand, a command unlocks the agent itself (like gpg-agent).
    r = pk(node, "secrets", "get", "app:k")
    assert r.code == 0 and r.out == b"v"
    assert status(node)["state"] == "unlocked"

    assert pk(node, "agent", "lock", password=False).code == 0
    assert pk(node, "agent", "unlock").code == 0
    assert status(node)["state"] == "unlocked"


def test_wrong_password_on_unlock_changes_nothing(node: Node, tmp_path: os.PathLike[str]) -> None:
    assert pk(node, "agent", "start").code == 0
    assert pk(node, "agent", "lock", password=False).code == 0
    r = pk(node, "agent", "unlock", password=False, env=base_env(PK_PASSWORD="wrong"))
    assert r.code == 77 and "wrong password" in r.err
    assert status(node)["state"] == "locked"


def test_idle_lock(node: Node) -> None:
    assert pk(node, "agent", "start", "--idle-lock", "0.3").code == 0
    assert status(node)["idleLock"] == 0.3
    wait_for(lambda: status(node)["state"] == "locked", what="idle lock")


def test_on_demand_start_without_password_fails_at_once(node: Node) -> None:
    r = pk(node, "vaults", "list", password=False, env=no_password_env())
    assert r.code == 64
    assert r.err.strip().splitlines() == [
        "pk: a password is required: use --password-file or PK_PASSWORD (no terminal to prompt on)"
    ]
    assert running_pid(node) is None
    r = pk(node, "secrets", "get", "app:x", password=False, env=no_password_env())
    assert r.code == 64 and len(r.err.strip().splitlines()) == 1


def test_on_demand_start_with_wrong_password(node: Node) -> None:
    r = pk(node, "vaults", "list", password=False, env=base_env(PK_PASSWORD="wrong"))
    assert r.code == 77 and r.err.strip() == "pk: wrong password"
    assert running_pid(node) is None


def test_on_demand_start_prompts_on_a_terminal(node: Node) -> None:
    env = no_password_env()
    code, out = run_on_pty(["vaults", "list", "--node-path", str(node.path)], [b"correct horse\n"], env)
    assert code == 0, out
    assert b"Node password: " in out and b"correct horse" not in out
    assert status(node)["state"] == "unlocked"


def test_no_node_no_agent(tmp_path: os.PathLike[str]) -> None:
    r = subprocess.run([pk_executable(), "vaults", "list", "--node-path", os.path.join(tmp_path, "none")],
                       capture_output=True, env=base_env(PK_PASSWORD="x"), timeout=60)
    assert r.returncode == 66 and b"pk bootstrap" in r.stderr


def test_one_agent_per_node(node: Node) -> None:
    assert pk(node, "agent", "start").code == 0
    pid = running_pid(node)
    r = subprocess.run(
        [sys.executable, "-m", "keynode", "--node-path", str(node.path), "--password-file", str(node.password_file),
         "--foreground"],
        capture_output=True, env=base_env(), timeout=60,
    )
    assert r.returncode == 73 and b"already running" in r.stderr
    assert running_pid(node) == pid and ping(node)


def test_foreground_for_systemd(node: Node) -> None:
    proc = subprocess.Popen(
        [pk_executable(), "agent", "start", "--foreground", "--node-path", str(node.path)],
        env=base_env(PK_PASSWORD="correct horse"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: (node.path / "agent.json").exists(), what="foreground agent ready")
        assert running_pid(node) == proc.pid  # pk exec'd into keynode: one process, no fork
        assert status(node)["state"] == "unlocked"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"serving on" in proc.stderr.read()  # type: ignore[union-attr]


def test_stale_lock_and_socket_after_kill9(node: Node) -> None:
    assert pk(node, "vaults", "create", "app").code == 0
    assert pk(node, "secrets", "set", "app:k", input=b"v1").code == 0
    pid = running_pid(node)
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what="agent death")
    assert (node.path / "agent.sock").exists() and (node.path / "agent.lock").exists()  # left behind
    r = pk(node, "secrets", "get", "app:k")
    assert r.code == 0 and r.out == b"v1"
    new_pid = running_pid(node)
    assert new_pid and new_pid != pid


def test_agent_exits_when_its_socket_is_removed(node: Node) -> None:
    assert pk(node, "agent", "start").code == 0
    pid = running_pid(node)
    assert pid
    (node.path / "agent.sock").unlink()  # e.g. the node directory was deleted
    wait_for(lambda: running_pid(node) is None, what="agent exit after its socket was removed")
    assert "removed or replaced" in (node.path / "agent.log").read_text()


def test_agent_makes_the_node_directory_private(node: Node) -> None:
    os.chmod(node.path, 0o755)
    assert pk(node, "agent", "start").code == 0
    assert stat.S_IMODE(node.path.stat().st_mode) == 0o700
    assert "setting 0700" in (node.path / "agent.log").read_text()


def test_agent_log_is_rotated(node: Node) -> None:
    from keynode.__main__ import LOG_BACKUPS, LOG_MAX_BYTES

    log = node.path / "agent.log"
    for age in range(LOG_BACKUPS, 0, -1):  # older generations already there: the oldest is dropped
        (node.path / f"agent.log.{age}").write_text(f"generation {age}\n")
        os.chmod(node.path / f"agent.log.{age}", 0o600)
    log.write_bytes(b"old line\n" * (LOG_MAX_BYTES // 9 + 1))
    assert pk(node, "agent", "start").code == 0
    assert pk(node, "agent", "stop", password=False).code == 0
    assert (node.path / "agent.log.1").read_bytes().startswith(b"old line\n")
    assert (node.path / f"agent.log.{LOG_BACKUPS}").read_text() == f"generation {LOG_BACKUPS - 1}\n"
    assert not (node.path / f"agent.log.{LOG_BACKUPS + 1}").exists()
    assert log.stat().st_size < 100_000 and "stopped" in log.read_text()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in node.path.glob("agent.log*"))


def test_agent_log_holds_no_secret_name_or_value(node: Node) -> None:
    name, value, vault = "zqxname", b"zqxvalue-8841", "zqxvault"
    assert pk(node, "vaults", "create", vault).code == 0
    assert pk(node, "secrets", "set", f"{vault}:{name}/{name}2", input=value).code == 0
    assert pk(node, "secrets", "get", f"{vault}:{name}/{name}2").out == value
    assert pk(node, "secrets", "get", f"{vault}:{name}/missing-zqx").code == 81
    assert pk(node, "secrets", "get", "zqxnovault:x").code == 80
    assert pk(node, "secrets", "env", f"{vault}:{name}", cmd=["true"]).code == 0
    assert pk(node, "secrets", "mv", f"{vault}:{name}/{name}2", f"{vault}:{name}/{name}3").code == 0
    assert pk(node, "secrets", "generate", f"{vault}:{name}4").code == 0
    assert pk(node, "vaults", "rename", vault, vault + "2").code == 0
    assert pk(node, "agent", "lock", password=False).code == 0
    assert pk(node, "secrets", "get", f"{vault}2:{name}/{name}3").out == value
    assert pk(node, "agent", "stop", password=False).code == 0
    log = (node.path / "agent.log").read_text()
    assert "stopped" in log and "zqx" not in log and "correct horse" not in log


def _environ(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().split(b"\0")


def test_the_password_is_never_in_the_agents_environment(node: Node) -> None:
    env = base_env(PK_PASSWORD="correct horse")
    assert pk(node, "vaults", "create", "app", password=False, env=env).code == 0  # an on-demand start
    pid = running_pid(node)
    assert pid and not any(v.startswith(b"PK_PASSWORD=") for v in _environ(pid))
    assert pk(node, "agent", "lock", password=False).code == 0
    assert pk(node, "vaults", "list", password=False, env=env).code == 0  # unlocked by the client
    assert pk(node, "agent", "stop", password=False).code == 0
    proc = subprocess.Popen([pk_executable(), "agent", "start", "--foreground", "--node-path", str(node.path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: running_pid(node) == proc.pid, what="foreground agent")
        assert not any(v.startswith(b"PK_PASSWORD=") for v in _environ(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_agent_never_runs_code_from_the_callers_directory(node: Node, tmp_path: Path) -> None:
    """`pk` run from a directory holding a `keynode/` package must still start the installed agent
    (`python -P -m keynode`): the current directory is not on the daemon's sys.path."""
    planted = tmp_path / "workdir"
    (planted / "keynode").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (planted / "keynode" / "__init__.py").write_text("")
    (planted / "keynode" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = subprocess.run(
        [pk_executable(), "agent", "start", "--node-path", str(node.path), "--password-file", str(node.password_file)],
        cwd=planted, capture_output=True, env=base_env(), timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert status(node)["state"] == "unlocked"
