"""One open websocket connection, owned by one thread.

Thread contract (DESIGN.md section 4, first option): the *owner* (the client's I/O
thread) makes every socket call: it reads, writes and shuts down. Other threads never
touch the socket: :meth:`Transport.send` formats a frame, queues it and wakes the owner
through the client's :class:`~leap_sync.wakeup.Wakeup`; :meth:`Transport.abort` asks
the owner to end the connection. So a TLS socket never has two threads inside OpenSSL,
the reader never waits behind a sender, and a peer that stops reading cannot block
anything but the frames queued for it.

Writes never block the owner: it writes what the socket takes and polls for room.
Control frames and heartbeats (``urgent``) go ahead of data frames not yet started. A
frame that waits longer than ``send_timeout`` to be written ends the connection.
"""

from __future__ import annotations

import collections
import select
import socket
import ssl
import threading
import time
from typing import Any

import websocket

from .errors import LeapConnectionError
from .protocol.codec import DEFAULT_MAX_SIZE
from .protocol.wsframes import FrameReader, WebSocketProtocolError
from .wakeup import Wakeup

__all__ = ["Outgoing", "Transport"]

Payload = str | bytes

# One read takes at most 64 KiB: larger buffers cross glibc's mmap threshold (an mmap,
# mremap and munmap per read) and make each batch, and so the latency tail, longer.
_READ_SIZE = 64 * 1024
_TLS_READ_SIZE = 16 * 1024  # one TLS record
_HAS_POLL = hasattr(select, "poll")
_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)
_OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
_OPCODE_BINARY = websocket.ABNF.OPCODE_BINARY
_OPCODE_CLOSE = websocket.ABNF.OPCODE_CLOSE
_OPCODE_PONG = websocket.ABNF.OPCODE_PONG
_OPCODE_PING = websocket.ABNF.OPCODE_PING
_create_frame = websocket.ABNF.create_frame
MAX_URGENT = 1024
"""Most urgent frames (heartbeats, pongs, answers to tagged requests) queued at once;
beyond it the peer is not reading and the connection ends."""


def _wait_writable(sock: socket.socket, timeout: float) -> None:
    if _HAS_POLL:
        poller = select.poll()
        poller.register(sock, _POLLOUT)
        poller.poll(int(timeout * 1000) + 1)
    else:  # pragma: no cover - Windows
        select.select([], [sock], [], timeout)


class Outgoing:
    """A queued frame; :meth:`wait` blocks until it is written (or failed)."""

    __slots__ = ("_done", "data", "error", "queued_at")

    def __init__(self, data: bytes, queued_at: float) -> None:
        self.data = data
        self.queued_at = queued_at
        self.error: LeapConnectionError | None = None
        self._done = threading.Event()

    def wait(self, timeout: float | None) -> bool:
        """Whether the frame was handled (written, or failed: see :attr:`error`)."""
        return self._done.wait(timeout)

    def finish(self, error: LeapConnectionError | None = None) -> None:
        if not self._done.is_set():
            self.error = error
            self._done.set()


