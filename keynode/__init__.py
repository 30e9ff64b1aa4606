"""keynode: the Polykey daemon (agent socket, peer transport, discovery, sync)."""

from polykey import __version__

__all__ = ["__version__"]
