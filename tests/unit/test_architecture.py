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


#: Names of calls that do file I/O: the builtin ``open`` and the ``pathlib.Path`` file methods.
FILE_CALLS = frozenset({"open", "read_bytes", "read_text", "write_bytes", "write_text"})


def file_calls_of(path: Path) -> set[str]:
    """Every call in the file named like a file operation: ``open(...)``, ``x.open(...)``,
    ``p.read_bytes()``, ... (``ast`` sees names, not types: a codec simply has none of these)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in FILE_CALLS:
                found.add(f"{name}() at line {node.lineno}")
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def top(name: str) -> str:
    return name.split(".")[0]


def is_dht_module(r: str) -> bool:
    return r == "keynode/peers/dht.py" or r.startswith("keynode/peers/dht/")


#: The codecs: bytes in, values or events out (STYLE.md rule 2). The I/O shell drives them.
SANS_IO = ("polykey/wire/", "polykey/agent_client/protocol.py", "polykey/agent_client/strict_json.py",
           "polykey/vaults/format.py", "polykey/keys/keyfile.py", "polykey/crypto/sshsig.py")
#: What a codec must not import: event loops, sockets, the foreign adapters, and the modules that
#: reach the file system or processes.
IO_MODULES = frozenset({"asyncio", "socket", "selectors", "ssl", "pygit2", "kademlia", "rpcudp", "click", "os", "io",
                        "pathlib", "shutil", "tempfile", "subprocess", "fcntl", "posix", "mmap", "keynode"})


def is_codec(r: str) -> bool:
    return r.startswith(SANS_IO)


def is_io_import(m: str) -> bool:
    return top(m) in IO_MODULES or m == "polykey.fsutil" or m.startswith("polykey.fsutil.")


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
    ("sans-I/O codecs import no I/O library (no event loop, socket, file system or process)", is_codec, is_io_import),
    (
        "the crypto primitives module only inside polykey/crypto",
        lambda r: not r.startswith("polykey/crypto/"),
        lambda m: m.startswith("polykey.crypto._primitives"),
    ),
]


def test_sources_found() -> None:
    assert any(rel(p) == "polykey/crypto/_primitives.py" for p in SOURCES)
    for codec in SANS_IO:  # every codec the rule names exists: a rename cannot silently empty it
        assert any(rel(p).startswith(codec) for p in SOURCES), codec


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


def test_codecs_open_no_file() -> None:
    violations = [f"{rel(p)} calls {c}" for p in SOURCES if is_codec(rel(p)) for c in sorted(file_calls_of(p))]
    assert not violations, "sans-I/O codecs open no file:\n" + "\n".join(violations)


def test_sans_io_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "codec.py"
    bad.write_text(
        "from pathlib import Path\nfrom polykey import fsutil\n\n"
        "def decode(p):\n    import os.path\n    with open(p, 'rb') as f:\n        return f.read() + Path(p).read_bytes()\n"
    )
    imported = {m for m in imports_of(bad) if is_io_import(m)}
    assert {"pathlib", "polykey.fsutil", "os.path"} <= imported
    assert file_calls_of(bad) == {"open() at line 6", "read_bytes() at line 7"}
    assert is_codec("polykey/vaults/format.py") and is_codec("polykey/wire/frames.py")
    assert not is_codec("polykey/vaults/vault.py") and not is_io_import("polykey.crypto")
