"""The socket side of one server connection: the opening handshake (TLS, HTTP
upgrade), close-frame checks, cutting TCP, the settings every connection shares and
what a connection needs from its server (:class:`ConnectionHost`).
Functions here run on the connection's thread, except :func:`cut` and
:func:`check_close` (any thread)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from websockets.frames import Close
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..protocol.models import ClientFrame

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["SERVER_HEADER", "ConnectionHost", "Settings", "check_close", "cut", "fit_reason", "open_websocket"]

SERVER_HEADER = "leap-sync-embedded-leap-edge"
_RECV_SIZE = 65536


def cut(sock: socket.socket) -> None:
    """Shut a TCP connection down both ways (no close frame); errors ignored. Safe
    from any thread: called as ``socket.socket.shutdown`` so that a TLS socket is cut
    at the TCP level, under the thread using its SSL object."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def check_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` unless a close frame can carry ``code`` and ``reason``."""
    try:
        payload = Close(code, reason).serialize()
    except Exception as exc:  # websockets raises ProtocolError for a reserved code
        raise ValueError(f"invalid close code {code}: {exc}") from None
    if len(payload) > 125:
        raise ValueError("a close reason holds at most 123 bytes of UTF-8")


def fit_reason(reason: str) -> str:
    """``reason`` cut to the 123 UTF-8 bytes a close frame holds."""
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


@attrs.frozen
class Settings:
    """What every connection of one server shares (times in seconds, sizes in bytes)."""

    interval: float
    identify_timeout: float
    tolerance: float | None
    request_timeout: float | None
    strict_heartbeats: bool
    max_message_size: int
    send_queue_limit: int
    open_timeout: float
    close_timeout: float
    ssl_context: ssl.SSLContext | None


class ConnectionHost(Protocol):
    """What a connection needs from its server (called on the connection's thread)."""

    @property
    def enforcing_heartbeats(self) -> bool: ...

    @property
    def waiting(self) -> bool:
        """Whether a test waits for a change (frames written are then announced)."""

    def http_refusal(self, path: str) -> tuple[int, str] | None:
        """``(status, text)`` to refuse an upgrade request for ``path``, or ``None``."""

    def connection_opened(self, conn: Connection) -> None: ...

    def connection_frame(self, conn: Connection, frame: ClientFrame, replies: list[dict[str, Any]]) -> None:
        """Act on one client frame; may raise :class:`ServerClose`."""

    def connection_changed(self) -> None: ...

    def connection_left(self, conn: Connection) -> None:
        """``conn`` is no longer open: closing, dropped, or gone (called once, from
        any thread)."""

    def connection_closed(self, conn: Connection) -> None:
        """``conn``'s thread ends."""


def open_websocket(
    raw: socket.socket,
    ws: ServerProtocol,
    settings: Settings,
    refusal: Callable[[str], tuple[int, str] | None],
    wrapped: Callable[[socket.socket], None],
) -> tuple[str, list[Any]] | None:
    """The opening handshake on a blocking socket, bounded by ``open_timeout``: TLS
    (``wrapped`` receives the TLS socket), then the HTTP upgrade, refused with
    ``refusal(path)`` when that gives a status. Returns the request path and the
    frames that came with the request, or ``None`` when the connection ends here."""
    deadline = time.monotonic() + settings.open_timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("opening handshake timed out")
        return left

    def send_now() -> None:
        data = b"".join(ws.data_to_send())
        if data:
            sock.sendall(data)

    sock = raw
    try:
        if settings.ssl_context is not None:
            raw.settimeout(remaining())
            sock = settings.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            wrapped(sock)
            sock.do_handshake()
        events: list[Any] = []
        while not events or not isinstance(events[0], Request):
            sock.settimeout(remaining())
            data = sock.recv(_RECV_SIZE)
            if not data:
                return None
            ws.receive_data(data)
            events += ws.events_received()
            if ws.handshake_exc is not None:
                send_now()  # websockets' 400 answer
                return None
        request = events.pop(0)
        status = refusal(request.path)
        response = ws.reject(*status) if status else ws.accept(request)
        response.headers["Server"] = SERVER_HEADER
        ws.send_response(response)
        sock.settimeout(remaining())
        send_now()
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    if ws.state is not State.OPEN:
        return None
    return request.path, events
