"""The agent protocol codec, sans-I/O (docs/spec/agent-protocol.md).

Bytes in, records out, and back; no sockets, no asyncio, no files. Both the
agent (keynode) and the clients (``pk``, :class:`polykey.Client`) drive it.
It stays cheap to import, because the ``pk`` fast path loads it on every call
(docs/performance.md "Fast path"): its JSON is :mod:`polykey.agent_client.strict_json` (the C
accelerator ``_json``, without the ``json`` package, which pulls in ``re`` and ``enum``), its
header is ``int.to_bytes`` rather than ``struct``, ``typing`` is for the type checker
only, and ``polykey.errors`` is loaded only when something is malformed.

Frame (spec section 2): a 4-byte big-endian unsigned length ``N`` then ``N``
bytes of UTF-8 JSON, one object. ``2 <= N <= MAX_FRAME``.
"""

from __future__ import annotations

import binascii

from polykey.agent_client import is_error, strict_json

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from polykey.errors import AgentProtocolError
else:
    from polykey.agent_client import LazyError

    AgentProtocolError = LazyError("AgentProtocolError")

VERSION = 1
#: Largest frame body either side accepts (spec section 2). A secret value travels base64-encoded,
#: so the largest secret (16 MiB, polykey.vaults.format.MAX_SECRET_BYTES) fits with room to spare.
MAX_FRAME = 24 * 1024 * 1024
MAX_ID = 2**53 - 1
MAX_METHOD = 64
#: Deepest nesting of JSON arrays and objects a frame may hold (spec section 2).
MAX_DEPTH = 32
_METHOD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
_BYTES_KEY = "$b"


class AgentRequest:
    """A request from a client (spec section 3). Immutable.

    A slotted class rather than a dataclass or NamedTuple: this module is on the ``pk`` fast
    path, where creating those classes at import time costs milliseconds.
    """

    __slots__ = ("id", "method", "params")
    id: int
    method: str
    params: dict[str, Any]

    def __init__(self, id: int, method: str, params: dict[str, Any]) -> None:  # noqa: A002
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", params)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("AgentRequest is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentRequest) and (self.id, self.method, self.params) == (other.id, other.method, other.params)

    def __repr__(self) -> str:
        return f"AgentRequest(id={self.id}, method={self.method!r})"  # params may hold a secret

    __hash__ = None  # type: ignore[assignment]