class Transport:
    """An open websocket connection (after the upgrade).

    ``early`` holds bytes that arrived with the upgrade answer. :meth:`receive` returns
    data messages as ``(payload, binary)`` in batches; the connection's end (close
    frame, EOF, error, :meth:`abort`) raises :class:`LeapConnectionError` from it,
    whose ``close_code``/``close_reason`` are the server's when it sent a close frame.
    :attr:`last_received` is when bytes last arrived (monotonic seconds), whole
    messages or not.
    """

    def __init__(
        self,
        sock: socket.socket,
        wakeup: Wakeup,
        *,
        early: bytes = b"",
        send_timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self._sock = sock
        self._wakeup = wakeup
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._send_timeout = send_timeout
        self._reader = FrameReader(max_message_size)
        self._early = early
        self._lock = threading.Lock()  # guards the queues and the ending fields
        self._urgent: collections.deque[Outgoing] = collections.deque()
        self._data: collections.deque[Outgoing] = collections.deque()
        self._pong: Outgoing | None = None  # the one pong due (RFC 6455 5.5.3: the latest ping)
        self._writing: memoryview | None = None
        self._current: Outgoing | None = None
        self._ended: LeapConnectionError | None = None
        self._abort_error: LeapConnectionError | None = None
        self._close_queued = False
        self.close_sent = False
        """Whether our close frame was written."""
        self.last_received = time.monotonic()
        self._poller: Any = None
        self._want_write = False
        sock.setblocking(False)
        if _HAS_POLL:
            self._poller = select.poll()
            self._poller.register(sock, _POLLIN)
            self._poller.register(wakeup.fd, _POLLIN)

    # -- any thread --------------------------------------------------------------------

    def send(self, payload: Payload, binary: bool, *, urgent: bool = False) -> Outgoing:
        """Queue one data message (text for JSON, binary for ETF) and wake the owner.

        Returns at once; :meth:`Outgoing.wait` tells when it was written. Raises
        :class:`LeapConnectionError` once the connection is ending.
        """
        frame = _create_frame(payload, _OPCODE_BINARY if binary else _OPCODE_TEXT).format()
        return self._queue(frame, urgent)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a websocket ping (urgent; the peer's pong, like anything it sends,
        counts in :attr:`last_received`)."""
        self._queue(_create_frame(payload[:125], _OPCODE_PING).format(), True)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close frame once (later calls do nothing); the owner sends it ahead
        of data frames not yet started."""
        with self._lock:
            if self._close_queued or self._ended is not None:
                return
            self._close_queued = True
        frame = _create_frame(code.to_bytes(2, "big") + reason.encode("utf-8")[:123], _OPCODE_CLOSE).format()
        self._queue(frame, True, closing=True)

    def _queue(self, data: bytes, urgent: bool, closing: bool = False) -> Outgoing:
        item = Outgoing(data, time.monotonic())
        with self._lock:
            if self._ended is not None or self._abort_error is not None:
                raise LeapConnectionError(f"cannot send: {self._ended or self._abort_error}")
            if self._close_queued and not closing:
                raise LeapConnectionError("cannot send: the connection is closing")
            if urgent:
                if len(self._urgent) >= MAX_URGENT:
                    self._abort_error = LeapConnectionError(
                        f"cannot send: {MAX_URGENT} control frames wait for a peer that does not read"
                    )
                    item.finish(self._abort_error)
                else:
                    self._urgent.append(item)
            else:
                self._data.append(item)
        self._wakeup.notify()
        return item

    def abort(self, error: LeapConnectionError | None = None) -> None:
        """End the connection now (any thread): the owner's :meth:`receive` raises
        ``error`` (default: "connection aborted") without waiting for the peer."""
        with self._lock:
            if self._abort_error is None:
                self._abort_error = error or LeapConnectionError("connection aborted")
        self._wakeup.notify()

    @property
    def ended(self) -> bool:
        """Whether the connection is over (close frame seen, EOF, error or abort)."""
        return self._ended is not None or self._abort_error is not None

    # -- the owner ---------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> list[tuple[bytes, bool]]:
        """(Owner.) Write what is queued, wait for data, return complete messages.

        Returns ``[]`` when ``timeout`` (seconds) passes first, or when another thread
        woke the owner (a frame queued, ``close()``): the caller re-checks its state.
        Answers pings on the way. Raises :class:`LeapConnectionError` once the connection has ended; data
        messages that arrived before a close frame are returned first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = self._reader
        while True:
            if self._abort_error is not None:
                raise self._end(self._abort_error)
            if self._ended is not None:
                raise self._ended
            if reader.error is not None:
                raise self._protocol_failure(reader.error)
            data: bytes | None
            if self._early:
                data, self._early = self._early, b""
            else:
                if self._urgent or self._data or self._writing is not None or self._pong is not None:
                    self._flush()
                    if self.ended:
                        continue
                if not (self._tls and self._pending()):
                    now = time.monotonic()
                    remaining = None if deadline is None else deadline - now
                    wait: float | None
                    send_by = self._send_deadline()
                    if send_by is not None and send_by <= now:
                        self.abort(
                            LeapConnectionError(f"cannot send: the socket stayed full for {self._send_timeout:g} s")
                        )
                        continue
                    if send_by is not None and (remaining is None or send_by - now < remaining):
                        wait = send_by - now
                    else:
                        wait = remaining
                    if remaining is not None and remaining <= 0:
                        return []
                    readable, woken = self._poll(wait)
                    if woken and not readable:
                        if self.ended:
                            continue
                        if self._urgent or self._data:
                            self._flush()
                        return []
                    if not readable:
                        continue
                data = self._read()
                if data is None:
                    continue
                self.last_received = time.monotonic()
            try:
                # Returns what it completed before a framing error, and keeps the error
                # for the next round: nothing received in good order is dropped.
                messages = reader.feed(data)
            except WebSocketProtocolError as exc:
                raise self._protocol_failure(exc) from None
            if reader.pings:
                self._queue_pong(reader.pings[-1])
                reader.pings = []
                self._flush()
            if reader.close is not None and self._ended is None:
                self._end_by_peer(*reader.close)
            if messages:
                return messages

    def _pending(self) -> int:
        return self._sock.pending()  # type: ignore[attr-defined, no-any-return]

    def _send_deadline(self) -> float | None:
        item = self._current
        if item is None:
            head = self._urgent[0] if self._urgent else (self._data[0] if self._data else None)
            item = head
        return None if item is None else item.queued_at + self._send_timeout

    def _poll(self, timeout: float | None) -> tuple[bool, bool]:
        """Wait for readability, room to write (when a write is pending) or a wakeup;
        ``(readable, woken)``."""
        want_write = self._writing is not None or bool(self._urgent or self._data or self._pong)
        if self._poller is not None:
            if want_write != self._want_write:
                self._poller.modify(self._sock, _POLLIN | (_POLLOUT if want_write else 0))
                self._want_write = want_write
            events = self._poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
        else:  # pragma: no cover - Windows
            sock_fd = self._sock.fileno()
            r, w, _ = select.select([sock_fd, self._wakeup.fd], [sock_fd] if want_write else [], [], timeout)
            events = [(fd, _POLLIN) for fd in r] + [(fd, _POLLOUT) for fd in w]
        readable = woken = False
        fd = self._wakeup.fd
        for ready_fd, flags in events:
            if ready_fd == fd:
                self._wakeup.clear()
                woken = True
            elif flags & ~_POLLOUT:
                readable = True  # POLLIN, or POLLHUP/POLLERR, which the read reports
        return readable, woken

    def _read(self) -> bytes | None:
        """One read; ``None`` when nothing was there after all."""
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
            raise self._end(LeapConnectionError(f"connection lost: {exc}")) from None
        if data:
            return data
        raise self._end(LeapConnectionError("connection lost: closed without a close frame"))

    def _queue_pong(self, payload: bytes) -> None:
        pong = Outgoing(_create_frame(payload, _OPCODE_PONG).format(), time.monotonic())
        self._pong = pong  # replaces a pong not yet started: the latest ping is answered

    def _flush(self) -> None:
        """Write queued frames until the socket is full (never blocks)."""
        sock = self._sock
        while True:
            if self._writing is None:
                item = self._next_item()
                if item is None:
                    return
                self._current = item
                self._writing = memoryview(item.data)
            try:
                sent = sock.send(self._writing)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except (OSError, ValueError) as exc:
                self.abort(LeapConnectionError(f"cannot send: {exc}"))
                return
            self._writing = self._writing[sent:]
            if not self._writing:
                done = self._current
                self._writing = self._current = None
                if done is not None:
                    if done.data[0] & 0x0F == _OPCODE_CLOSE:
                        self.close_sent = True
                    done.finish()

    def _next_item(self) -> Outgoing | None:
        if self._pong is not None:
            pong, self._pong = self._pong, None
            return pong
        with self._lock:
            if self._urgent:
                return self._urgent.popleft()
            if self._data and not self.close_sent:
                return self._data.popleft()
        return None

    def flush_for(self, timeout: float) -> None:
        """(Owner.) Try for at most ``timeout`` seconds to write what is queued (a
        close frame before ending the connection)."""
        deadline = time.monotonic() + timeout
        while self._writing is not None or self._urgent or self._pong is not None:
            self._flush()
            if self._writing is None and not self._urgent and self._pong is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._abort_error is not None:
                return
            _wait_writable(self._sock, remaining)

    def _end_by_peer(self, code: int | None, reason: str) -> None:
        # Echo the close (RFC 6455 section 5.5.1), then we are done with the socket. If
        # we had closed first (fail()), this is only the echo and our reason stands.
        self.send_close(1000 if code is None else code, "")
        self.flush_for(1.0)
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

    def fail(self, code: int, error: LeapConnectionError) -> None:
        """(Owner.) End the connection because of ``error``: a close frame with
        ``code`` goes out if it can within a second, the socket is shut down, and
        :meth:`receive` raises ``error`` (not the peer's echo of our close)."""
        if not self.ended:
            self.send_close(code, "")
            self.flush_for(1.0)
        with self._lock:
            if self._abort_error is None:
                self._abort_error = error
        self._end(error)

    def _end(self, error: LeapConnectionError) -> LeapConnectionError:
        """The connection is over: the reason is ours if we ended it (abort/fail), else
        ``error``. Fails every queued frame. Returns the reason for the reader to
        raise."""
        with self._lock:
            if self._ended is None:
                self._ended = self._abort_error or error
            pending = [*self._urgent, *self._data]
            self._urgent.clear()
            self._data.clear()
            ended = self._ended
        current, self._current, self._writing = self._current, None, None
        for item in [current, *pending] if current is not None else pending:
            item.finish(LeapConnectionError(f"cannot send: {ended}"))
        try:
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # not SSLSocket's: keep TLS state
        except OSError:
            pass
        return ended

    def close(self) -> None:
        """(Owner.) Release the socket, once the connection has ended."""
        if self._ended is None:
            self._end(self._abort_error or LeapConnectionError("connection closed"))
        try:
            self._sock.close()
        except OSError:
            pass
