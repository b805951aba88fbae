"""One websocket connection: websocket-client for the handshake, TLS and proxies; our
own frame reader for the read path; every socket operation serialised by one lock.

Thread contract (see DESIGN.md section 4): exactly one thread calls :meth:`receive`.
Any thread may call :meth:`send`, :meth:`send_close` and :meth:`abort`. The socket is
non-blocking: :meth:`receive` waits for readability *outside* the lock and only takes
the lock for the read itself, and senders take it for their writes, so a TLS socket
never has two threads inside OpenSSL at once. :meth:`abort` wakes a blocked reader with
``shutdown(SHUT_RDWR)``.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket

from .errors import LeapConnectionError, LeapError
from .protocol.codec import DEFAULT_MAX_SIZE
from .protocol.wsframes import FrameReader, WebSocketProtocolError

__all__ = ["Transport", "TransportOptions"]

Payload = str | bytes

# One read takes at most 64 KiB: larger buffers cross glibc's mmap threshold (an mmap,
# mremap and munmap per read) and make each batch, and so the latency tail, longer.
_READ_SIZE = 64 * 1024
_TLS_READ_SIZE = 16 * 1024  # one TLS record
_HAS_POLL = hasattr(select, "poll")
_OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
_OPCODE_BINARY = websocket.ABNF.OPCODE_BINARY
_OPCODE_CLOSE = websocket.ABNF.OPCODE_CLOSE
_OPCODE_PONG = websocket.ABNF.OPCODE_PONG
_create_frame = websocket.ABNF.create_frame


class TransportOptions:
    """How to open connections: the websocket-client options leap-sync passes through.

    ``sslopt`` is websocket-client's format (``{"ca_certs": path}``,
    ``{"context": ssl_context}``...); certificate verification stays on unless it
    says otherwise. ``trust_env=False`` ignores the ``http_proxy``/``https_proxy``/
    ``no_proxy`` environment variables.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
        sslopt: dict[str, Any] | None = None,
        header: list[str] | dict[str, str] | None = None,
        http_proxy_host: str | None = None,
        http_proxy_port: int | None = None,
        http_proxy_auth: tuple[str, str] | None = None,
        http_no_proxy: list[str] | None = None,
        proxy_type: str = "http",
        trust_env: bool = True,
    ) -> None:
        if connect_timeout <= 0 or send_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.max_message_size = max_message_size
        self.sslopt = dict(sslopt) if sslopt else {}
        self.header = header
        self.http_proxy_host = http_proxy_host
        self.http_proxy_port = http_proxy_port
        self.http_proxy_auth = http_proxy_auth
        self.http_no_proxy = http_no_proxy
        self.proxy_type = proxy_type
        self.trust_env = trust_env

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``websocket.WebSocket.connect``."""
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout, "redirect_limit": 0}
        if self.header is not None:
            kwargs["header"] = self.header
        if self.http_proxy_host is not None:
            kwargs["http_proxy_host"] = self.http_proxy_host
            kwargs["http_proxy_port"] = self.http_proxy_port
            kwargs["proxy_type"] = self.proxy_type
        if self.http_proxy_auth is not None:
            kwargs["http_proxy_auth"] = self.http_proxy_auth
        if self.http_no_proxy is not None:
            kwargs["http_no_proxy"] = self.http_no_proxy
        elif not self.trust_env and self.http_proxy_host is None:
            # websocket-client reads http(s)_proxy/no_proxy from the environment unless
            # a proxy host is configured, and honours http_no_proxy only then: a
            # placeholder host with no_proxy "*" makes it connect directly and never
            # look at the environment.
            kwargs["http_proxy_host"] = "trust-env-disabled.invalid"
            kwargs["http_proxy_port"] = 1
            kwargs["http_no_proxy"] = ["*"]
        return kwargs


def _wait(sock: socket.socket, write: bool, timeout: float | None) -> bool:
    """Wait until ``sock`` is readable (or writable); ``False`` on timeout."""
    if _HAS_POLL:
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))
    r, w, _ = select.select([] if write else [sock], [sock] if write else [], [], timeout)
    return bool(r or w)


class _InterruptibleWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket, whose socket is shut down the moment it is
    assigned if ``stop`` is already set, so a handshake can be interrupted from another
    thread without a window in which the socket exists but nobody knows it."""

    def __init__(self, stop: threading.Event | None, **kwargs: Any) -> None:
        self._stop = stop
        self.timed_out = False
        super().__init__(**kwargs)

    @property
    def sock(self) -> socket.socket | None:
        return self.__dict__.get("_leap_sock")

    @sock.setter
    def sock(self, value: socket.socket | None) -> None:
        self.__dict__["_leap_sock"] = value
        if value is not None and (self.timed_out or (self._stop is not None and self._stop.is_set())):
            _shutdown_quietly(value)

    def interrupt(self, timed_out: bool = False) -> None:
        """Shut the socket down if there is one (any thread); ``timed_out`` marks the
        attempt as over its deadline."""
        if timed_out:
            self.timed_out = True
        sock = self.sock
        if sock is not None:
            _shutdown_quietly(sock)


