"""pyproject.toml uses the metadata forms current setuptools takes without a deprecation warning
(issue 8 item 21): `license` as an SPDX expression string, which needs setuptools >= 77."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_string_and_the_build_asks_for_a_setuptools_that_reads_it() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"
    requires = [r for r in data["build-system"]["requires"] if re.match(r"setuptools\b", r)]
    assert len(requires) == 1
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requires[0].replace(" ", ""))
    assert m and int(m.group(1)) >= 77, requires[0]
