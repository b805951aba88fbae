"""The HTTP/1.1 exchanges that open a websocket connection, sans-I/O.

- :func:`upgrade_request` builds the client's opening handshake (RFC 6455 section 4.1)
  and :func:`check_upgrade` validates the server's answer.
- :func:`connect_request` builds an HTTP proxy's ``CONNECT`` (RFC 9110 section 9.3.6).
- :class:`ResponseHead` reads one response head (status line and headers) from bytes
  as they arrive, bounded in size, and keeps what follows it: after a 101 those bytes
  are the first websocket frames.

Nothing here touches a socket or a clock. Errors are :class:`HandshakeError`, whose
message names what the server answered (status, reason, ``Location``) and never
echoes a request header.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping

from ..errors import LeapError

__all__ = [
    "MAX_HEAD_SIZE",
    "HandshakeError",
    "Response",
    "ResponseHead",
    "accept_value",
    "check_upgrade",
    "connect_request",
    "host_header",
    "new_key",
    "retry_after",
    "upgrade_request",
    "validate_headers",
]

MAX_HEAD_SIZE = 64 * 1024
"""Largest response head (status line and headers) accepted, in bytes."""
MAX_HEADERS = 100
"""Most header lines accepted in one response head."""
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(LeapError):
    """The peer's HTTP answer is malformed or refuses the request.

    ``status`` is the HTTP status when one was parsed; ``response`` the parsed head.
    """

    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response
        self.status = response.status if response is not None else None


Redact = Callable[[str], str]


def _same(text: str) -> str:
    return text


class Response:
    """A parsed response head: ``status`` (int), ``reason`` (str) and ``headers``
    (lower-case name -> list of values, in order)."""

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, list[str]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.reason!r})"

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or ``None``."""
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def describe(self, redact: Redact = _same) -> str:
        """``HTTP 302 Found (Location: ...)``: what a log line or error shows, with
        ``redact`` applied to the server's text before it is shortened."""
        reason = _printable(redact(self.reason), 200)
        text = f"HTTP {self.status}{' ' + reason if reason else ''}"
        location = self.header("location")
        if location:
            text += f" (Location: {_printable(redact(location), 200)})"
        return text


def _printable(text: str, limit: int) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def host_header(host: str, port: int, secure: bool) -> str:
    """``Host`` header value: IPv6 literals in brackets, the port unless default."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if secure else 80) else f"{shown}:{port}"


def validate_headers(header: Mapping[str, str] | Iterable[str] | None) -> list[str]:
    """Extra request headers as ``"Name: value"`` lines (from a dict or a list of
    lines). Raises ``ValueError`` for a line without a name or one holding CR/LF
    (which would inject headers)."""
    if header is None:
        return []
    lines = [f"{k}: {v}" for k, v in header.items() if v is not None] if isinstance(header, Mapping) else list(header)
    for line in lines:
        if not isinstance(line, str):
            raise ValueError(f"header lines must be strings, not {type(line).__name__}")
        name, sep, _ = line.partition(":")
        if not sep or not name.strip() or name != name.strip() or any(c in line for c in "\r\n\0"):
            shown = name[:60] if sep else "(no ':')"  # the value may be a credential: never shown
            raise ValueError(f"malformed header line named {shown!r}")
    return lines


def upgrade_request(
    resource: str, host: str, port: int, secure: bool, key: str, extra_headers: Iterable[str] = ()
) -> bytes:
    """The opening handshake request for ``ws(s)://host:port/resource``.

    ``extra_headers`` are validated lines (see :func:`validate_headers`); one named
    like a default header (``Origin``, ``Host``...) replaces the default.
    """
    hostport = host_header(host, port, secure)
    defaults = {
        "host": f"Host: {hostport}",
        "upgrade": "Upgrade: websocket",
        "connection": "Connection: Upgrade",
        "sec-websocket-key": f"Sec-WebSocket-Key: {key}",
        "sec-websocket-version": "Sec-WebSocket-Version: 13",
        "origin": f"Origin: {'https' if secure else 'http'}://{hostport}",
    }
    extra = list(extra_headers)
    for line in extra:
        defaults.pop(line.partition(":")[0].strip().lower(), None)
    lines = [f"GET {resource} HTTP/1.1", *defaults.values(), *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1", errors="replace")


def connect_request(host: str, port: int, auth: tuple[str, str] | None = None) -> bytes:
    """An HTTP proxy ``CONNECT host:port`` request, with Basic auth if given."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {token}")
    lines += ["", ""]
    return "\r\n".join(lines).encode("latin-1", errors="replace")


