"""Talking to the node's agent (the keynode daemon) over its Unix socket.

Everything in this package imports only the standard library (plus
:mod:`polykey.errors`), so the ``pk`` fast path and :class:`polykey.Client`
stay cheap: no click, asyncio, pygit2, nacl or cryptography here.
"""