class AgentResponse:
    """One message from the agent about request ``id`` (spec section 4). Immutable.

    ``kind`` is ``"result"`` or ``"error"`` (final) or ``"progress"`` (zero or more before the
    final one). ``id`` is ``None`` only for a connection-level error sent just before closing.
    """

    __slots__ = ("id", "kind", "body")
    id: int | None
    kind: str
    body: Any

    def __init__(self, id: int | None, kind: str, body: Any) -> None:  # noqa: A002
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "body", body)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("AgentResponse is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentResponse) and (self.id, self.kind, self.body) == (other.id, other.kind, other.body)

    def __repr__(self) -> str:
        return f"AgentResponse(id={self.id}, kind={self.kind!r})"  # the body may hold a secret

    __hash__ = None  # type: ignore[assignment]

    @property
    def final(self) -> bool:
        return self.kind != "progress"


# -- frames --------------------------------------------------------------------------


class _Header:
    """The 4-byte big-endian frame header (``struct.Struct(">I")``'s ``size``/``pack``/``unpack``)."""

    size = 4

    @staticmethod
    def pack(n: int) -> bytes:
        return n.to_bytes(4, "big")

    @staticmethod
    def unpack(header: bytes) -> tuple[int]:
        if len(header) != 4:
            raise AgentProtocolError("a frame header has 4 bytes")
        return (int.from_bytes(header, "big"),)


HEADER = _Header()


def encode_frame(obj: dict[str, Any]) -> bytes:
    """Serialise one message as a frame; AgentProtocolError if it exceeds MAX_FRAME."""
    body = strict_json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise AgentProtocolError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte header, checked against the limits."""
    (n,) = HEADER.unpack(header)
    if n > MAX_FRAME:
        raise AgentProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    if n < 2:
        raise AgentProtocolError("frame too short to hold a JSON object")
    return int(n)


class AgentFrameDecoder:
    """Incremental frame splitter: feed bytes, get complete frame bodies (spec section 2). Both
    ends drive it: the agent's socket server and the client.

    Raises AgentProtocolError on an oversized or undersized header; after an error the decoder
    must be discarded (the connection is closed). A reader that must not read past one frame
    (the server, which charges a frame's announced length to its budget before reading the body)
    reads at most :attr:`wanted` bytes at a time and checks :attr:`announced` after each feed.
    A body is handed over as the decoder's own buffer when it holds just that frame (no copy of
    a large frame); the caller may clear it once used.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._need: int | None = None
        self._max = max_frame

    def feed(self, data: bytes | bytearray) -> list[bytearray]:
        self._buf += data
        out: list[bytearray] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER.size:
                    return out
                n = frame_length(bytes(self._buf[: HEADER.size]))
                if n > self._max:
                    raise AgentProtocolError(f"frame of {n} bytes exceeds the {self._max}-byte limit")
                self._need = n
                del self._buf[: HEADER.size]
            if len(self._buf) < self._need:
                return out
            if len(self._buf) == self._need:
                out.append(self._buf)
                self._buf = bytearray()
            else:
                out.append(self._buf[: self._need])
                del self._buf[: self._need]
            self._need = None

    @property
    def announced(self) -> int | None:
        """The body length announced by the header of the frame in progress (None between frames)."""
        return self._need

    @property
    def wanted(self) -> int:
        """Bytes that complete the header, or the body of the frame in progress."""
        if self._need is None:
            return HEADER.size - len(self._buf)
        return self._need - len(self._buf)

    def clear(self) -> None:
        """Drop what is buffered (the connection is done)."""
        self._buf.clear()
        self._need = None

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame (non-zero at EOF means truncation)."""
        return len(self._buf) + (HEADER.size if self._need is not None else 0)


# -- strict JSON ------------------------------------------------------------------------


def loads_object(body: bytes | bytearray, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Strictly parse one frame body (spec section 2): :func:`polykey.agent_client.strict_json.loads`, one object."""
    obj = strict_json.loads(body, max_depth=max_depth, error=AgentProtocolError, what="frame")
    if not isinstance(obj, dict):
        raise AgentProtocolError("frame must hold a JSON object")
    return obj


# -- bytes inside JSON (spec section 5) ---------------------------------------------------


def _may_hold_bytes(body: bytes | bytearray) -> bool:
    """False when no object in ``body`` can have the key ``$b``: it appears neither literally nor
    through a ``\\u`` escape. Walking a big answer (a listing) for bytes objects costs more than
    parsing it."""
    return b'"$b"' in body or b"\\u" in body


def wrap_bytes(value: Any) -> Any:
    """Replace every ``bytes`` inside a JSON-able value by ``{"$b": base64}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_KEY: binascii.b2a_base64(bytes(value), newline=False).decode("ascii")}
    if isinstance(value, dict):
        return {k: wrap_bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [wrap_bytes(v) for v in value]
    return value


def unwrap_bytes(value: Any) -> Any:
    """Inverse of :func:`wrap_bytes`; a malformed ``$b`` object is an AgentProtocolError."""
    if isinstance(value, dict):
        if _BYTES_KEY in value:
            encoded = value[_BYTES_KEY]
            if len(value) != 1 or not isinstance(encoded, str):
                raise AgentProtocolError("malformed bytes object")
            try:
                raw = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
            except (binascii.Error, UnicodeEncodeError):
                raise AgentProtocolError("malformed base64 in bytes object") from None
            if binascii.b2a_base64(raw, newline=False).decode("ascii") != encoded:
                raise AgentProtocolError("non-canonical base64 in bytes object")
            return raw
        return {k: unwrap_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_bytes(v) for v in value]
    return value


# -- requests (spec section 3) -----------------------------------------------------------


def _brief(value: Any) -> str:
    """A peer-supplied value quoted in an error (and so in the agent's log): at most ~40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_id(value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_ID:
        raise AgentProtocolError("request id must be an integer in 1..2^53-1")
    return value


def encode_request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    return encode_frame(
        {"v": VERSION, "id": _check_id(request_id), "method": method, "params": wrap_bytes(params or {})}
    )


def decode_request(body: bytes | bytearray) -> AgentRequest:
    """Parse a request body; AgentProtocolError names what is malformed."""
    obj = loads_object(body)
    if set(obj) != {"v", "id", "method", "params"}:
        raise AgentProtocolError("a request has exactly the keys v, id, method, params")
    if obj["v"] != VERSION or type(obj["v"]) is not int:
        raise AgentProtocolError(f"unsupported protocol version {_brief(obj['v'])} (this agent speaks {VERSION})")
    method = obj["method"]
    if (
        not isinstance(method, str)
        or not 0 < len(method) <= MAX_METHOD
        or not set(method) <= _METHOD_CHARS
    ):
        raise AgentProtocolError("malformed method name")
    params = obj["params"]
    if not isinstance(params, dict):
        raise AgentProtocolError("params must be an object")
    return AgentRequest(_check_id(obj["id"]), method, unwrap_bytes(params) if _may_hold_bytes(body) else params)


# -- responses (spec section 4) -----------------------------------------------------------


def encode_result(request_id: int, result: Any) -> bytes:
    return encode_frame({"id": request_id, "result": wrap_bytes(result)})


def encode_progress(request_id: int, progress: Any) -> bytes:
    return encode_frame({"id": request_id, "progress": wrap_bytes(progress)})


def encode_error(request_id: int | None, error: dict[str, Any]) -> bytes:
    return encode_frame({"id": request_id, "error": wrap_bytes(error)})


def decode_response(body: bytes | bytearray) -> AgentResponse:
    obj = loads_object(body)
    if len(obj) != 2 or "id" not in obj:
        raise AgentProtocolError("a response has exactly the keys id and one of result, progress, error")
    request_id = obj["id"]
    if request_id is not None:
        _check_id(request_id)
    kind = next(k for k in obj if k != "id")
    if kind not in ("result", "progress", "error"):
        raise AgentProtocolError(f"unknown response kind {_brief(kind)}")
    if request_id is None and kind != "error":
        raise AgentProtocolError("only an error may have a null id")
    body_value = unwrap_bytes(obj[kind]) if _may_hold_bytes(body) else obj[kind]
    if kind == "error" and not (
        isinstance(body_value, dict)
        and isinstance(body_value.get("type"), str)
        and isinstance(body_value.get("message"), str)
    ):
        raise AgentProtocolError("malformed error object")
    return AgentResponse(request_id, kind, body_value)


# -- compact listings (spec section 6, ``secrets.list`` with ``compact``) ---------------------

#: The error of an agent that predates ``compact`` (its parameter check names the unknown ones).
_NO_COMPACT = "unknown parameter(s) compact"


def encode_listing(rows: list[dict[str, Any]]) -> Any:
    """``secrets.list`` rows ``[{"path", "name", "type"}]`` as ``{"paths": TEXT}``: each path, a
    directory's followed by ``/``, joined by newlines. One JSON string encodes and decodes some
    twenty times faster than the objects. The rows themselves if a path holds a newline (no valid
    path does): the text would be ambiguous, and clients accept either answer."""
    text = "\n".join([r["path"] + "/" if r["type"] == "dir" else r["path"] for r in rows])
    if text.count("\n") != max(len(rows) - 1, 0):
        return rows
    return {"paths": text}


def listing_lines(result: Any) -> list[str] | None:
    """The lines of a compact listing (``[]`` when empty), or None for an answer in rows;
    AgentProtocolError if it is neither."""
    if isinstance(result, list):
        return None
    text = result.get("paths") if isinstance(result, dict) and len(result) == 1 else None
    if not isinstance(text, str):
        raise AgentProtocolError("malformed compact listing")
    if not text:
        return []
    if text.startswith(("\n", "/")) or text.endswith("\n") or "\n\n" in text or "//" in text or "\n/" in text:
        raise AgentProtocolError("malformed compact listing")
    return text.split("\n")


def listing_rows(result: Any) -> list[dict[str, Any]]:
    """A ``secrets.list`` answer in either form as rows ``[{"path", "name", "type"}]``."""
    lines = listing_lines(result)
    if lines is None:
        rows: list[dict[str, Any]] = result
        return rows
    return [
        {"path": line[:-1], "name": line[:-1].rpartition("/")[2], "type": "dir"} if line[-1] == "/"
        else {"path": line, "name": line.rpartition("/")[2], "type": "secret"}
        for line in lines
    ]


def call_listing(call: Callable[[str, dict[str, Any]], Any], params: dict[str, Any]) -> Any:
    """``call("secrets.list", params)`` asking for the compact answer; an agent that predates it
    (it refuses the parameter, and read nothing else) is asked again without it."""
    try:
        return call("secrets.list", {**params, "compact": True})
    except Exception as e:
        if not (is_error(e, "InvalidInputError") and str(e).endswith(_NO_COMPACT)):
            raise
    return call("secrets.list", params)
