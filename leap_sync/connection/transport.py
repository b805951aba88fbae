"""One open websocket connection, owned by one thread.

Thread contract (DESIGN.md section 4, first option): the *owner* (the client's I/O
thread) makes every socket call: it reads, writes and shuts down. Other threads never
touch the socket: :meth:`Transport.send` formats a frame, queues it
(:class:`~leap_sync.connection.writer.FrameWriter`) and wakes the owner through the client's
:class:`~leap_sync.connection.wakeup.Wakeup`; :meth:`Transport.abort` asks the owner to end the
connection. So a TLS socket never has two threads inside OpenSSL, the reader never
waits behind a sender, and a peer that stops reading cannot block anything but the
frames queued for it: a frame that waits longer than ``send_timeout`` to be written
ends the connection.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import websocket

from ..errors import LeapConnectionError
from ..wire.wsframes import DEFAULT_MAX_SIZE, FrameReader, WebSocketProtocolError, close_payload
from .timeouts import MAX_WAIT, poll_ms
from .wakeup import Wakeup
from .writer import FrameWriter, Outgoing

if TYPE_CHECKING:
    from .stats import Counters

__all__ = ["UNSENT_LIMIT", "Outgoing", "Transport", "bound_unsent"]

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
_OPCODE_PING = websocket.ABNF.OPCODE_PING
_OPCODE_PONG = websocket.ABNF.OPCODE_PONG
_create_frame = websocket.ABNF.create_frame

UNSENT_LIMIT = 16 * 1024
"""Bytes a socket holds unsent in the kernel before it stops taking more (TCP
``TCP_NOTSENT_LOWAT``): what a heartbeat or a pong may wait behind, besides the frame
being written."""
_SNDBUF_FALLBACK = 64 * 1024  # where TCP_NOTSENT_LOWAT is missing: a modest send buffer
# Linux has had TCP_NOTSENT_LOWAT (25) since 3.12; Python names it since 3.7 on most builds.
_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform.startswith("linux") else None)


def bound_unsent(sock: socket.socket) -> None:
    """Bound what ``sock`` (TCP) keeps unsent in the kernel, so that what we queue
    urgently (heartbeats, pongs, the close frame) waits behind at most about
    :data:`UNSENT_LIMIT` bytes of earlier frames, not megabytes of send buffer: with
    ``TCP_NOTSENT_LOWAT`` where the OS has it (the socket reports writable, and takes
    more, only while less than that is unsent), else a send buffer of 64 KiB.
    Errors are ignored (the socket works as before)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if _NOTSENT_LOWAT is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, UNSENT_LIMIT)
            return
        except OSError:
            pass
    try:  # pragma: no cover - systems without TCP_NOTSENT_LOWAT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_FALLBACK)
    except OSError:  # pragma: no cover
        pass


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
        counters: Counters | None = None,
    ) -> None:
        self._counters = counters  # counts each data message queued
        self._sock = sock
        self._wakeup = wakeup
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._send_timeout = send_timeout
        self._reader = FrameReader(max_message_size)
        self._writer = FrameWriter(sock, send_timeout)
        self._early = early
        self._read_error: Exception | None = None
        self._read_eof = False  # the peer's end (EOF, close_notify) was read behind data
        self._lock = threading.Lock()  # guards the ending fields
        self._ended: LeapConnectionError | None = None
        self.peer_close: LeapConnectionError | None = None
        """(Owner.) The server's close frame, when that is what ended the connection:
        it outranks a fault the protocol finds in the messages read before it."""
        self._abort_error: LeapConnectionError | None = None
        self.last_received = time.monotonic()
        self._poller: Any = None
        self._want_write = False
        sock.setblocking(False)
        bound_unsent(sock)
        if _HAS_POLL:
            self._poller = select.poll()
            self._poller.register(sock, _POLLIN)
            self._poller.register(wakeup.fd, _POLLIN)

    @property
    def close_sent(self) -> bool:
        """Whether our close frame was written."""
        return self._writer.close_sent

    @property
    def data_written(self) -> bool:
        """Whether a data message was written whole to the socket: until then the peer
        cannot have read anything of ours, and its close is no verdict on it."""
        return self._writer.data_written

    # -- any thread --------------------------------------------------------------------

    def send(self, payload: Payload, binary: bool, *, urgent: bool = False) -> Outgoing:
        """Queue one data message (text for JSON, binary for ETF) and wake the owner.

        Returns at once; :meth:`Outgoing.wait` tells when it was written. Raises
        :class:`LeapConnectionError` once the connection is ending.
        """
        frame = _create_frame(payload, _OPCODE_BINARY if binary else _OPCODE_TEXT).format()
        item = self._queue(frame, urgent)
        if self._counters is not None:
            self._counters.sent_frame(len(frame))
        return item

    @property
    def queued_data(self) -> int:
        """Non-urgent frames queued so far: the next one is number ``queued_data + 1``
        (they are written in the order queued). Read it under the lock that orders
        the queueing."""
        return self._writer.queued_data

    def written_before(self, number: int) -> int | None:
        """How many non-urgent frames were written whole before urgent text/binary
        frame ``number`` (1-based, in the order queued: the protocol's own frames,
        heartbeats), if it was written and is among the latest few; else ``None``.
        (The I/O thread.)"""
        for urgent, written in self._writer.urgent_messages:
            if urgent == number:
                return written
        return None

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a websocket ping (urgent; the peer's pong, like anything it sends,
        counts in :attr:`last_received`)."""
        self._queue(_create_frame(payload[:125], _OPCODE_PING).format(), True)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close frame once (later calls do nothing); it goes ahead of data
        frames not yet started, and nothing follows it, not even a pong. A code no
        close frame may carry (1005, 1006, 1015...) goes as 1000; the reason is cut
        to 123 bytes at a character boundary (:func:`~leap_sync.wire.wsframes.close_payload`)."""
        if self.ended:
            return
        frame = _create_frame(close_payload(code, reason), _OPCODE_CLOSE).format()
        self._queue(frame, True, closing=True)

    def _queue(self, frame: bytes, urgent: bool, closing: bool = False) -> Outgoing:
        with self._lock:
            ended = self._ended or self._abort_error
        if ended is not None:
            raise ended.with_message(f"cannot send: {ended}")  # keeps the close code
        try:
            item = self._writer.queue(frame, urgent, closing=closing)
        except LeapConnectionError as exc:
            if urgent and not closing:
                self.abort(exc)  # control frames pile up: the peer is not reading
            raise
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
        Answers pings on the way. Raises :class:`LeapConnectionError` once the
        connection has ended; data messages that arrived before a close frame are
        returned first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = self._reader
        writer = self._writer
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
                if writer.pending and not self._flush():
                    continue
                if self._read_error is None and not self._read_eof and not (self._tls and self._pending()):
                    now = time.monotonic()
                    remaining = None if deadline is None else deadline - now
                    send_by = writer.send_deadline()
                    if send_by is not None and send_by <= now:
                        self.abort(
                            LeapConnectionError(f"cannot send: the socket stayed full for {self._send_timeout:g} s")
                        )
                        continue
                    if remaining is not None and remaining <= 0:
                        return []
                    wait = remaining
                    if send_by is not None and (wait is None or send_by - now < wait):
                        wait = send_by - now
                    readable, woken = self._poll(wait)
                    if woken and not readable:
                        if not self.ended and writer.pending:
                            self._flush()
                        if self.ended:
                            continue
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
                writer.pong(_create_frame(reader.pings[-1], _OPCODE_PONG).format())
                reader.pings = []
                self._flush()
            if reader.close is not None and self._ended is None:
                self._end_by_peer(*reader.close)
            if messages:
                return messages

    def _flush(self) -> bool:
        """Write what the socket takes; ``False`` (and the connection aborted) on a
        socket error."""
        try:
            self._writer.flush()
            return True
        except LeapConnectionError as exc:
            self.abort(exc)
            return False

    def _pending(self) -> int:
        return self._sock.pending()  # type: ignore[attr-defined, no-any-return]

    def _poll(self, timeout: float | None) -> tuple[bool, bool]:
        """Wait for readability, room to write (when a write is pending) or a wakeup;
        ``(readable, woken)``."""
        want_write = self._writer.pending
        if self._poller is not None:
            if want_write != self._want_write:
                self._poller.modify(self._sock, _POLLIN | (_POLLOUT if want_write else 0))
                self._want_write = want_write
            events = self._poller.poll(poll_ms(timeout))
        else:  # pragma: no cover - Windows
            sock_fd = self._sock.fileno()
            limit = None if timeout is None else min(timeout, MAX_WAIT)
            r, w, _ = select.select([sock_fd, self._wakeup.fd], [sock_fd] if want_write else [], [], limit)
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
        """One read; ``None`` when nothing was there after all.

        An end read together with data (the peer's EOF or TLS ``close_notify`` behind
        the bytes of a TLS read batch, or a bad record after good ones) is kept and
        raised by the next call, which :meth:`receive` makes at once, without polling:
        the socket may never turn readable again (a TLS peer that ended its session
        but keeps TCP open), so an end already read must not wait for it.
        """
        if self._read_error is not None:
            raise self._end(LeapConnectionError(f"connection lost: {self._read_error}"))
        if self._read_eof:
            raise self._end(LeapConnectionError("connection lost: closed without a close frame"))
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
                        except (OSError, ValueError) as exc:  # a bad record after good ones
                            self._read_error = exc  # reported by the next read, after these bytes
                            break
                        if not more:  # EOF or close_notify, read behind these bytes
                            self._read_eof = True
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

    def _end_by_peer(self, code: int | None, reason: str) -> None:
        # Echo the close (RFC 6455 section 5.5.1): its code (the reader let through only
        # codes a close frame may carry), 1000 for a close without one (1005 is never
        # sent). Then we are done with the socket. If we had closed first (fail()),
        # this is only the echo and our reason stands.
        self.send_close(1000 if code is None else code, "")
        self._writer.flush_for(1.0, self._wakeup.fd)
        error = LeapConnectionError(
            f"server closed the connection (code {code}{': ' + reason if reason else ''})",
            close_code=code,
            close_reason=reason,
        )
        if self._end(error) is error:
            self.peer_close = error

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
            self._writer.flush_for(1.0, self._wakeup.fd)
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
            ended = self._ended
        self._writer.close(ended)
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
