"""Import boundaries (docs/design.md section 1, house style rules 2-4 in docs/CONTRIBUTING.md), read with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for pkg in ("polykey", "keynode") for p in (ROOT / pkg).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Every absolute module name imported anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def top(name: str) -> str:
    return name.split(".")[0]


def is_dht_module(r: str) -> bool:
    return r == "keynode/peers/dht.py" or r.startswith("keynode/peers/dht/")


# (description, which files the rule applies to, forbidden import predicate)
RULES = [
    ("polykey never imports keynode", lambda r: r.startswith("polykey/"), lambda m: top(m) == "keynode"),
    ("click only in polykey/cli", lambda r: not r.startswith("polykey/cli/"), lambda m: top(m) == "click"),
    ("pygit2 only in polykey/vaults", lambda r: not r.startswith("polykey/vaults/"), lambda m: top(m) == "pygit2"),
    ("kademlia/rpcudp only in the DHT module", lambda r: not is_dht_module(r), lambda m: top(m) in ("kademlia", "rpcudp")),
    (
        "cryptography/nacl only in polykey/crypto/_primitives.py",
        lambda r: r != "polykey/crypto/_primitives.py",
        lambda m: top(m) in ("cryptography", "nacl"),
    ),
    ("keynode does not import the CLI", lambda r: r.startswith("keynode/"), lambda m: m.startswith("polykey.cli")),
    (
        "sans-I/O wire formats import no I/O library",
        lambda r: r.startswith("polykey/wire/"),
        lambda m: top(m) in ("asyncio", "socket", "pygit2", "kademlia", "click", "selectors"),
    ),
]


def test_sources_found() -> None:
    assert any(rel(p) == "polykey/crypto/_primitives.py" for p in SOURCES)


@pytest.mark.parametrize("description,applies,forbidden", RULES, ids=[r[0] for r in RULES])
def test_import_rule(description: str, applies, forbidden) -> None:  # type: ignore[no-untyped-def]
    violations = [
        f"{rel(p)} imports {m}" for p in SOURCES if applies(rel(p)) for m in sorted(imports_of(p)) if forbidden(m)
    ]
    assert not violations, f"{description}:\n" + "\n".join(violations)


def test_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import keynode.agent\n    from cryptography.hazmat import x\n")
    found = imports_of(bad)
    assert "keynode.agent" in found and "cryptography.hazmat" in found
