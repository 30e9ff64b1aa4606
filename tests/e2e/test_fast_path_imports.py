"""What the installed `pk` loads for each everyday command (docs/performance.md "Fast path").

The test venv holds an editable install, whose `pk` needs `site` to find the sources. So these
tests lay out a normal install (what `pip install .` makes: `bin/pk` = bin/pk of this tree and
`bin/python3` beside it, `lib/pythonX.Y/site-packages/polykey`, a `pyvenv.cfg`) with links into
this tree and the test venv, and read what each command imported from Python's own import
profile (PYTHONPROFILEIMPORTTIME), beyond what `python3 -S -c pass` imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Node, base_env, bootstrap_node, stop_agents_under
from .agent_util import pk as pk_test

ROOT = Path(__file__).resolve().parents[2]

#: Every everyday command loads these and nothing else: C modules and the light agent client.
CORE = {
    "__future__", "polykey", "polykey.cli", "polykey.cli.fast", "polykey.cli.hot",
    "polykey.agent_client", "polykey.agent_client.paths", "polykey.agent_client.protocol", "polykey.agent_client.client",
    "polykey.agent_client.session", "polykey.agent_client.strict_json", "_socket", "errno", "binascii", "_json", "itertools",
}
#: `os` and what it imports: only to exec a command (os.execvpe searches PATH, with `warnings`).
OS = {"os", "posixpath", "genericpath", "stat", "_stat", "_collections_abc", "warnings"}
NEVER = {"click", "pygit2", "nacl", "cryptography", "asyncio", "msgpack", "typing", "re", "pathlib", "json",
         "socket", "enum", "site", "selectors", "struct", "polykey.errors", "polykey.cli.errors", "keynode"}


def _symlink_tree(site: Path) -> None:
    site.mkdir(parents=True)
    here = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for entry in here.iterdir():
        if entry.name.startswith(("__editable__", "polykey", "keynode")) or entry.name.endswith(".pth"):
            continue
        (site / entry.name).symlink_to(entry)
    (site / "polykey").symlink_to(ROOT / "polykey")
    (site / "keynode").symlink_to(ROOT / "keynode")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Node]]:
    root = tmp_path_factory.mktemp("installed")
    prefix = root / "venv"
    (prefix / "bin").mkdir(parents=True)
    base = Path(os.path.realpath(sys.executable))
    (prefix / "bin" / "python3").symlink_to(base)
    (prefix / "pyvenv.cfg").write_text(f"home = {base.parent}\ninclude-system-site-packages = false\n")
    (prefix / "bin" / "pk").write_bytes((ROOT / "bin" / "pk").read_bytes())
    (prefix / "bin" / "pk").chmod(0o755)
    _symlink_tree(prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
    node = bootstrap_node(root)
    env = {**base_env(), "PK_NODE_PATH": str(node.path), "PK_PASSWORD": "correct horse"}
    for args, value in ((["vaults", "create", "app"], b""), (["secrets", "set", "app:db/password"], b"s3cret"),
                        (["secrets", "set", "app:db/user"], b"admin")):
        r = subprocess.run([str(prefix / "bin" / "pk"), *args], input=value, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    (root / "t.tmpl").write_text("{{ pk://app/db/user }}\n")
    (root / "ok.env").write_text("U=pk://app/db/user\n")
    yield prefix, node
    stop_agents_under(root)


def _imported(argv: list[str], env: dict[str, str], input: bytes = b"") -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    r = subprocess.run(argv, input=input, capture_output=True, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    names = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if line.startswith("import time:")}
    return r, names - {"imported package"}


CASES = [
    (["secrets", "get", "app:db/password"], b"", set()),
    (["secrets", "cat", "app:db/password", "--format", "json"], b"", set()),
    (["secrets", "set", "app:new/set"], b"v", set()),
    (["secrets", "ls", "app", "-r"], b"", set()),
    (["secrets", "rm", "app:new/rm"], b"", set()),
    (["vaults", "list"], b"", set()),
    (["agent", "status"], b"", set()),
    (["secrets", "env", "app:db"], b"", {"polykey.cli.hot_env"}),
    (["secrets", "env", "app:db", "--", "true"], b"", {"polykey.cli.hot_env"} | OS),
    (["run", "--env-file", "{root}/ok.env", "--", "true"], b"", {"polykey.cli.hot_env"} | OS),
    (["inject", "-i", "{root}/t.tmpl"], b"", {"polykey.cli.hot_env"}),
]


@pytest.mark.parametrize("args,stdin,extra", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_installed_pk_loads_only_what_the_command_needs(installed: tuple[Path, Node], args: list[str], stdin: bytes,
                                                        extra: set[str]) -> None:
    prefix, node = installed
    env = {**base_env(), "PK_NODE_PATH": str(node.path), "PK_PASSWORD": "correct horse"}
    _, interpreter = _imported([str(prefix / "bin" / "python3"), "-S", "-c", "pass"], env)
    argv = [str(prefix / "bin" / "pk"), *(a.replace("{root}", str(node.path.parent)) for a in args)]
    if args[:2] == ["secrets", "rm"]:
        subprocess.run([argv[0], "secrets", "set", args[2]], input=b"v", env=env, check=True, timeout=60)
    r, names = _imported(argv, env, stdin)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert not names & NEVER, sorted(names & NEVER)
    assert names - interpreter == CORE | extra


def test_installed_pk_hands_everything_else_to_click(installed: tuple[Path, Node]) -> None:
    prefix, node = installed
    env = {**base_env(), "PK_NODE_PATH": str(node.path), "PK_PASSWORD": "correct horse"}
    pk = str(prefix / "bin" / "pk")
    r, names = _imported([pk, "secrets", "get", "--help"], env)
    assert r.returncode == 0 and b"VAULT:PATH" in r.stdout and {"click", "site"} <= names
    r = subprocess.run([pk, "--version"], capture_output=True, env=env, timeout=60)
    assert (r.returncode, r.stdout) == (0, b"pk, version 0.1.0\n")
    r = subprocess.run([pk, "secrets", "get", "app:nope"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 81 and b"nope" in r.stderr
    # Through a symlink (pipx links bin/pk into ~/.local/bin), and as `python3 pk`.
    link = node.path.parent / "pk-link"
    link.symlink_to(prefix / "bin" / "pk")
    r = subprocess.run([str(link), "secrets", "get", "app:db/password"], capture_output=True, env=env, timeout=60)
    assert (r.returncode, r.stdout) == (0, b"s3cret"), r.stderr
    r = subprocess.run([str(prefix / "bin" / "python3"), pk, "secrets", "get", "app:db/password"], capture_output=True,
                       env=env, timeout=60)
    assert (r.returncode, r.stdout) == (0, b"s3cret"), r.stderr


def test_pip_installs_the_fast_entry_point(tmp_path: Path, node: Node) -> None:
    """A real `pip install` (of a copy of the tree, into a prefix) ships bin/pk, which finds the
    installed package without `site`."""
    import shutil

    tree = tmp_path / "src"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__",
                                                              ".mypy_cache", ".pytest_cache", ".hypothesis", "tests"))
    prefix = tmp_path / "prefix"
    # --ignore-installed: into the prefix only, never uninstalling the test venv's own polykey.
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
                        "--disable-pip-version-check", "--prefix", str(prefix), str(tree)], capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    pk = prefix / "bin" / "pk"
    assert pk.read_bytes() == (ROOT / "bin" / "pk").read_bytes()  # installed as is: pip rewrites only `#!python`
    (prefix / "bin" / "python3").symlink_to(os.path.realpath(sys.executable))
    env = {**base_env(), "PK_NODE_PATH": str(node.path), "PK_PASSWORD": "correct horse"}
    # The prefix holds polykey alone (--no-deps): set up with the test venv's pk, read with this one.
    assert pk_test(node, "vaults", "create", "app").code == 0
    assert pk_test(node, "secrets", "set", "app:k", input=b"v").code == 0
    r, names = _imported([str(pk), "secrets", "ls", "app"], env)
    assert (r.returncode, r.stdout) == (0, b"k\n"), r.stderr.decode()[-2000:]
    assert "site" not in names and not names & NEVER
