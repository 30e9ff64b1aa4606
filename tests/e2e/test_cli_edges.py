"""Rough edges a new user meets (issue 8): help texts, the default node path, a second agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ..conftest import Node, base_env, pk_executable, run_pk
from .agent_util import no_password_env, pk, ping, running_pid


def test_env_help_says_the_exit_code_and_signals_are_the_commands() -> None:
    r = run_pk("secrets", "env", "--help")
    assert r.code == 0
    text = " ".join(r.text.split())
    assert "the exit code and signals are CMD's" in text and "pk's" not in text


def test_a_relative_xdg_data_home_is_ignored(tmp_path: Path) -> None:
    """XDG Base Directory spec: a relative path in XDG_DATA_HOME is invalid and ignored. Both
    routes into pk (click: bootstrap; the fast path: secrets get) find the same node."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    home = tmp_path / "home"
    env = base_env(HOME=str(home), XDG_DATA_HOME="relative/xdg", PK_PASSWORD="correct horse")
    env.pop("PK_NODE_PATH", None)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([pk_executable(), *args], cwd=tmp_path, env=env, capture_output=True, timeout=60)

    r = run("bootstrap", "--format", "json")
    assert r.returncode == 0, r.stderr
    expected = home / ".local" / "share" / "polykey"
    assert json.loads(r.stdout)["nodePath"] == str(expected)
    assert not (tmp_path / "relative").exists()
    assert run("vaults", "create", "app").returncode == 0
    assert subprocess.run([pk_executable(), "secrets", "set", "app:k"], input=b"v", cwd=tmp_path, env=env,
                          capture_output=True, timeout=60).returncode == 0
    r = run("secrets", "get", "app:k")  # the click-free route
    assert (r.returncode, r.stdout) == (0, b"v"), r.stderr
    assert not (tmp_path / "relative").exists()
    run("agent", "stop")


def test_default_node_path_has_one_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from polykey.agent_client import paths
    from polykey.cli.hot import Options

    mp = monkeypatch
    mp.delenv("PK_NODE_PATH", raising=False)
    mp.delenv("PK_FORMAT", raising=False)
    mp.setenv("HOME", str(tmp_path))
    for xdg, base in [("", tmp_path / ".local/share"), ("rel/dir", tmp_path / ".local/share"),
                      (str(tmp_path / "x"), tmp_path / "x")]:
        mp.setenv("XDG_DATA_HOME", xdg)
        assert paths.default_node_path() == str(base / "polykey")
        assert Options(None, None, None).node_path == str(base / "polykey")  # what every pk command uses


def test_foreground_start_while_an_agent_runs(node: Node) -> None:
    """`pk agent start --foreground` beside a running agent: `pk:` and exit 73, with or without
    a password source (before, 64 without one, and a `keynode:` message with one)."""
    assert pk(node, "agent", "start").code == 0
    pid = running_pid(node)
    with_password = pk(node, "agent", "start", "--foreground")
    without = pk(node, "agent", "start", "--foreground", password=False, env=no_password_env())
    for r in (with_password, without):
        assert r.code == 73, r.err
        assert r.err.startswith("pk: ") and "already running" in r.err and len(r.err.splitlines()) == 1
    assert running_pid(node) == pid and ping(node)


def test_status_lists_each_open_vault_once_by_name(node: Node) -> None:
    """A vault used by name and by VaultId (`pk://VAULTID/...`) is one open vault, shown by name,
    and it follows a rename."""
    created = pk(node, "vaults", "create", "app", "--format", "json")
    assert created.code == 0, created.err
    vault_id = created.json["vaultId"]  # type: ignore[index]
    assert pk(node, "secrets", "set", "app:k", input=b"v").code == 0
    r = pk(node, "inject", input=f"x={{{{ pk://{vault_id}/k }}}}".encode())
    assert (r.code, r.out) == (0, b"x=v"), r.err
    assert pk(node, "secrets", "env", f"{vault_id}:k", "--env-format", "json").code == 0
    assert pk(node, "secrets", "get", f"{vault_id}:k").out == b"v"
    st = pk(node, "agent", "status", "--format", "json").json
    assert st["openVaults"] == ["app"]  # type: ignore[index]
    assert "Open vaults: app\n" in pk(node, "agent", "status").text
    assert pk(node, "vaults", "rename", "app", "prod").code == 0
    assert pk(node, "agent", "status", "--format", "json").json["openVaults"] == ["prod"]  # type: ignore[index]
    assert pk(node, "vaults", "delete", "prod", "--yes").code == 0
    assert pk(node, "agent", "status", "--format", "json").json["openVaults"] == []  # type: ignore[index]


ENV_VALUES = {"SQ": "it's", "DOLLAR": "pa$$ `id` $(id)", "BS": "C:\\x\\\\y", "NL": "a\nb=c", "UNI": "grüße", "EMPTY": ""}


