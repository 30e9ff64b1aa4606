"""Secrets for machines through the agent: get, env, run, inject, polykey.Client, the fast path."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import Node, base_env, pk_executable, run_pk
from .agent_util import pk, running_pid


@pytest.fixture
def app(node: Node) -> Node:
    assert pk(node, "vaults", "create", "app").code == 0
    for path, value in [
        ("db/password", b"s3cret"),
        ("db/user", b"admin"),
        ("api/API_KEY", b"k-123\n"),
        ("bin", b"\x00\xff\n"),
        ("bad-name", b"x"),
        ("one/TOKEN", b"first"),
        ("two/TOKEN", b"second"),
    ]:
        r = pk(node, "secrets", "set", f"app:{path}", input=value)
        assert r.code == 0, r.err
    return node


def test_new_user_scenario(tmp_path: Path) -> None:
    """The issue's 'done when': no agent is ever started by hand."""
    env = base_env(PK_NODE_PATH=str(tmp_path / "node"), PK_PASSWORD="new user pw")
    assert run_pk("bootstrap", env=env).code == 0
    assert run_pk("vaults", "create", "app", env=env).code == 0
    assert run_pk("secrets", "set", "app:db/password", input=b"s3cret", env=env).code == 0
    r = run_pk("secrets", "env", "app:db/password=DB_PASSWORD", "--", "sh", "-c", "echo $DB_PASSWORD", env=env)
    assert (r.code, r.out) == (0, b"s3cret\n")


def test_get_is_raw_and_exact(app: Node) -> None:
    assert pk(app, "secrets", "get", "app:api/API_KEY").out == b"k-123\n"
    assert pk(app, "secrets", "cat", "app:bin").out == b"\x00\xff\n"
    j = pk(app, "secrets", "get", "app:bin", "--format", "json").json
    assert j == {"path": "bin", "valueBase64": "AP8K"}
    assert pk(app, "secrets", "get", "app:db/password", "--format", "json").json == {"path": "db/password", "value": "s3cret"}


def test_env_exports_and_formats(app: Node) -> None:
    r = pk(app, "secrets", "env", "app:db", "app:api/API_KEY=KEY")
    assert r.code == 0, r.err
    assert r.text == "export password='s3cret'\nexport user='admin'\nexport KEY='k-123\n'\n"
    r = pk(app, "secrets", "env", "app:db/password=DB_PASSWORD", "--env-format", "dotenv")
    assert r.text == "DB_PASSWORD='s3cret'\n"
    r = pk(app, "secrets", "env", "app:db", "--env-format", "json")
    assert json.loads(r.out) == {"password": "s3cret", "user": "admin"}
    assert pk(app, "secrets", "env", "app:db", "--format", "json").json == {"password": "s3cret", "user": "admin"}
    # The export lines reproduce the values exactly in a shell.
    script = pk(app, "secrets", "env", "app:api/API_KEY=KEY").text
    out = subprocess.run(["sh", "-c", script + 'printf %s "$KEY"'], capture_output=True).stdout
    assert out == b"k-123\n"


def test_env_name_policies(app: Node) -> None:
    r = pk(app, "secrets", "env", "app")
    assert r.code == 65 and "'bad-name' is not a valid environment variable name" in r.err
    some = ["app:bad-name", "app:one", "app:two", "app:db"]
    r = pk(app, "secrets", "env", *some, "--env-invalid", "warn", "--env-format", "json")
    assert r.code == 0 and "warning" in r.err and "bad-name" in r.err
    env = json.loads(r.out)
    assert env == {"TOKEN": "second", "password": "s3cret", "user": "admin"}  # overwrite is the default
    r = pk(app, "secrets", "env", *some, "--env-invalid", "ignore", "--env-duplicate", "keep", "--env-format", "json")
    assert r.code == 0 and r.err == "" and json.loads(r.out)["TOKEN"] == "first"
    r = pk(app, "secrets", "env", "app:bin", "--env-format", "json")
    assert r.code == 64 and "not UTF-8" in r.err
    r = pk(app, "secrets", "env", "app:one", "app:two", "--env-duplicate", "error")
    assert r.code == 65 and "TOKEN is set more than once" in r.err
    r = pk(app, "secrets", "env", "app:one", "app:two", "--env-duplicate", "warn", "--env-format", "json")
    assert r.code == 0 and "last one wins" in r.err and json.loads(r.out) == {"TOKEN": "second"}
    r = pk(app, "secrets", "env", "app:db=X")
    assert r.code == 64 and "is a directory" in r.err