class ResponseHead:
    """Accumulates bytes until a whole response head arrived (at most ``limit``
    bytes and :data:`MAX_HEADERS` lines).

    :meth:`feed` returns the :class:`Response` once complete (``None`` before); the
    bytes after the head are then in :attr:`rest`. Raises :class:`HandshakeError` for
    a head too large or malformed.
    """

    __slots__ = ("_buffer", "limit", "redact", "rest")

    def __init__(self, limit: int = MAX_HEAD_SIZE, redact: Redact = _same) -> None:
        self.limit = limit
        self.redact = redact
        self._buffer = bytearray()
        self.rest = b""

    @property
    def received(self) -> int:
        """Bytes received so far."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Response | None:
        start = max(0, len(self._buffer) - 3)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buffer) > self.limit:
                raise HandshakeError(f"HTTP response head larger than {self.limit} bytes")
            return None
        if end + 4 > self.limit:
            raise HandshakeError(f"HTTP response head larger than {self.limit} bytes")
        head = bytes(self._buffer[:end])
        self.rest = bytes(self._buffer[end + 4 :])
        self._buffer = bytearray()
        return parse_response_head(head, self.redact)


def parse_response_head(head: bytes, redact: Redact = _same) -> Response:
    """Parse a status line and headers (without the final blank line). Headers are
    decoded as UTF-8 (what servers send in practice; invalid bytes become U+FFFD);
    error messages quote the server's text through ``redact``, before shortening it."""
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise HandshakeError(f"HTTP response with more than {MAX_HEADERS} headers")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not _digits(code):
        raise HandshakeError(f"not an HTTP/1.x response: {_printable(redact(lines[0]), 80)!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"malformed HTTP header line {_printable(redact(line), 80)!r}")
        headers.setdefault(name.lower(), []).append(value.strip())
    return Response(int(code), reason.strip(), headers)


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``'²'``, which ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def _tokens(value: str | None) -> list[str]:
    return [part.strip().lower() for part in (value or "").split(",")]


def check_upgrade(response: Response, key: str, redact: Redact = _same) -> None:
    """Check a response accepts the websocket upgrade sent with ``key``.

    Raises :class:`HandshakeError` naming the status (and ``Location``, through
    ``redact``) when it is not 101, or the header that is wrong.
    """
    if response.status != 101:
        raise HandshakeError(f"websocket upgrade refused: {response.describe(redact)}", response)
    if "websocket" not in _tokens(response.header("upgrade")):
        raise HandshakeError("websocket upgrade answered without 'Upgrade: websocket'", response)
    if "upgrade" not in _tokens(response.header("connection")):
        raise HandshakeError("websocket upgrade answered without 'Connection: Upgrade'", response)
    accept = response.header("sec-websocket-accept") or ""
    if not hmac.compare_digest(accept.encode("latin-1", errors="replace"), accept_value(key).encode("ascii")):
        raise HandshakeError("websocket upgrade answered with a wrong Sec-WebSocket-Accept", response)
    if response.header("sec-websocket-extensions"):
        raise HandshakeError("websocket upgrade answered with extensions that were not offered", response)


MAX_RETRY_AFTER = 600.0
"""Longest ``Retry-After`` honoured, in seconds (a larger one is capped)."""


def retry_after(response: Response, now: float) -> float | None:
    """The delay (s) a 429 or 503 response asks for in ``Retry-After`` (seconds or an
    HTTP date, compared with ``now``, Unix time), capped at :data:`MAX_RETRY_AFTER`;
    ``None`` when absent, unparseable or for other statuses."""
    if response.status not in (429, 503):
        return None
    value = response.header("retry-after")
    if not value:
        return None
    value = value.strip()
    if _digits(value):
        return min(float(int(value[:12])), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        delay = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return min(max(0.0, delay), MAX_RETRY_AFTER)