def test_env_formats_read_back_exactly_through_a_real_agent(node: Node, tmp_path: Path) -> None:
    from dotenv import dotenv_values

    assert pk(node, "vaults", "create", "app").code == 0
    for name, value in {**ENV_VALUES, "ISSUE": "it's $HOME `id`"}.items():
        assert pk(node, "secrets", "set", f"app:env/{name}", input=value.encode()).code == 0
    targets = [f"app:env/{name}" for name in ENV_VALUES]
    names = list(ENV_VALUES)
    show = "printf '%s\\0' " + " ".join(f'"${n}"' for n in names)
    for route in ({}, {"PK_NO_FAST_PATH": "1"}):
        for fmt in ("unix", "dotenv", "json"):
            r = pk(node, "secrets", "env", *targets, "--env-format", fmt, env=base_env(**route))
            assert r.code == 0, r.err
            path = tmp_path / f"out.{fmt}"
            path.write_bytes(r.out)
            if fmt == "json":
                assert json.loads(r.out) == ENV_VALUES
                continue
            read = subprocess.run(["sh", "-c", f"set -a; . {path}; {show}"], capture_output=True, timeout=30)
            assert read.stdout.decode().split("\0")[:-1] == [ENV_VALUES[n] for n in names]
            if fmt == "dotenv":
                assert dict(dotenv_values(path)) == ENV_VALUES
        # The value has no dotenv form both readers agree on: refused, nothing printed.
        r = pk(node, "secrets", "env", "app:env/ISSUE", "--env-format", "dotenv", env=base_env(**route))
        assert (r.code, r.out) == (64, b"") and r.err.startswith("pk: ISSUE: ") and len(r.err.splitlines()) == 1
        r = pk(node, "secrets", "env", "app:env/ISSUE", env=base_env(**route))
        read = subprocess.run(["sh", "-c", r.text + 'printf %s "$ISSUE"'], capture_output=True, timeout=30)
        assert read.stdout == b"it's $HOME `id`"


def test_empty_listings_say_what_to_do_next(node: Node) -> None:
    for args in (["vaults", "list"], ["secrets", "ls"]):
        r = pk(node, *args)
        assert (r.code, r.out, r.err) == (0, b"", "No vaults yet: pk vaults create NAME\n"), args
        r = pk(node, *args, "--format", "json")
        assert (r.code, r.json) == (0, [])
    created = pk(node, "vaults", "create", "app", "--format", "json").json
    # `pk secrets ls` without a vault lists the vaults, exactly as `pk vaults list` does.
    for fmt in ("human", "json"):
        assert pk(node, "secrets", "ls", "--format", fmt).out == pk(node, "vaults", "list", "--format", fmt).out
    r = pk(node, "secrets", "ls")
    assert r.text == f"app\t{created['vaultId']}\towner\n"  # type: ignore[index]
    r = pk(node, "secrets", "ls", "app")
    assert (r.code, r.out, r.err) == (0, b"", "Vault app is empty: add a secret with pk secrets set app:NAME\n")
    assert pk(node, "secrets", "ls", "app", "--format", "json").json == []
    assert pk(node, "secrets", "mkdir", "app:db").code == 0
    r = pk(node, "secrets", "ls", "app:db")
    assert (r.code, r.out, r.err) == (0, b"", "app:db/ is empty: add a secret with pk secrets set app:db/NAME\n")
    assert pk(node, "secrets", "ls", "app").text == "db/\n"
    r = pk(node, "secrets", "ls", "-r")
    assert r.code == 64 and r.err.startswith("pk: ")


def test_reference_errors_name_the_reference_and_line(node: Node, tmp_path: Path) -> None:
    assert pk(node, "vaults", "create", "app").code == 0
    assert pk(node, "secrets", "set", "app:k", input=b"v").code == 0
    for route in ({}, {"PK_NO_FAST_PATH": "1"}):
        r = pk(node, "secrets", "env", "app:nope", env=base_env(**route))
        assert r.code == 81 and r.err.startswith("pk: app:nope: ") and "'nope'" in r.err, r.err
        r = pk(node, "secrets", "env", "app:k", "other:x=X", "--env-format", "json", env=base_env(**route))
        assert r.code == 80 and r.err.startswith("pk: other:x: ") and r.out == b"", r.err
        r = pk(node, "secrets", "env", "app:k", "app:nope/deeper", cmd=["true"], env=base_env(**route))
        assert r.code == 81 and r.err.startswith("pk: app:nope/deeper: "), r.err
    env_file = tmp_path / "deploy.env"
    env_file.write_text("# deploy\nK=pk://app/k\n\nDB=pk://app/nope\n")
    r = pk(node, "run", "--env-file", env_file, cmd=["true"])
    assert r.code == 81 and r.err.startswith(f"pk: {env_file} line 4: pk://app/nope: "), r.err
    env_file.write_text("K=pk://gone/k\n")
    r = pk(node, "run", "--env-file", env_file, cmd=["true"])
    assert r.code == 80 and r.err.startswith(f"pk: {env_file} line 1: pk://gone/k: "), r.err
    r = pk(node, "inject", input=b"a={{ pk://app/k }}\n\nb={{ pk://app/k }} {{ pk://app/nope }}\n")
    assert (r.code, r.out) == (81, b"") and r.err.startswith("pk: stdin line 3: pk://app/nope: "), r.err
    template = tmp_path / "t.tmpl"
    template.write_text("x\n{{ pk://app/nope }}\n")
    r = pk(node, "inject", "-i", template, "-o", tmp_path / "out")
    assert r.code == 81 and r.err.startswith(f"pk: {template} line 2: pk://app/nope: ") and not (tmp_path / "out").exists()
