"""The socket side of one server connection, for any protocol: the opening handshake
(TLS, HTTP upgrade), writing queued frames (:class:`OutboxWriter`), close-frame checks,
cutting TCP, the settings every connection of one server shares and what a connection
needs from its server (:class:`ConnectionHost`). Everything here runs on the
connection's thread, except :func:`cut` and :func:`check_close` (any thread)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
from websockets.frames import Close
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .outbox import Batch, Outbox

__all__ = [
    "ConnectionHost",
    "OutboxWriter",
    "Settings",
    "check_close",
    "cut",
    "fit_reason",
    "open_websocket",
    "shutdown_write",
]

_RECV_SIZE = 65536
_WRITE_CHUNK = 256 * 1024


def cut(sock: socket.socket) -> None:
    """Shut a TCP connection down both ways (no close frame); errors ignored. Safe
    from any thread: called as ``socket.socket.shutdown`` so that a TLS socket is cut
    at the TCP level, under the thread using its SSL object."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def shutdown_write(sock: socket.socket) -> None:
    """Send FIN after what was written (the websocket's end of stream); errors
    ignored."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except (OSError, ValueError):
        pass


def check_close(code: int, reason: str) -> None:
    """Raise unless a close frame can carry ``code`` and ``reason``: ``TypeError`` for
    a code that is not an ``int`` or a reason that is not a ``str``, ``ValueError`` for
    a code no close frame carries (1005, 1006, 1015, out of range) or a reason that is
    not text (a lone surrogate) or over 123 bytes of UTF-8."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"a close code is an int, not {type(code).__name__}")
    if not isinstance(reason, str):
        raise TypeError(f"a close reason is a str, not {type(reason).__name__}")
    try:
        encoded = reason.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a close reason must be text UTF-8 can encode (no lone surrogates)") from None
    if len(encoded) > 123:
        raise ValueError("a close reason holds at most 123 bytes of UTF-8")
    try:
        Close(code, reason).serialize()
    except Exception as exc:  # websockets raises ProtocolError for a reserved code
        raise ValueError(f"invalid close code {code}: {exc}") from None


def fit_reason(reason: str) -> str:
    """``reason`` made safe (what UTF-8 cannot encode, such as the lone surrogates a
    client's JSON may hold, written as backslash escapes) and cut to the 123 UTF-8
    bytes a close frame holds, never in the middle of a character. Never raises."""
    return reason.encode("utf-8", "backslashreplace")[:123].decode("utf-8", "ignore")


@attrs.frozen
class Settings:
    """What every connection of one server shares (times in seconds, sizes in bytes):
    ``server_header`` is the upgrade response's ``Server``, ``max_message_size`` the
    largest client message websockets reads (all fragments together)."""

    server_header: str
    max_message_size: int
    send_queue_limit: int
    open_timeout: float
    close_timeout: float
    ssl_context: ssl.SSLContext | None


ConnT_contra = TypeVar("ConnT_contra", contravariant=True)


class ConnectionHost(Protocol[ConnT_contra]):
    """What a connection needs from its server (called on the connection's thread,
    except :meth:`connection_left`)."""

    @property
    def waiting(self) -> bool:
        """Whether a test waits for a change (frames written are then announced)."""

    def http_refusal(self, path: str) -> tuple[int, str] | None:
        """``(status, text)`` to refuse an upgrade request for ``path``, or ``None``."""

    def connection_opened(self, conn: ConnT_contra) -> None:
        """``conn`` is open: its upgrade is accepted, the response not yet written."""

    def connection_changed(self) -> None:
        """Something a test may wait for changed (counters, state)."""

    def connection_left(self, conn: ConnT_contra) -> None:
        """``conn`` is no longer open: closing, dropped, or gone (called once, from
        any thread)."""

    def connection_closed(self, conn: ConnT_contra) -> None:
        """``conn``'s thread ends."""


class OutboxWriter:
    """Writes what an :class:`~leap_sync.testing.websocket.outbox.Outbox` holds to a
    non-blocking socket, as much as it takes at each :meth:`flush`, resuming a batch
    written in part."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._batch: Batch | None = None
        self._partial: memoryview | None = None

    @property
    def mid_batch(self) -> bool:
        """Whether a batch was written in part (a frame may be cut in the middle)."""
        return self._partial is not None

    @property
    def pending(self) -> bool:
        """Whether anything is left to write."""
        return self._partial is not None or self.outbox.queued > 0

    def flush(self, sock: socket.socket) -> tuple[bool, int]:
        """Write as much as ``sock`` takes now: ``(False, n)`` when the socket failed,
        else ``(True, n)``, with ``n`` the messages of the batches written whole."""
        frames = 0
        while True:
            if self._partial is None:
                self._batch = self.outbox.take(_WRITE_CHUNK)
                if self._batch is None:
                    return True, frames
                self._partial = memoryview(self._batch.data)
            try:
                sent = sock.send(self._partial)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return True, frames
            except OSError:
                return False, frames
            self._partial = self._partial[sent:]
            if not self._partial:
                self._partial = None
                if self._batch is not None:
                    frames += self._batch.frames

    def discard(self) -> list[Batch]:
        """Close the outbox and drop what was not written whole (returned, oldest first)."""
        unwritten = self.outbox.discard()
        if self._partial is not None and self._batch is not None:
            unwritten.insert(0, self._batch)
        self._partial = self._batch = None
        return unwritten


def _bad_request(ws: ServerProtocol, settings: Settings) -> bytes:
    """A ``400 Bad Request`` response for a request websockets could not parse."""
    response = ws.reject(400, "not a valid HTTP request\n")
    response.headers["Server"] = settings.server_header
    return response.serialize()


def open_websocket(
    raw: socket.socket,
    ws: ServerProtocol,
    settings: Settings,
    refusal: Callable[[str], tuple[int, str] | None],
    wrapped: Callable[[socket.socket], None],
    accepted: Callable[[str], bool],
) -> list[Any] | None:
    """The opening handshake on a blocking socket, bounded by ``open_timeout``: TLS
    (``wrapped`` receives the TLS socket), then the HTTP upgrade, refused with
    ``refusal(path)`` when that gives a status. ``accepted(path)`` runs once the
    upgrade is accepted, before the response is written (``False`` ends the connection
    there), so that a client that sees the upgrade succeed finds the connection served.
    Returns the frames that came with the request, or ``None`` when the connection
    ends here."""
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
                answer = b"".join(ws.data_to_send())
                if not answer.startswith(b"HTTP/"):
                    # Not HTTP websockets could parse (a request line that is not
                    # ASCII, a malformed one): it answers nothing, we answer 400.
                    answer = _bad_request(ws, settings)
                sock.settimeout(remaining())
                sock.sendall(answer)
                return None
        request = events.pop(0)
        # A path that is not printable ASCII (RFC 3986; websockets before 17 let
        # bytes through as Latin-1) is a bad request on every version.
        printable = request.path.isascii() and request.path.isprintable() and " " not in request.path
        status = refusal(request.path) if printable else (400, "not a valid HTTP request\n")
        response = ws.reject(*status) if status else ws.accept(request)
        response.headers["Server"] = settings.server_header
        ws.send_response(response)
        if ws.state is State.OPEN and not accepted(request.path):
            return None
        sock.settimeout(remaining())
        send_now()
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    return events if ws.state is State.OPEN else None