def _nothing_pending() -> int:
    return 0


def _shutdown_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already shut down


class Transport:
    """An open websocket connection (after the upgrade).

    Use :meth:`open` to make one. ``receive`` returns data messages as
    ``(payload, binary)`` in batches; the connection's end (close frame, EOF, error,
    :meth:`abort`) raises :class:`LeapConnectionError` from ``receive``, whose
    ``close_code``/``close_reason`` are the server's when it sent a close frame.
    """

    def __init__(self, ws: websocket.WebSocket, *, send_timeout: float, max_message_size: int) -> None:
        sock = ws.sock
        if sock is None:
            raise LeapError("websocket is not connected")
        self._ws = ws
        self._sock: socket.socket = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._pending: Callable[[], int] = sock.pending if isinstance(sock, ssl.SSLSocket) else _nothing_pending
        self._lock = threading.Lock()  # held for each socket call (TLS safety)
        self._send_lock = threading.Lock()  # held for each whole frame sent
        self._send_timeout = send_timeout
        self._reader = FrameReader(max_message_size)
        self._ended: LeapConnectionError | None = None
        self._abort_error: LeapConnectionError | None = None
        self._close_sent = False
        self._pongs_due: list[bytes] = []
        self._poller: Any = None
        if _HAS_POLL:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
        sock.setblocking(False)

    @classmethod
    def open(
        cls,
        url: str,
        options: TransportOptions,
        *,
        stop: threading.Event | None = None,
        on_socket: Callable[[_InterruptibleWebSocket], None] | None = None,
    ) -> Transport:
        """Connect and upgrade (blocking, bounded by ``options.connect_timeout``).

        The handshake is abandoned as soon as possible once ``stop`` is set: the
        caller sets it, then calls ``interrupt()`` on the object ``on_socket``
        received. (A TCP connect still in progress runs to its timeout.) Raises
        :class:`LeapConnectionError`.
        """
        ws = _InterruptibleWebSocket(stop, sslopt=dict(options.sslopt), skip_utf8_validation=True)
        if on_socket is not None:
            on_socket(ws)
        untyped: Any = ws  # websocket-client's connect() and shutdown() are unannotated
        failure: Exception | None = None
        try:
            untyped.connect(url, **options.connect_kwargs())
        except Exception as exc:
            failure = cls._connect_error(exc)
        if ws.timed_out:
            failure = LeapConnectionError(
                f"could not connect: no websocket upgrade within {options.connect_timeout:g} s"
            )
        elif failure is None and stop is not None and stop.is_set():
            failure = LeapConnectionError("connection attempt abandoned")
        if failure is not None:
            untyped.shutdown()
            raise failure
        return cls(ws, send_timeout=options.send_timeout, max_message_size=options.max_message_size)

    @staticmethod
    def _connect_error(exc: Exception) -> Exception:
        if isinstance(exc, websocket.WebSocketBadStatusException):
            return LeapConnectionError(f"websocket upgrade refused: HTTP {exc.status_code}")
        if isinstance(exc, ssl.SSLError):
            return LeapConnectionError(f"TLS failure: {exc}")
        if isinstance(exc, (OSError, websocket.WebSocketException, ValueError)):
            return LeapConnectionError(f"could not connect: {exc or type(exc).__name__}")
        return exc  # a bug, not a network condition: let it show

    # -- reading (one thread) ------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> list[tuple[bytes, bool]]:
        """Block until data messages arrive; return every complete one, in order.

        Returns ``[]`` when ``timeout`` (seconds) passes first. Answers pings on the
        way. Raises :class:`LeapConnectionError` once the connection has ended; data
        messages that arrived before a close frame are returned first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = self._reader
        while True:
            if self._ended is not None:
                raise self._ended
            if reader.error is not None:
                raise self._protocol_failure(reader.error)
            if self._pongs_due:
                self._answer_pings()
            if not self._has_pending():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                if self._poller is not None:
                    ready = self._poller.poll(None if remaining is None else int(remaining * 1000) + 1)
                else:
                    ready = _wait(self._sock, False, remaining)
                if not ready:
                    continue
            data = self._read()
            if data is None:
                continue
            try:
                # Returns what it completed before a framing error, and keeps the error
                # for the next round: nothing received in good order is dropped.
                messages = reader.feed(data)
            except WebSocketProtocolError as exc:
                raise self._protocol_failure(exc) from None
            if reader.pings:
                self._pongs_due += reader.pings
                reader.pings = []
                self._answer_pings()
            if reader.close is not None and self._ended is None:
                self._end_by_peer(*reader.close)
            if messages:
                return messages

    def _has_pending(self) -> bool:
        """Whether OpenSSL holds decrypted bytes that poll() cannot see."""
        if not self._tls:
            return False
        with self._lock:  # pending() enters OpenSSL: never beside another thread's send
            return bool(self._pending())

    def _answer_pings(self) -> None:
        """Send the pongs due, unless a sender holds the socket (then next round): the
        reader never waits behind a blocked send."""
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            while self._pongs_due and not self.ended:
                self._write(memoryview(_create_frame(self._pongs_due.pop(0), _OPCODE_PONG).format()), 1.0)
        except LeapConnectionError:
            pass  # the connection is ending; the next read reports why
        finally:
            self._send_lock.release()

    def _read(self) -> bytes | None:
        """One locked read; ``None`` when nothing was there after all."""
        error: Exception | None = None
        with self._lock:
            try:
                if self._tls:
                    sock = self._sock
                    data = sock.recv(_TLS_READ_SIZE)
                    if data:
                        chunks = [data]
                        size = len(data)
                        while size < _READ_SIZE:
                            try:
                                more = sock.recv(_TLS_READ_SIZE)
                            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                                break
                            if not more:
                                break
                            chunks.append(more)
                            size += len(more)
                        if len(chunks) > 1:
                            data = b"".join(chunks)
                else:
                    data = self._sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                data = b""
                error = exc
        if data:
            return data
        if error is not None:
            raise self._end(LeapConnectionError(f"connection lost: {error}"))
        raise self._end(LeapConnectionError("connection lost: closed without a close frame"))

    def _end_by_peer(self, code: int | None, reason: str) -> None:
        # Echo the close (RFC 6455 section 5.5.1), then we are done with the socket. If
        # we had closed first (fail()), this is only the echo and our reason stands.
        try:
            self.send_close(1000 if code is None else code, "", timeout=1.0)
        except LeapConnectionError:
            pass
        self._end(
            LeapConnectionError(
                f"server closed the connection (code {code}{': ' + reason if reason else ''})",
                close_code=code,
                close_reason=reason,
            )
        )

    def _protocol_failure(self, exc: WebSocketProtocolError) -> LeapConnectionError:
        error = LeapConnectionError(f"protocol error: {exc}")
        self.fail(exc.close_code, error)
        return self._end(error)

    def _end(self, error: LeapConnectionError) -> LeapConnectionError:
        """The connection is over: the reason is ours if we ended it (abort/fail), else
        ``error``. Returns the reason for the reader to raise."""
        if self._ended is None:
            self._ended = self._abort_error or error
        self._shutdown()
        return self._ended

    # -- writing (any thread) ----------------------------------------------------------

    def send(self, payload: Payload, binary: bool) -> None:
        """Send one data message (text for ``str`` JSON, binary for ETF).

        Blocks at most the send timeout (waiting for another sender included); raises
        :class:`LeapConnectionError` when it cannot send, and aborts the connection when
        the socket stayed full.
        """
        self._send_frame(_OPCODE_BINARY if binary else _OPCODE_TEXT, payload)

    def send_close(self, code: int = 1000, reason: str = "", timeout: float | None = None) -> None:
        """Send a close frame once (later calls do nothing)."""
        self._send_frame(_OPCODE_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8")[:123], timeout)

    def _send_frame(self, opcode: int, payload: Payload, timeout: float | None = None) -> None:
        limit = self._send_timeout if timeout is None else timeout
        data = memoryview(_create_frame(payload, opcode).format())
        # The send lock keeps each frame whole and frames in order; the I/O lock is held
        # only for each socket call, so the reader keeps draining the socket while a
        # sender waits for room (two full buffers never deadlock each other).
        if not self._send_lock.acquire(timeout=limit):
            raise LeapConnectionError(f"cannot send: another send held the socket for {limit:g} s")
        try:
            if opcode == _OPCODE_CLOSE:
                if self._close_sent:
                    return
                self._close_sent = True
            elif self.ended:
                raise LeapConnectionError(f"cannot send: {self._ended or self._abort_error}")
            self._write(data, limit)
        finally:
            self._send_lock.release()

    def _write(self, data: memoryview, limit: float) -> None:
        """Write a whole frame (send lock held); abort the connection if the socket stays
        full for ``limit`` seconds."""
        sock = self._sock
        deadline: float | None = None
        while data:
            with self._lock:
                try:
                    sent = sock.send(data)
                    blocked: Exception | None = None
                except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError) as exc:
                    sent = 0
                    blocked = exc
                except (OSError, ValueError) as exc:
                    raise LeapConnectionError(f"cannot send: {exc}") from None
            if sent:
                data = data[sent:]
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + limit
            elif now >= deadline:
                error = LeapConnectionError(f"cannot send: the socket stayed full for {limit:g} s")
                self.abort(error)
                raise error
            _wait(sock, not isinstance(blocked, ssl.SSLWantReadError), deadline - now)

    # -- ending ------------------------------------------------------------------------

    def fail(self, code: int, error: LeapConnectionError) -> None:
        """End the connection because of ``error``, from any thread: a close frame with
        ``code`` goes out if it can, the socket is shut down, and :meth:`receive` raises
        ``error`` (not the peer's echo of our close)."""
        if self._abort_error is None:
            self._abort_error = error
        try:
            self.send_close(code, "", timeout=1.0)
        except LeapConnectionError:
            pass
        self._shutdown()

    def abort(self, error: LeapConnectionError | None = None) -> None:
        """End the connection now, from any thread: a blocked :meth:`receive` wakes and
        raises ``error`` (default: "connection aborted")."""
        if self._abort_error is None:
            self._abort_error = error or LeapConnectionError("connection aborted")
        self._shutdown()

    def _shutdown(self) -> None:
        _shutdown_quietly(self._sock)

    def close(self) -> None:
        """Release the socket. Call after the reader is done."""
        self._shutdown()
        with self._lock:  # not while another thread is inside a socket call
            try:
                self._sock.close()
            except OSError:
                pass

    @property
    def ended(self) -> bool:
        """Whether the connection is over (close frame seen, EOF, error or abort)."""
        return self._ended is not None or self._abort_error is not None
