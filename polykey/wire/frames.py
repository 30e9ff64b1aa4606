"""Length-prefixed frames (docs/spec/transport.md section 2), sans-I/O.

A frame on the wire is ``length (u16, big-endian) || body`` with ``min_size <= length <=
max_size`` (the Noise framing: a body is one Noise message, at most 65535 bytes).
:class:`NoiseFrameDecoder` is fed whatever bytes arrived (``add_and_parse``, as in
magic-wormhole's framer) and returns the complete bodies; a length outside the bounds
raises :class:`ProtocolViolationError` as soon as the two length bytes are seen, so an
oversized frame is refused before any of it is buffered.
"""

from __future__ import annotations

from polykey.errors import ProtocolViolationError

HEADER = 2
MAX_FRAME = 65535


def encode_frame(body: bytes) -> bytes:
    """``len(body) (u16 BE) || body``."""
    if not 0 < len(body) <= MAX_FRAME:
        raise ValueError("frame body must be 1..65535 bytes")
    return len(body).to_bytes(HEADER, "big") + body


class NoiseFrameDecoder:
    """Reassemble frames from arbitrary chunks of a byte stream."""

    __slots__ = ("_buf", "min_size", "max_size")

    def __init__(self, *, min_size: int = 1, max_size: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.set_limits(min_size=min_size, max_size=max_size)

    def set_limits(self, *, min_size: int, max_size: int) -> None:
        if not 1 <= min_size <= max_size <= MAX_FRAME:
            raise ValueError("frame limits out of range")
        self.min_size = min_size
        self.max_size = max_size

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame (non-zero means mid-frame)."""
        return len(self._buf)

    def add_and_parse(self, data: bytes, limit: int | None = None) -> list[bytes]:
        """Add ``data``; return every complete frame body, in order (at most ``limit`` of them).

        With a ``limit``, the remaining frames stay buffered: call again with ``b""``.
        """
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= HEADER and (limit is None or len(out) < limit):
            n = self._length(buf[pos], buf[pos + 1])
            if end - pos - HEADER < n:
                break
            out.append(bytes(buf[pos + HEADER : pos + HEADER + n]))
            pos += HEADER + n
        if pos:
            del buf[:pos]
        return out

    def add_and_parse_views(self, data: bytes) -> list[memoryview]:
        """Like :meth:`add_and_parse` (no ``limit``), copying nothing it need not: the frames
        wholly inside ``data`` come back as views of it, only a frame cut by the end of a
        read is buffered. ``data`` must not change while the views are in use."""
        out: list[memoryview] = []
        view = memoryview(data)
        end = len(view)
        pos = 0
        buf = self._buf
        while buf:  # first finish what is buffered, taking from data only what it lacks
            want = HEADER + self._length(buf[0], buf[1]) if len(buf) >= HEADER else HEADER
            if len(buf) < want:
                take = min(want - len(buf), end - pos)
                if not take:
                    return out
                buf += view[pos : pos + take]
                pos += take
            elif len(buf) == want:
                out.append(memoryview(buf)[HEADER:])
                self._buf = buf = bytearray()  # the view keeps the old buffer alive
            else:  # several frames left buffered by a parse with a limit
                out.append(memoryview(buf[HEADER:want]))  # a copy: buf changes next
                del buf[:want]
        while end - pos >= HEADER:
            n = self._length(view[pos], view[pos + 1])
            if end - pos - HEADER < n:
                break
            out.append(view[pos + HEADER : pos + HEADER + n])
            pos += HEADER + n
        if pos < end:
            buf += view[pos:]
        return out

    def _length(self, hi: int, lo: int) -> int:
        n = (hi << 8) | lo
        if n < self.min_size or n > self.max_size:
            self._buf = bytearray()
            raise ProtocolViolationError(f"frame length {n} outside {self.min_size}..{self.max_size}")
        return n
