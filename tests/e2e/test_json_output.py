"""docs/cli.md "Output formats": with --format json every command prints exactly one JSON value
and a newline on stdout; a command that lists things prints an array of objects (``[]`` when there
is nothing), every other command one object (issue 8 item 19).

SHAPES classifies every leaf of the `pk` command tree. A command added without an entry fails
this test, and so does a classified command the scenario below never ran with --format json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from polykey.cli.app import cli

from ..conftest import Node, base_env, bootstrap_node, run_pk

LIST, OBJECT = "list", "object"

SHAPES: dict[str, str] = {
    "bootstrap": OBJECT,
    "keys public": OBJECT,
    "keys password": OBJECT,
    "keys recover": OBJECT,
    "agent start": OBJECT,
    "agent stop": OBJECT,
    "agent status": OBJECT,
    "agent lock": OBJECT,
    "agent unlock": OBJECT,
    "vaults create": OBJECT,
    "vaults list": LIST,
    "vaults rename": OBJECT,
    "vaults delete": OBJECT,
    "vaults log": LIST,
    "vaults version": OBJECT,
    "vaults members": LIST,
    "vaults verify": OBJECT,
    "vaults reset": OBJECT,
    "secrets set": OBJECT,
    "secrets write": OBJECT,
    "secrets get": OBJECT,
    "secrets cat": OBJECT,
    "secrets ls": LIST,
    "secrets rm": OBJECT,
    "secrets mv": OBJECT,
    "secrets cp": OBJECT,
    "secrets mkdir": OBJECT,
    "secrets stat": OBJECT,
    "secrets history": LIST,
    "secrets revert": OBJECT,
    "secrets generate": OBJECT,
    "secrets edit": OBJECT,
    "secrets env": OBJECT,  # printing; with `-- CMD` pk becomes CMD (see NO_JSON)
    "secrets import": OBJECT,
    "secrets export": OBJECT,  # the secrets as one object keyed by path
    "inject": OBJECT,
    "nodes add": OBJECT,
    "nodes find": OBJECT,
    "nodes ping": OBJECT,
    "nodes list": LIST,
    "nodes connections": LIST,
    "nodes trust": OBJECT,
    "nodes untrust": OBJECT,
    "nodes trusted": LIST,
    "vaults share": OBJECT,
    "vaults unshare": OBJECT,
    "vaults invites": OBJECT,  # {"received": [...], "pending": [...]}
    "vaults scan": LIST,
    "vaults clone": OBJECT,
    "vaults pull": LIST,  # one row per member
    "vaults push": LIST,
    "vaults sync": LIST,
    "vaults status": LIST,  # one row per vault
    "cluster up": OBJECT,  # {"dir", "netns", "nodes": [...]}
    "cluster status": OBJECT,
    "cluster env": OBJECT,
    "cluster kill": OBJECT,
    "cluster pause": OBJECT,
    "cluster resume": OBJECT,
    "cluster restart": OBJECT,
    "cluster down": OBJECT,
    "cluster partition": OBJECT,
    "cluster heal": OBJECT,
}

# Classified, but not run here: they need `pk cluster up --netns` (network namespaces).
NETNS_ONLY = {"cluster partition", "cluster heal"}

# Commands whose stdout is another program's: pk replaces itself by that program.
NO_JSON: dict[str, str] = {
    "run": "pk becomes CMD; stdout is CMD's",
    "cluster exec": "runs CMD; stdout is CMD's",
}


def leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every runnable command of the tree, by its words (``"secrets ls"``)."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        words = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            found.update(leaves(command, words))
        else:
            found[words] = command
    return found


class JsonRun:
    """Runs pk commands with --format json and checks each output against the rule."""

    def __init__(self, tree: dict[str, click.Command]) -> None:
        self.tree = tree
        self.checked: set[str] = set()

    @staticmethod
    def leaf(args: tuple[str | Path, ...]) -> str:
        """The command that ``pk ARGS`` runs, by its words."""
        command: click.Command = cli
        words: list[str] = []
        for arg in map(str, args):
            if not isinstance(command, click.Group) or arg not in command.commands:
                break
            command = command.commands[arg]
            words.append(arg)
        name = " ".join(words)
        assert name in SHAPES, f"{args!r}: no command of SHAPES"
        return name

    def __call__(self, node: Node, *args: str | Path, input: bytes | None = None,
                 env: dict[str, str] | None = None, password: bool = True) -> Any:
        name = self.leaf(args)
        # Commands that confirm a destructive step take --yes: these runs confirm.
        extra = ["--yes"] if any(p.name == "yes" for p in self.tree[name].params) else []
        full: list[str | Path] = [*args, *extra, "--node-path", node.path, "--format", "json"]
        if password:
            full += ["--password-file", node.password_file]
        r = run_pk(*full, input=input, env=env)
        assert r.code == 0, f"pk {name}: exit {r.code}: {r.err}"
        shown = f"pk {name} --format json printed {r.out!r}"
        assert r.out.endswith(b"\n") and r.out.count(b"\n") == 1, f"{shown}: not one line"
        try:
            value = json.loads(r.out)
        except ValueError:
            raise AssertionError(f"{shown}: not JSON") from None
        if SHAPES[name] == LIST:
            assert isinstance(value, list), f"{shown}: a list command prints an array"
            assert all(isinstance(row, dict) for row in value), f"{shown}: an array of objects"
        else:
            assert isinstance(value, dict), f"{shown}: prints one object"
        self.checked.add(name)
        return value


def test_every_command_prints_one_json_value_of_its_shape(tmp_path: Path) -> None:
    tree = leaves(cli)
    unclassified = sorted(set(tree) - set(SHAPES) - set(NO_JSON))
    assert not unclassified, f"classify these commands in SHAPES or NO_JSON: {unclassified}"
    stale = sorted((set(SHAPES) | set(NO_JSON)) - set(tree))
    assert not stale, f"no such commands any more: {stale}"
    pk = JsonRun(tree)

    # identity
    a_pw = tmp_path / "a.pw"
    a_pw.write_text("first password, long\n")
    a_pw.chmod(0o600)
    a = Node(tmp_path / "a", a_pw, "", "")
    made = pk(a, "bootstrap")
    a.node_id, code = made["nodeId"], made["recoveryCode"]
    pk(a, "keys", "public")
    pk(a, "keys", "public", "--ssh")
    new_pw = tmp_path / "a2.pw"
    new_pw.write_text("second password, longer\n")
    new_pw.chmod(0o600)
    pk(a, "keys", "password", "--new-password-file", new_pw)
    a.password_file = new_pw
    code_file = tmp_path / "code"
    code_file.write_text(code + "\n")
    code_file.chmod(0o600)
    again = Node(tmp_path / "again", new_pw, "", "")
    assert pk(again, "keys", "recover", "--recovery-code-file", code_file)["nodeId"] == a.node_id

    # the agent, before and after it runs; empty lists are []
    assert pk(a, "agent", "status", password=False)["state"] == "stopped"
    pk(a, "agent", "stop", password=False)
    pk(a, "agent", "lock", password=False)
    a_peer = pk(a, "agent", "start", "--host", "127.0.0.1")["peer"]
    pk(a, "agent", "start")  # already running
    assert pk(a, "vaults", "list") == []
    assert pk(a, "nodes", "list") == []
    assert pk(a, "nodes", "connections") == []

    # vaults and secrets
    pk(a, "vaults", "create", "app")
    assert [v["name"] for v in pk(a, "vaults", "list")] == ["app"]
    assert pk(a, "secrets", "ls", "app") == []
    assert [v["name"] for v in pk(a, "secrets", "ls")] == ["app"]  # no vault: the vaults
    pk(a, "secrets", "set", "app:db/password", input=b"s3cret")
    pk(a, "secrets", "write", "app:note", input=b"first")
    assert pk(a, "secrets", "get", "app:db/password")["value"] == "s3cret"
    assert pk(a, "secrets", "cat", "app:note")["value"] == "first"
    pk(a, "secrets", "mkdir", "app:dir")
    pk(a, "secrets", "cp", "app:db/password", "app:dir")
    pk(a, "secrets", "mv", "app:note", "app:dir/note")
    assert len(pk(a, "secrets", "ls", "-r", "app")) >= 4
    pk(a, "secrets", "stat", "app:db/password")
    first = pk(a, "secrets", "history", "app:db/password")[-1]["commit"]
    pk(a, "secrets", "set", "app:db/password", input=b"changed")
    pk(a, "secrets", "revert", "app:db/password", first)
    pk(a, "secrets", "generate", "app:api/key", "--length", "20")
    pk(a, "secrets", "generate", "app:api/other", "--reveal")
    edit = "sh -c 'printf edited > \"$0\"'"
    editor = base_env(VISUAL=edit, EDITOR=edit)
    assert pk(a, "secrets", "edit", "app:dir/note", env=editor)["changed"] is True
    assert pk(a, "secrets", "env", "app:db/password=DB") == {"DB": "s3cret"}
    dotenv = tmp_path / "import.env"
    dotenv.write_text("HOST=db.internal\nPORT=5432\n")
    assert pk(a, "secrets", "import", "app:imported", dotenv)["count"] == 2
    assert pk(a, "secrets", "export", "app:imported") == {"HOST": "db.internal", "PORT": "5432"}
    template = tmp_path / "template"
    template.write_text("password={{ pk://app/db/password }}\n")
    assert pk(a, "inject", "-i", template) == {"references": 1, "value": "password=s3cret\n"}
    pk(a, "inject", "-i", template, "-o", tmp_path / "rendered")
    pk(a, "secrets", "rm", "-r", "app:dir")
    log = pk(a, "vaults", "log", "app")
    pk(a, "vaults", "version", "app", log[-1]["commit"])
    pk(a, "vaults", "members", "app")
    pk(a, "vaults", "verify", "app")
    pk(a, "vaults", "reset", "app", "--to", log[0]["commit"], "--yes")
    pk(a, "vaults", "rename", "app", "apps")
    pk(a, "vaults", "create", "scratch")
    pk(a, "vaults", "delete", "scratch")

    # other keynodes
    b = bootstrap_node(tmp_path, "b", "b's password, long")
    b_peer = pk(b, "agent", "start", "--host", "127.0.0.1")["peer"]
    pk(a, "nodes", "add", b.node_id, f"{b_peer['host']}:{b_peer['port']}")
    pk(a, "nodes", "find", b.node_id)
    pk(a, "nodes", "ping", b.node_id)
    assert b.node_id in {row["node_id"] for row in pk(a, "nodes", "list")}
    assert b.node_id in {row["peer"] for row in pk(a, "nodes", "connections")}

    # sharing and sync (docs/sync.md)
    pk(b, "nodes", "add", a.node_id, f"{a_peer['host']}:{a_peer['port']}")
    assert pk(b, "nodes", "trusted") == []
    pk(b, "nodes", "trust", a.node_id)
    assert [t["nodeId"] for t in pk(b, "nodes", "trusted")] == [a.node_id]
    assert pk(a, "vaults", "share", "apps", b.node_id, "--role", "writer")["invite"] == "sent"
    assert [i["name"] for i in pk(b, "vaults", "invites")["received"]] == ["apps"]
    assert [v["name"] for v in pk(b, "vaults", "scan", a.node_id)] == ["apps"]
    pk(b, "vaults", "clone", "apps", a.node_id)
    pk(a, "secrets", "set", "apps:synced", input=b"x")
    pk(b, "vaults", "pull", "apps", a.node_id)
    pk(b, "vaults", "push", "apps", a.node_id)
    pk(b, "vaults", "sync", "apps")
    assert [v["name"] for v in pk(b, "vaults", "status", "apps")] == ["apps"]
    assert pk(a, "vaults", "unshare", "apps", b.node_id)["rotate"]
    assert pk(b, "nodes", "untrust", a.node_id)["removed"] is True

    # a failure prints nothing on stdout, one line on stderr
    failed = run_pk("secrets", "get", "apps:nope", "--node-path", a.path, "--format", "json")
    assert (failed.code, failed.out) == (81, b"") and failed.err.count("\n") == 1, failed

    pk(a, "agent", "lock", password=False)
    pk(a, "agent", "unlock")
    pk(a, "agent", "stop", password=False)

    # a local cluster of real nodes
    cluster = ("--dir", tmp_path / "cluster")
    pk(a, "cluster", "up", "--nodes", "2", *cluster, password=False)
    pk(a, "cluster", "status", *cluster, password=False)
    pk(a, "cluster", "env", "1", *cluster, password=False)
    pk(a, "cluster", "pause", "1", *cluster, password=False)
    pk(a, "cluster", "resume", "1", *cluster, password=False)
    pk(a, "cluster", "kill", "1", *cluster, password=False)
    pk(a, "cluster", "restart", "1", *cluster, password=False)
    pk(a, "cluster", "down", *cluster, password=False)

    missed = sorted(set(SHAPES) - NETNS_ONLY - pk.checked)
    assert not missed, f"add a --format json run of these commands to this test: {missed}"
