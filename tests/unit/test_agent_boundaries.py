"""The client side of the agent stays light: only the standard library (read with `ast`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .test_architecture import ROOT, imports_of, rel

LIGHT = sorted(
    [*(ROOT / "polykey" / "agent_client").glob("*.py")]
    + [ROOT / "polykey" / p for p in ("__init__.py", "client.py")]
    + sorted((ROOT / "polykey" / "errors").glob("*.py"))
    + [ROOT / "polykey" / "cli" / p for p in ("__init__.py", "fast.py", "hot.py", "hot_env.py", "errors.py", "confirm.py")]
)
ALLOWED_POLYKEY = {"polykey", "polykey.errors", "polykey.client", "polykey.client.Client", "polykey.cli",
                   "polykey.fsutil"}
#: The one designed exit from the light path: `main` hands what the fast path declines to click.
FALLBACK = {"polykey/cli/__init__.py": {"polykey.cli.app", "polykey.cli.app.run"}}


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "polykey":
        return module in ALLOWED_POLYKEY or module.startswith(("polykey.agent_client", "polykey.cli.hot", "polykey.cli.errors",
                                                                "polykey.cli.fast", "polykey.cli.confirm",
                                                                "polykey.errors."))
    return top in sys.stdlib_module_names and top != "asyncio"


@pytest.mark.parametrize("path", LIGHT, ids=rel)
def test_light_module_imports(path: Path) -> None:
    bad = sorted(m for m in imports_of(path) if not allowed(m) and m not in FALLBACK.get(rel(path), set()))
    assert not bad, f"{rel(path)} imports {bad}"