def test_env_runs_a_command_with_exit_code_and_signals(app: Node) -> None:
    r = pk(app, "secrets", "env", "app:api/API_KEY=KEY", "app:db/password=DB",
           cmd=["sh", "-c", 'printf "%s|%s" "$KEY" "$DB"; exit 7'])
    assert (r.code, r.out) == (7, b"k-123\n|s3cret")
    r = pk(app, "secrets", "env", "app:db/password", cmd=["sh", "-c", "kill -TERM $$"])
    assert r.code == -signal.SIGTERM
    # The command gets default signal dispositions, as from a shell (Python ignores SIGPIPE).
    r = pk(app, "secrets", "env", "app:db/password", cmd=["sh", "-c", "kill -PIPE $$; exit 9"])
    assert r.code == -signal.SIGPIPE
    r = pk(app, "secrets", "env", "app:db/password", cmd=["sh", "-c", "yes | head -n 1"])
    assert (r.code, r.out, r.err) == (0, b"y\n", "")
    # The node password given to pk is not handed on to the command.
    r = pk(app, "secrets", "env", "app:db/password", password=False, env=base_env(PK_PASSWORD="correct horse"),
           cmd=["sh", "-c", 'printf "%s|%s" "${PK_PASSWORD-unset}" "$password"'])
    assert (r.code, r.out) == (0, b"unset|s3cret"), r.err
    r = pk(app, "secrets", "env", "app:db/password", cmd=["no-such-command-xyz"])
    assert r.code == 127 and r.err.strip() == "pk: command not found: no-such-command-xyz"
    # A signal sent to pk reaches the command (pk became it).
    proc = subprocess.Popen(
        [pk_executable(), "secrets", "env", "app:db/password", "--node-path", str(app.path),
         "--password-file", str(app.password_file), "--", "sh", "-c", "echo ready; exec sleep 60"],
        stdout=subprocess.PIPE, env=base_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == -signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_with_env_file(app: Node, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# deploy\nDB_PASSWORD=pk://app/db/password\nexport API_KEY='pk://app/api/API_KEY'\nMODE=prod\n")
    r = pk(app, "run", "--env-file", env_file, cmd=["sh", "-c", 'printf "%s|%s|%s" "$DB_PASSWORD" "$API_KEY" "$MODE"'])
    assert (r.code, r.out) == (0, b"s3cret|k-123\n|prod")
    assert pk(app, "run", "--env-file", env_file, cmd=["sh", "-c", "kill -PIPE $$; exit 9"]).code == -signal.SIGPIPE
    r = pk(app, "run", "--env-file", env_file, password=False, env=base_env(PK_PASSWORD="correct horse"),
           cmd=["sh", "-c", 'printf "%s|%s" "${PK_PASSWORD-unset}" "$DB_PASSWORD"'])
    assert (r.code, r.out) == (0, b"unset|s3cret"), r.err
    env_file.write_text("DB=pk://app/nope\n")
    r = pk(app, "run", "--env-file", env_file, cmd=["true"])
    assert r.code == 81 and "nope" in r.err  # SecretNotFoundError, rebuilt from the agent
    env_file.write_text("DB=pk://app\n")
    assert pk(app, "run", "--env-file", env_file, cmd=["true"]).code == 65


def test_inject(app: Node, tmp_path: Path) -> None:
    template = tmp_path / "config.tmpl"
    template.write_text("user={{ pk://app/db/user }}\npass={{pk://app/db/password}}\nkeep={{ other }}\n")
    out = tmp_path / "config.ini"
    r = pk(app, "inject", "-i", template, "-o", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == b"user=admin\npass=s3cret\nkeep={{ other }}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    r = pk(app, "inject", input=b"x={{ pk://app/db/user }}")
    assert (r.code, r.out) == (0, b"x=admin")
    r = pk(app, "inject", input=b"x={{ pk://app }}")
    assert r.code == 65 and "stdin line 1" in r.err


def test_python_client(app: Node) -> None:
    code = (
        "import sys, json\n"
        "from polykey import Client\n"
        "c = Client(sys.argv[1])\n"
        "v = c.get('app:db/password'); b = c.get('pk://app/bin')\n"
        "c.set('app:from/python', b'py')\n"
        "heavy = sorted(m for m in ('click', 'asyncio', 'pygit2', 'nacl', 'cryptography') if m in sys.modules)\n"
        "try:\n    c.get('app:missing')\nexcept Exception as e:\n    err = type(e).__name__\n"
        "print(json.dumps([v.decode(), b.hex(), heavy, err, c.status()['state']]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(app.path)], capture_output=True, env=base_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["s3cret", "00ff0a", [], "SecretNotFoundError", "unlocked"]
    assert pk(app, "secrets", "get", "app:from/python").out == b"py"


HOT_CASES = [
    ["secrets", "get", "app:db/password"],
    ["secrets", "cat", "app:bin", "--format", "json"],
    ["secrets", "get", "app:nope"],
    ["secrets", "get", "nosuchvault:x"],
    ["secrets", "get", "novaultpath"],
    ["secrets", "get", "app:db"],
    ["secrets", "get", "app:bin"],
    ["secrets", "get", ":x"],
    ["secrets", "get", "nosuchvault:x", "--format", "json"],
    ["secrets", "get", "app:db/password", "--commit", "zz"],
    ["secrets", "env", "app:db", "app:api/API_KEY=KEY"],
    ["secrets", "env", "app:db", "--env-format", "json"],
    ["secrets", "env", "app"],
    ["secrets", "env", "app", "--env-invalid=ignore", "--env-duplicate=error"],
    ["secrets", "env", "app:db/password=1X"],
    ["secrets", "env", "app:db=X"],
]


@pytest.mark.parametrize("args", HOT_CASES, ids=[" ".join(a) for a in HOT_CASES])
def test_fast_path_and_click_agree(app: Node, args: list[str]) -> None:
    fast = pk(app, *args)
    slow = pk(app, *args, env=base_env(PK_NO_FAST_PATH="1"))
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err)


def test_fast_path_and_click_agree_without_agent_or_password(node: Node) -> None:
    from .agent_util import no_password_env

    for args in (["secrets", "get", "app:x"], ["secrets", "env", "app:x"]):
        fast = pk(node, *args, password=False, env=no_password_env())
        slow = pk(node, *args, password=False, env=no_password_env(PK_NO_FAST_PATH="1"))
        assert fast.code == slow.code == 64 and fast.err == slow.err
    missing = str(node.path.parent / "nothing-here") + "//"
    for args in (["secrets", "get", "app:x"], ["secrets", "env", "app:x", "--format", "json"]):
        fast = run_pk(*args, "--node-path", missing, env=base_env(PK_PASSWORD="pw"))
        slow = run_pk(*args, "--node-path", missing, env=base_env(PK_PASSWORD="pw", PK_NO_FAST_PATH="1"))
        assert fast.code == slow.code == 66 and fast.err == slow.err and "nothing-here:" in fast.err


def test_fast_path_and_click_agree_on_commands(app: Node) -> None:
    cmd = ["sh", "-c", 'printf "%s" "$KEY"; exit 3']
    fast = pk(app, "secrets", "env", "app:api/API_KEY=KEY", cmd=cmd)
    slow = pk(app, "secrets", "env", "app:api/API_KEY=KEY", cmd=cmd, env=base_env(PK_NO_FAST_PATH="1"))
    assert (fast.code, fast.out) == (slow.code, slow.out) == (3, b"k-123\n")


PROBE = """
import json, sys
sys.argv = ["pk", *sys.argv[1:]]
from polykey.cli import main
code = main()
sys.stdout.flush()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"click", "asyncio", "pygit2", "nacl", "cryptography"})
sys.stderr.write("\\nMODULES " + json.dumps([code, heavy]) + "\\n")
"""


def _probe(node: Node, *args: str) -> tuple[int, list[str]]:
    argv = [*args, "--node-path", str(node.path), "--password-file", str(node.password_file)]
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, env=base_env(), timeout=60)
    line = [ln for ln in r.stderr.decode().splitlines() if ln.startswith("MODULES ")][-1]
    code, heavy = json.loads(line[len("MODULES "):])
    return code, heavy


def test_hot_commands_import_nothing_heavy(app: Node) -> None:
    assert _probe(app, "secrets", "get", "app:db/password") == (0, [])
    assert _probe(app, "secrets", "env", "app:db") == (0, [])
    assert _probe(app, "secrets", "get", "app:nope") == (81, [])
    code, heavy = _probe(app, "secrets", "get", "--help")
    assert code == 0 and "click" in heavy  # --help is click's


def test_concurrent_cli_clients_share_one_agent(app: Node) -> None:
    procs = [
        subprocess.Popen([pk_executable(), "secrets", "get", "app:db/password", "--node-path", str(app.path),
                          "--password-file", str(app.password_file)], stdout=subprocess.PIPE, env=base_env())
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert outs == [b"s3cret"] * 8 and all(p.returncode == 0 for p in procs)
    assert running_pid(app) is not None


def test_concurrent_on_demand_starts_yield_one_agent(app: Node) -> None:
    assert pk(app, "agent", "stop", password=False).code == 0
    procs = [
        subprocess.Popen([pk_executable(), "secrets", "get", "app:db/password", "--node-path", str(app.path),
                          "--password-file", str(app.password_file)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=base_env())
        for _ in range(6)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out for out, _ in results] == [b"s3cret"] * 6, [err for _, err in results]
    serving = running_pid(app)
    assert serving is not None
    # Starts that lost the race report AgentRunningError and exit; wait (bounded) for the last of
    # them to be gone, then exactly the serving agent is left.
    deadline = time.monotonic() + 10
    while True:
        agents = subprocess.run(["pgrep", "-f", f"keynode --node-path {app.path}"], capture_output=True,
                                text=True).stdout.split()
        if len(agents) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert agents == [str(serving)]


def test_non_utf8_arguments_are_a_usage_error_on_both_routes(app: Node) -> None:
    argv = [pk_executable().encode(), b"secrets", b"get", b"app:\xff", b"--node-path", bytes(app.path),
            b"--password-file", bytes(app.password_file)]
    for env in (base_env(), base_env(PK_NO_FAST_PATH="1")):
        r = subprocess.run(argv, capture_output=True, env=env, timeout=60)
        assert r.returncode == 64 and b"not valid UTF-8" in r.stderr, r.stderr
