"""The write side of a :class:`~leap_sync.connection.transport.Transport`: frames any thread
queues, written by the owner thread as the socket takes them, never blocking it.

Order: the pong due (only the latest ping is answered, RFC 6455 section 5.5.3), then
*urgent* frames (heartbeats, answers to tagged requests, the close frame), then data
frames, each in the order queued; a frame once started is finished before the next.
Nothing follows our close frame (no pong either). Urgent frames are bounded (:data:`MAX_URGENT`): a peer
that lets them pile up is not reading.
"""

from __future__ import annotations

import collections
import select
import socket
import ssl
import threading
import time

from ..errors import LeapConnectionError

__all__ = ["MAX_URGENT", "FrameWriter", "Outgoing"]

MAX_URGENT = 1024
"""Most urgent frames queued at once; beyond it the peer is not reading."""
_HAS_POLL = hasattr(select, "poll")
_OPCODE_CLOSE = 0x8
_DATA_OPCODES = (0x1, 0x2)  # text, binary


class Outgoing:
    """A queued frame; :meth:`wait` blocks until it is written (or failed)."""

    __slots__ = ("_done", "data", "error", "queued_at", "urgent")

    def __init__(self, data: bytes, queued_at: float, urgent: bool = True) -> None:
        self.data = data
        self.queued_at = queued_at
        self.urgent = urgent
        self.error: LeapConnectionError | None = None
        self._done = threading.Event()

    def wait(self, timeout: float | None) -> bool:
        """Whether the frame was handled (written, or failed: see :attr:`error`)."""
        return self._done.wait(timeout)

    def finish(self, error: LeapConnectionError | None = None) -> None:
        if not self._done.is_set():
            self.error = error
            self._done.set()


class FrameWriter:
    """Queues (any thread) and writes (the owner) the frames of one socket."""

    def __init__(self, sock: socket.socket, send_timeout: float) -> None:
        self._sock = sock
        self._send_timeout = send_timeout
        self._lock = threading.Lock()
        self._urgent: collections.deque[Outgoing] = collections.deque()
        self._data: collections.deque[Outgoing] = collections.deque()
        self._pong: Outgoing | None = None
        self._writing: memoryview | None = None
        self._current: Outgoing | None = None
        self._closed: LeapConnectionError | None = None  # no more frames: why
        self.close_queued = False
        self.close_sent = False
        """Whether our close frame was written."""
        self.data_written = False
        """Whether a data frame (text or binary) was written whole."""
        self.queued_data = 0
        """Non-urgent frames queued so far (they are written in this order)."""
        self.written_data = 0
        """Non-urgent frames written whole so far."""
        self.urgent_messages: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        """For the latest urgent text/binary frames written, in write order: ``(their
        number among those frames, 1-based; how many non-urgent frames were written
        before them)``: what the peer read before them (write order)."""
        self._urgent_messages = 0

    # -- any thread --------------------------------------------------------------------

    def queue(self, frame: bytes, urgent: bool, *, closing: bool = False) -> Outgoing:
        """Queue a formatted frame. Raises :class:`LeapConnectionError` once the
        connection is ending, after our close frame, or when urgent frames pile up
        (the peer is not reading: the caller should end the connection)."""
        item = Outgoing(frame, time.monotonic(), urgent)
        with self._lock:
            if self._closed is not None:
                raise self._closed.with_message(f"cannot send: {self._closed}")
            if closing:
                if self.close_queued:
                    item.finish()
                    return item
                self.close_queued = True
            elif self.close_queued:
                raise LeapConnectionError("cannot send: the connection is closing")
            if not urgent:
                self._data.append(item)
                self.queued_data += 1
            elif len(self._urgent) < MAX_URGENT:
                self._urgent.append(item)
            else:
                raise LeapConnectionError(
                    f"cannot send: {MAX_URGENT} control frames wait for a peer that does not read"
                )
        return item

    # -- the owner ---------------------------------------------------------------------

    def pong(self, frame: bytes) -> None:
        """The pong due now (it replaces one not yet started); none once our close
        frame is queued (nothing follows a close frame, RFC 6455 section 5.5.1)."""
        if not self.close_queued:
            self._pong = Outgoing(frame, time.monotonic())

    @property
    def pending(self) -> bool:
        """Whether something waits to be written."""
        return self._writing is not None or self._pong is not None or bool(self._urgent or self._data)

    def send_deadline(self) -> float | None:
        """When the frame being written (or next) has waited ``send_timeout``."""
        item = self._current
        if item is None:
            item = self._urgent[0] if self._urgent else (self._data[0] if self._data else None)
        return None if item is None else item.queued_at + self._send_timeout

    def flush(self) -> None:
        """Write until the socket is full or nothing is left (never blocks). Raises
        :class:`LeapConnectionError` for a socket error."""
        sock = self._sock
        while True:
            if self._writing is None:
                item = self._next()
                if item is None:
                    return
                self._current = item
                self._writing = memoryview(item.data)
            try:
                sent = sock.send(self._writing)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except (OSError, ValueError) as exc:
                raise LeapConnectionError(f"cannot send: {exc}") from None
            self._writing = self._writing[sent:]
            if not self._writing:
                done, self._writing, self._current = self._current, None, None
                if done is not None:
                    opcode = done.data[0] & 0x0F
                    if opcode == _OPCODE_CLOSE:
                        self.close_sent = True
                    elif opcode in _DATA_OPCODES:
                        self.data_written = True
                        if not done.urgent:
                            self.written_data += 1
                        else:  # (pongs, pings, close frames are not text/binary)
                            self._urgent_messages += 1
                            self.urgent_messages.append((self._urgent_messages, self.written_data))
                    done.finish()

    def _next(self) -> Outgoing | None:
        if self.close_queued:
            self._pong = None  # a pong due when our close was queued goes no more
        if self._pong is not None:
            pong, self._pong = self._pong, None
            return pong
        with self._lock:
            if self._urgent:
                return self._urgent.popleft()
            if self._data and not self.close_sent:
                return self._data.popleft()
        return None

    def flush_for(self, timeout: float, wakeup_fd: int | None = None) -> None:
        """Try for at most ``timeout`` seconds to write the urgent frames (a close
        frame before the connection ends); errors end the attempt quietly, and so does
        ``wakeup_fd`` turning readable (``close()`` wants the thread now)."""
        deadline = time.monotonic() + timeout
        while self._writing is not None or self._urgent or self._pong is not None:
            try:
                self.flush()
            except LeapConnectionError:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not (self._writing is not None or self._urgent or self._pong is not None):
                return
            if _HAS_POLL:
                poller = select.poll()
                poller.register(self._sock, select.POLLOUT)
                if wakeup_fd is not None:
                    poller.register(wakeup_fd, select.POLLIN)
                events = poller.poll(min(2**31 - 1, int(remaining * 1000) + 1))
                if any(fd == wakeup_fd for fd, _ in events):
                    return
            else:  # pragma: no cover - Windows
                readable, _, _ = select.select([] if wakeup_fd is None else [wakeup_fd], [self._sock], [], remaining)
                if readable:
                    return

    def close(self, error: LeapConnectionError) -> None:
        """No more frames: fail every queued one with ``error``."""
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending = [*self._urgent, *self._data]
            self._urgent.clear()
            self._data.clear()
        current, self._current, self._writing = self._current, None, None
        for item in [current, *pending] if current is not None else pending:
            item.finish(error.with_message(f"cannot send: {error}"))
