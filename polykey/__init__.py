"""Polykey: a peer-to-peer secret manager for humans and machines.

Importing this package is cheap on purpose (the ``pk`` fast path and
``polykey.Client`` must not pull in crypto, git or asyncio).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "Client"]

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is not free
if TYPE_CHECKING:
    from typing import Any

    from polykey.client import Client


def __getattr__(name: str) -> Any:
    # ``polykey.Client`` is imported on first use, so ``import polykey`` stays cheap.
    if name == "Client":
        from polykey.client import Client

        return Client
    raise AttributeError(f"module 'polykey' has no attribute {name!r}")
