"""A sans-I/O reader for the websocket frames a *server* sends (RFC 6455).

websocket-client's ``recv()`` costs more per frame than leap-sync's throughput target
allows, so the client reads server frames itself, in batches, from the bytes its
transport received. :class:`FrameReader` turns a byte stream into complete messages:
it reassembles fragments, lets control frames interleave, and bounds every length it
reads. Server frames are unmasked; a masked one, reserved bits or an unknown opcode
are protocol errors. Frames a client sends are built by websocket-client; the
``unmasked_*`` functions build the frames a server sends (the embedded server's).
"""

from __future__ import annotations

from ..errors import LeapProtocolError

__all__ = [
    "MAX_FRAGMENTS",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameReader",
    "WebSocketProtocolError",
    "close_code_allowed",
    "close_payload",
    "parse_close_payload",
    "unmasked_frame",
    "unmasked_frame_header",
    "unmasked_message",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
MAX_FRAGMENTS = 65_536
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""Default bound, in bytes, on one message (after per-message inflation, where a protocol
has it)."""
"""Most frames one fragmented message may span: fragments are bounded in count as well
as in bytes, so a stream of empty continuation frames cannot run forever."""


class WebSocketProtocolError(LeapProtocolError):
    """The server broke the websocket framing rules. ``close_code`` is the websocket
    code to close with (1002 protocol error, 1007 a text message that is not UTF-8,
    1009 message too big)."""

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message, close_code=close_code)


def close_code_allowed(code: int) -> bool:
    """Whether a close frame may carry ``code`` (RFC 6455 section 7.4): 1000-1003 and
    1007-1011 (section 7.4.1), 1012-1014 (registered with IANA since), and 3000-4999
    (libraries, frameworks and applications). Never 0-999, 1004 (reserved), 1005 and
    1006 (stand for "no code" and "no close frame", never sent), 1015 (a TLS failure,
    never sent), 1016-2999 (reserved for the RFC's extensions) or 5000 and above."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """``(code, reason)`` from a close frame's payload; ``(None, "")`` when empty.

    Raises :class:`WebSocketProtocolError` (close code 1002) for a payload of one byte,
    a code no close frame may carry (:func:`close_code_allowed`) or a reason that is
    not UTF-8 (RFC 6455 section 5.5.1; the Autobahn test suite's cases 7.3.2, 7.5.1,
    7.9.x and 7.13.x)."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WebSocketProtocolError("close frame payload of one byte")
    code = payload[0] << 8 | payload[1]
    if not close_code_allowed(code):
        raise WebSocketProtocolError(f"close code {code} is not one a close frame may carry")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(f"close frame (code {code}) with a reason that is not UTF-8") from None
    return code, reason


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame we send: ``code`` (1000 instead when it is not one
    a close frame may carry: 1005, 1006 and 1015 never travel) and ``reason`` cut to
    the 123 bytes that fit, at a character boundary (it stays UTF-8)."""
    if not close_code_allowed(code):
        code = 1000
    data = reason.encode("utf-8", errors="replace")
    if len(data) > 123:
        data = data[:123].decode("utf-8", errors="ignore").encode("utf-8")
    return code.to_bytes(2, "big") + data


def unmasked_frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The header of an unmasked frame, as a server sends it."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def unmasked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it (what :class:`FrameReader` reads)."""
    return unmasked_frame_header(opcode, len(payload), fin) + payload


def unmasked_message(payload: str | bytes) -> bytes:
    """A whole message in one server frame: text for ``str``, binary for ``bytes``."""
    if isinstance(payload, str):
        return unmasked_frame(OP_TEXT, payload.encode("utf-8"))
    return unmasked_frame(OP_BINARY, payload)


def _check_text(payload: bytes) -> None:
    """Raise :class:`WebSocketProtocolError` with 1007 unless ``payload`` (a text
    message) is UTF-8 (RFC 6455 section 8.1)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"text message that is not UTF-8 ({exc.reason} at byte {exc.start})"
        raise WebSocketProtocolError(reason, 1007) from None


class FrameReader:
    """Parses the server's frame stream into messages.

    :meth:`feed` takes the bytes read from the socket and returns the data messages
    they completed, as ``(payload, binary)`` pairs in order. Control frames go
    elsewhere: pings to :attr:`pings` (the transport answers each with a pong), and a
    close frame sets :attr:`close` (``(code, reason)``, checked by
    :func:`parse_close_payload`), after which nothing more is parsed. A text message
    must be UTF-8 (1007 otherwise, checked once it is whole; ASCII costs one
    ``isascii()``). ``max_size`` bounds one message (all fragments together) and
    :data:`MAX_FRAGMENTS` the frames it spans; a longer one raises
    :class:`WebSocketProtocolError` with close code 1009 before its payload is read.
    A framing error is raised, but not at the expense of the messages completed before
    it in the same :meth:`feed`: those are returned, the error is kept in
    :attr:`error` and raised by the next call. Only complete frames are ever copied,
    and a partial frame waits without re-scanning, so a large message costs linear
    time however it is split.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_fragment_binary",
        "_fragment_count",
        "_fragment_size",
        "_fragments",
        "_need",
        "close",
        "error",
        "max_size",
        "pings",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self.pings: list[bytes] = []
        self.close: tuple[int | None, str] | None = None
        self.error: WebSocketProtocolError | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._need = 2  # bytes needed before parsing can make progress
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0
        self._fragment_count = 0
        self._fragment_binary = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return self._buffered

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Add received bytes; return the data messages now complete."""
        if self.error is not None:
            raise self.error
        if self.close is not None or not data:
            return []
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = data
            if len(buf) < self._need:
                self._chunks.append(buf)
                self._buffered = len(buf)
                return []
        out: list[tuple[bytes, bool]] = []
        try:
            pos = self._parse(buf, out)
        except WebSocketProtocolError as exc:
            self.error = exc
            self._chunks = []
            self._buffered = 0
            if out:
                return out
            raise
        if pos < len(buf):
            rest = buf[pos:]
            self._chunks.append(rest)
            self._buffered = len(rest)
        else:
            self._buffered = 0
        return out

    def _parse(self, buf: bytes, out: list[tuple[bytes, bool]]) -> int:
        n = len(buf)
        pos = 0
        max_size = self.max_size
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            # The common case first: a whole, final, unmasked text or binary frame with a
            # 7- or 16-bit length, outside a fragmented message (every check below holds
            # for it). Anything else, or a frame not complete yet, takes the full path.
            if (b0 == 0x81 or b0 == 0x82) and b1 <= 126 and self._fragments is None:
                if b1 < 126:
                    start = pos + 2
                    end = start + b1
                else:
                    start = pos + 4
                    end = start + (buf[pos + 2] << 8 | buf[pos + 3]) if start <= n else n + 1
                if end <= n and end - start <= max_size:
                    payload = buf[start:end]
                    if b0 == 0x81 and not payload.isascii():
                        _check_text(payload)  # 1007 unless UTF-8, as on the full path
                    out.append((payload, b0 == 0x82))
                    pos = end
                    continue
            length = b1 & 0x7F
            start = pos + 2
            if length >= 126:
                if length == 126:
                    start = pos + 4
                    if start > n:
                        self._need = 4
                        return pos
                    length = buf[pos + 2] << 8 | buf[pos + 3]
                else:
                    start = pos + 10
                    if start > n:
                        self._need = 10
                        return pos
                    length = int.from_bytes(buf[pos + 2 : start], "big")
                    if length >> 63:
                        raise WebSocketProtocolError("frame length has its top bit set")
            if b1 & 0x80:
                raise WebSocketProtocolError("server frames must not be masked")
            if b0 & 0x70:
                raise WebSocketProtocolError("reserved bits set without a negotiated extension")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            # Every check the header allows is made before waiting for the payload.
            if opcode in (OP_TEXT, OP_BINARY):
                if self._fragments is not None:
                    raise WebSocketProtocolError("new data frame inside a fragmented message")
            elif opcode == OP_CONTINUATION:
                if self._fragments is None:
                    raise WebSocketProtocolError("continuation frame without a message to continue")
                if self._fragment_size + length > max_size:
                    raise WebSocketProtocolError(
                        f"fragmented message exceeds the {max_size}-byte limit", close_code=1009
                    )
                if self._fragment_count >= MAX_FRAGMENTS:
                    raise WebSocketProtocolError(
                        f"fragmented message spans more than {MAX_FRAGMENTS} frames", close_code=1009
                    )
            elif opcode in _CONTROL_OPCODES:
                if not fin or length > 125:
                    raise WebSocketProtocolError("control frames must be final and at most 125 bytes")
            else:
                raise WebSocketProtocolError(f"unknown websocket opcode {opcode:#x}")
            if length > max_size:
                raise WebSocketProtocolError(
                    f"frame of {length} bytes exceeds the {max_size}-byte limit", close_code=1009
                )
            end = start + length
            if end > n:
                self._need = end - pos
                return pos
            payload = buf[start:end]
            pos = end
            if opcode in (OP_TEXT, OP_BINARY):
                if fin:
                    if opcode == OP_TEXT and not payload.isascii():
                        _check_text(payload)
                    out.append((payload, opcode == OP_BINARY))
                else:
                    self._fragments = [payload]
                    self._fragment_size = length
                    self._fragment_count = 1
                    self._fragment_binary = opcode == OP_BINARY
            elif opcode == OP_CONTINUATION:
                fragments = self._fragments
                assert fragments is not None  # checked with the header
                self._fragment_size += length
                self._fragment_count += 1
                if length:
                    fragments.append(payload)
                if fin:
                    message = b"".join(fragments)
                    if not self._fragment_binary and not message.isascii():
                        _check_text(message)
                    out.append((message, self._fragment_binary))
                    self._fragments = None
                    self._fragment_size = 0
                    self._fragment_count = 0
            else:
                if opcode == OP_PING:
                    self.pings.append(payload)
                elif opcode == OP_CLOSE:
                    self.close = parse_close_payload(payload)
                    self._need = 2
                    return n  # nothing after a close frame counts
        self._need = 2
        return pos
