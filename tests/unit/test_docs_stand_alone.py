"""The README and docs/ stand alone in a fresh clone (issue 8 item 20, docs/CONTRIBUTING.md):
no link to files outside the repository (the team's design notes beside it), no path of a
particular machine, no install into the system Python."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = [
    (re.compile(r"\.\./shared"), "a link outside the repository (../shared)"),
    (re.compile(r"shared/(DESIGN|STYLE|vectors)"), "the team's notes outside the repository"),
    (re.compile(r"\b(DESIGN|STYLE)\.md\b"), "a file that is not in the repository (use docs/design.md, docs/CONTRIBUTING.md)"),
    (re.compile(r"(?<![\w.])/work/"), "an absolute path of a build machine"),
    (re.compile(r"system python", re.I), "an install into the system Python (use .venv)"),
]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_docs_exist() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    assert {"README.md", "docs/design.md", "docs/architecture.md", "docs/CONTRIBUTING.md"} <= names


def test_readme_and_docs_point_nowhere_outside_the_repository() -> None:
    found = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, why in FORBIDDEN:
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {why}: {line.strip()}")
    assert not found, "\n".join(found)
