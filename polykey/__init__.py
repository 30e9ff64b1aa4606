"""Polykey: a peer-to-peer secret manager for humans and machines.

Importing this package is cheap on purpose (the ``pk`` fast path and
``polykey.Client`` must not pull in crypto, git or asyncio).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
