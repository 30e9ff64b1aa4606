"""Both routes into `pk` agree: every everyday command, run by the fast path and by click
(PK_NO_FAST_PATH=1), gives the same stdout, stderr and exit code -- successes, errors and the
argument shapes the fast path leaves to click alike (polykey/cli/fast.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Node, Result, base_env, bootstrap_node, stop_agents_under
from .agent_util import no_password_env, pk

SECRETS = [
    ("db/password", b"s3cret"),
    ("db/user", b"admin"),
    ("api/API_KEY", b"k-123\n"),
    ("bin", b"\x00\xff\n"),
    ("bad-name", b"x"),
    ("caf\u00e9/x", b"\xc3\xa9t\xc3\xa9"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("parity")
    node = bootstrap_node(root)
    assert pk(node, "vaults", "create", "app").code == 0
    assert pk(node, "vaults", "create", "empty").code == 0
    for path, value in SECRETS:
        assert pk(node, "secrets", "set", f"app:{path}", input=value).code == 0
    (root / "t.tmpl").write_text("u={{ pk://app/db/user }} p={{pk://app/db/password}} {{ x }}\n")
    (root / "bad.tmpl").write_text("line\nx={{ pk://app }}\n")
    (root / "missing.tmpl").write_text("x={{ pk://app/nope }}\n")
    (root / "ok.env").write_text("DB=pk://app/db/password\nexport K='pk://app/api/API_KEY'\nMODE=prod\n")
    (root / "bad.env").write_text("1X=y\n")
    (root / "nope.env").write_text("DB=pk://app/nope\n")
    (root / "file").write_text("")
    yield node
    stop_agents_under(root)


def both(node: Node, *args: str, input: bytes | None = None, password: bool = True,
         env: dict[str, str] | None = None, cmd: list[str] | None = None) -> tuple[Result, Result]:
    env = env if env is not None else base_env()
    fast = pk(node, *args, input=input, password=password, env=env, cmd=cmd)
    slow = pk(node, *args, input=input, password=password, env={**env, "PK_NO_FAST_PATH": "1"}, cmd=cmd)
    return fast, slow


def _uptime(text: str) -> str:
    return re.sub(r'("uptime": |Uptime: )[0-9.e+-]+', r"\1N", text)


READS = [
    # secrets get / cat
    ["secrets", "get", "app:db/password"],
    ["secrets", "cat", "app:bin", "--format", "json"],
    ["secrets", "get", "app:caf\u00e9/x", "--format=json"],
    ["secrets", "get", "app:nope"],
    ["secrets", "get", "nosuchvault:x", "--format", "json"],
    ["secrets", "get", "novaultpath"],
    ["secrets", "get", "app:db"],
    ["secrets", "get", ":x"],
    ["secrets", "get", "app:db/password", "--commit", "zz"],
    ["secrets", "get", "app:db/password", "--commit"],
    ["secrets", "get", "app:db/password", "extra"],
    ["secrets", "get", "--help"],
    ["--format", "yaml", "secrets", "get", "app:db/password"],
    # secrets ls
    ["secrets", "ls", "app"],
    ["secrets", "ls", "app", "-r"],
    ["secrets", "ls", "app:db", "--recursive", "--format", "json"],
    ["secrets", "ls", "app:/db/"],
    ["secrets", "ls", "app:nope"],
    ["secrets", "ls", "app:db/password"],
    ["secrets", "ls", "nosuchvault"],
    ["secrets", "ls", ":x"],
    ["secrets", "ls", "app", "--commit", "zz"],
    ["secrets", "ls", "app", "-r=x"],
    ["secrets", "ls"],
    ["secrets", "ls", "-r"],
    ["secrets", "ls", "--format", "json"],
    ["secrets", "ls", "empty"],
    ["secrets", "ls", "empty", "--commit", "zz"],
    ["secrets", "ls", "app:db", "a", "b"],
    # secrets rm that changes nothing
    ["secrets", "rm", "app:nope"],
    ["secrets", "rm", "app:db/password", "app:nope"],
    ["secrets", "rm", "app:"],
    ["secrets", "rm", "nosuchvault:x"],
    ["secrets", "rm", "-r", "app:db"],
    ["secrets", "rm", "-r", "--yes", "app:nope"],
    ["secrets", "rm", "--recursive", "-y", "app:db", "app:nope"],
    # secrets env
    ["secrets", "env", "app:db", "app:api/API_KEY=KEY"],
    ["secrets", "env", "app:db", "--env-format", "dotenv"],
    ["secrets", "env", "app", "--env-invalid=ignore", "--env-format", "json"],
    ["secrets", "env", "app"],
    ["secrets", "env", "app:bin=B", "--env-format", "json"],
    ["secrets", "env", "app:nope"],
    # vaults list, agent status
    ["vaults", "list"],
    ["vaults", "list", "--format", "json"],
    ["--format", "json", "agent", "status"],
    ["agent", "status"],
    # vaults pull (a vault shared with nobody, a vault that does not exist, a bad NodeId, extra arguments)
    ["vaults", "pull", "app"],
    ["vaults", "pull", "app", "--format", "json"],
    ["vaults", "pull", "nope"],
    ["vaults", "pull", "app", "vnot-a-node"],
    ["vaults", "pull", "app", "v" + "0" * 52, "extra"],
    # inject
    ["inject", "-i", "{root}/t.tmpl"],
    ["inject", "--in-file={root}/t.tmpl", "--format", "json"],
    ["inject", "-i", "{root}/bad.tmpl"],
    ["inject", "-i", "{root}/missing.tmpl"],
    ["inject", "-i", "{root}/none.tmpl"],
    ["inject", "-i", "{root}"],
    # run (commands that fail before or at the exec)
    ["run", "--env-file", "{root}/ok.env"],
    ["run", "--env-file", "{root}/bad.env", "--", "true"],
    ["run", "--env-file", "{root}/nope.env", "--", "true"],
    ["run", "--env-file", "{root}/none.env", "--", "true"],
    ["run", "--env-file", "{root}/ok.env", "--", "no-such-command-xyz"],
    ["run", "--", "true"],
    # path options click refuses
    ["--node-path", "{root}/file", "secrets", "get", "app:db/password"],
    ["secrets", "set", "app:x", "--from-file", "{root}"],
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a) for a in READS])
def test_routes_agree(app: Node, args: list[str]) -> None:
    root = str(app.path.parent)
    fast, slow = both(app, *[a.replace("{root}", root) for a in args])
    assert (fast.code, _uptime(fast.out.decode("utf-8", "replace")), fast.err) == (
        slow.code, _uptime(slow.out.decode("utf-8", "replace")), slow.err)


def test_routes_agree_on_commands_they_run(app: Node) -> None:
    script = ["sh", "-c", 'printf "%s|%s|%s" "$DB" "$K" "$MODE"; exit 3']
    fast, slow = both(app, "run", "--env-file", str(app.path.parent / "ok.env"), cmd=script)
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err) == (3, b"s3cret|k-123\n|prod", "")
    fast, slow = both(app, "secrets", "env", "app:db", cmd=["sh", "-c", 'printf "%s" "$password"'])
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err) == (0, b"s3cret", "")


def test_routes_agree_on_stdin(app: Node) -> None:
    fast, slow = both(app, "inject", input=b"x={{ pk://app/db/user }}")
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err) == (0, b"x=admin", "")


def _normalised(r: Result, route: str) -> tuple[int, str, str]:
    def clean(text: str) -> str:
        return re.sub(r"\b[0-9a-f]{40}\b", "COMMIT", text.replace(route, "ROUTE"))

    return r.code, clean(r.out.decode()), clean(r.err)


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_routes_agree_on_writes(app: Node, tmp_path: Path, fmt: str) -> None:
    """Each route writes its own paths (`fast-F/`, `click-F/`); the outputs match but for them."""
    env = base_env(PK_FORMAT=fmt)
    seen = []
    for route, extra in (("fast-", {}), ("click-", {"PK_NO_FAST_PATH": "1"})):
        d = route + fmt
        run = [
            pk(app, "secrets", "set", f"app:{d}/a", input=b"one", env={**env, **extra}),
            pk(app, "secrets", "set", f"app:{d}/a", input=b"two", env={**env, **extra}),
            pk(app, "secrets", "write", f"app:{d}/b", "--from-file", str(app.password_file), env={**env, **extra}),
            pk(app, "secrets", "set", f"app:{d}/c", "--from-file", str(tmp_path / "none"), env={**env, **extra}),
            pk(app, "secrets", "set", f"{d}", input=b"x", env={**env, **extra}),
            pk(app, "secrets", "rm", f"app:{d}/a", f"app:{d}/b", env={**env, **extra}),
            pk(app, "secrets", "rm", f"app:{d}/a", env={**env, **extra}),
            pk(app, "secrets", "set", f"app:{d}/dir/x", input=b"x", env={**env, **extra}),
            pk(app, "secrets", "rm", "-r", f"app:{d}/dir", env={**env, **extra}),
            pk(app, "secrets", "rm", "-r", "--yes", f"app:{d}/dir", env={**env, **extra}),
            pk(app, "inject", "-i", str(app.path.parent / "t.tmpl"), "-o", str(tmp_path / f"{d}.out"),
               env={**env, **extra}),
        ]
        seen.append([_normalised(r, d) for r in run])
        assert run[0].code == 0 and run[5].code == 0, [r.err for r in run]
        assert (tmp_path / f"{d}.out").read_bytes() == b"u=admin p=s3cret {{ x }}\n"
    assert seen[0] == seen[1]


def test_routes_agree_without_agent_or_password(node: Node) -> None:
    for args in (["secrets", "get", "app:x"], ["secrets", "ls", "app"], ["vaults", "list"],
                 ["secrets", "rm", "app:x"], ["secrets", "env", "app:x"], ["agent", "status"],
                 ["agent", "status", "--format", "json"]):
        fast, slow = both(node, *args, password=False, env=no_password_env())
        assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err), args
    fast, slow = both(node, "secrets", "set", "app:x", input=b"v", password=False, env=no_password_env())
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err)
    assert fast.code == 64


def test_routes_agree_on_the_environment(app: Node) -> None:
    for args in (["secrets", "get", "app:db/password"], ["vaults", "list"], ["secrets", "ls", "app"]):
        for env in (base_env(PK_FORMAT="yaml"), base_env(PK_FORMAT="json")):
            fast, slow = both(app, *args, env=env)
            assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err), (args, env["PK_FORMAT"])
