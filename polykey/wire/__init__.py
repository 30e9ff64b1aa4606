"""Sans-I/O wire and record formats (no asyncio, sockets or file I/O in here).

Each module turns bytes into frozen dataclasses and back, strictly and with size
limits (STYLE.md rules 2 and 9); the I/O shells live in ``keynode``.
"""
