"""The agent core: the daemon's main object, its socket server, request registry and lifecycle.

Feature plug-ins live beside it: ``keynode.methods`` (agent methods, one module per domain)
and ``keynode.peers`` (peer network supervision, transport, discovery). See
``docs/architecture.md`` for the picture.
"""
