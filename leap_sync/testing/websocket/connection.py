"""One client connection of an embedded server, and the thread serving it, for any
protocol over websockets (the protocols' rules: :mod:`~leap_sync.testing.leap.connection`,
:mod:`~leap_sync.testing.elstat.connection`).

Every accepted TCP connection gets one daemon thread, ``leap-sync-server-...-conn``,
which alone touches its socket and its websockets sans-I/O
:class:`~websockets.server.ServerProtocol`: the TLS and HTTP opening handshake
(bounded by ``open_timeout``), then a poll loop that reads frames, hands each complete
message to the subclass (:meth:`WebSocketConnection.handle_message`), writes what the
connection's :class:`~leap_sync.testing.websocket.outbox.Outbox` holds as the socket accepts it,
and enforces the deadlines (the subclass's, the closing handshake's).

Other threads never write to the socket and never wait for this one: they queue frames
(:meth:`~WebSocketConnection.send_wire`) or post requests
(:meth:`~WebSocketConnection.request_close`, :meth:`~WebSocketConnection.cut`) and wake
the thread (:class:`~leap_sync.connection.wakeup.Wakeup`). So a client that stops reading stalls
nobody but itself: its queue grows to ``send_queue_limit`` bytes, and then it is shed
(closed with the subclass's ``slow_consumer_code``, its queued frames discarded, its
TCP connection cut if the close frame cannot be written within ``close_timeout``),
whatever frame overflowed it. Pongs never do: only the latest waits. A message of over
:data:`~leap_sync.testing.websocket.frames_in.MAX_FRAGMENTS` frames closes ``message_too_big_code``.
"""

from __future__ import annotations

import abc
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Any, ClassVar

from websockets.frames import Frame
from websockets.protocol import State
from websockets.server import ServerProtocol

from ...connection.wakeup import Wakeup
from .frames_in import MAX_FRAGMENTS, MessageAssembler, TooManyFragments, split_output
from .outbox import Batch, Outbox, Put
from .redaction import WEBSOCKETS_LOGGER
from .sockets import ConnectionHost, OutboxWriter, Settings, cut, fit_reason, open_websocket, shutdown_write

__all__ = ["MAX_FRAGMENTS", "WebSocketConnection"]

_log = logging.getLogger("leap_sync.testing")
_RECV_SIZE = 65536
_READS_PER_WAKE = 16  # fairness between reading and writing in one loop turn
_POLLER: type[selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.SelectSelector)


class WebSocketConnection(abc.ABC):
    """Server-side state of one websocket connection (see the module docstring).

    Subclasses give the protocol: :attr:`slow_consumer_code`, :meth:`handle_message`
    and, optionally, :meth:`handle_open`, :meth:`next_deadline` and
    :meth:`check_deadlines`, all run on the connection's thread.

    Attributes other threads read (under :attr:`lock` for a consistent snapshot):
    ``cid``, ``silent``, ``open``, ``close_code`` and the counters.
    """

    slow_consumer_code: ClassVar[int]
    """The close code of a client shed for not reading (its outbound queue overflowed)."""
    invalid_text_code: ClassVar[int] = 1007
    """The close code for a text frame that is not UTF-8."""
    message_too_big_code: ClassVar[int] = 1009
    """The close code for a message of more than :data:`MAX_FRAGMENTS` frames."""
    protocol_class: ClassVar[type[ServerProtocol]] = ServerProtocol
    """websockets' sans-I/O server protocol, made with ``max_size=max_message_size`` and
    the redacting :data:`~leap_sync.testing.websocket.redaction.WEBSOCKETS_LOGGER`."""

    def __init__(self, host: ConnectionHost[Any], settings: Settings, sock: socket.socket, cid: str, name: str) -> None:
        self.host = host
        self.settings = settings
        self.cid = cid
        self.lock = threading.Lock()  # guards the counters and subclass state; never held across I/O
        self.silent = False
        self.open = False
        """True from the end of the opening handshake until it starts closing (or is
        dropped): an open connection is served, a closing one only finishes."""
        self.close_code: int | None = None
        """The close code sent (or, for a close the client started, received); 1006
        for a connection that ended without a closing handshake."""
        self._left = False
        self.frames_in = 0
        self.frames_out = 0
        self.connected_at = time.monotonic()
        self.sequences: dict[str, list[int]] = {}
        self.outbox = Outbox(settings.send_queue_limit)

        self._raw = sock
        self._sock: socket.socket = sock
        self._ws = self.protocol_class(max_size=settings.max_message_size, logger=WEBSOCKETS_LOGGER)
        self._wakeup = Wakeup()
        self._woken = False
        self._close_request: tuple[int, str, bool] | None = None
        self._drop_requested = False
        self._closing_since: float | None = None
        self._shut_wr = False
        self._final_queued = False
        self._writer = OutboxWriter(self.outbox)
        self._assembler = MessageAssembler()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- the protocol's hooks (on the connection's thread) ---------------------------------

    def handle_open(self, path: str) -> None:  # noqa: B027 - optional hook
        """The upgrade to ``path`` is accepted (before its response is written and
        anything is read; the server then lists the connection)."""

    @abc.abstractmethod
    def handle_message(self, payload: str | bytes) -> None:
        """One complete client message: ``str`` for a text frame (valid UTF-8),
        ``bytes`` for a binary one. Call :meth:`begin_close` to close the connection."""

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`check_deadlines` must run next, if any."""
        return None

    def check_deadlines(self, now: float) -> None:  # noqa: B027 - optional hook
        """Enforce the protocol's deadlines (after every wake-up, while open and not
        silenced)."""

    # -- called from any thread --------------------------------------------------------

    def send_wire(self, data: bytes, *, count: int = 1, channel: str | None = None, seqs: tuple[int, ...] = ()) -> bool:
        """Queue complete frame bytes (``count`` messages; ``seqs`` of ``channel``
        recorded once written). ``False`` when silenced, closing, or when the queue
        overflowed (the connection is then shed)."""
        if self.silent:
            return False
        result = self.outbox.put(data, count=count, channel=channel, seqs=seqs)
        if result is Put.OVERFLOW:
            self.shed()
            return False
        if result is Put.QUEUED:
            with self.lock:  # counted when queued, so a snapshot taken after is exact
                self.frames_out += count
                if seqs and channel is not None:
                    self.sequences.setdefault(channel, []).extend(seqs)
            self.wake()
        return result is Put.QUEUED

    def request_close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code`` (after the frames queued before);
        returns at once. The first request wins."""
        self._post_close(code, reason, discard=False)

    def shed(self) -> None:
        """Close as a slow consumer, what is queued discarded (the queue overflowed)."""
        reason = f"slow consumer: over {self.settings.send_queue_limit} bytes queued"
        self._post_close(self.slow_consumer_code, reason, discard=True)

    def request_drop(self) -> None:
        """Cut the TCP connection without a close frame, once the frames queued before
        are handed to the socket, or at once when the socket takes no more (a client
        that stopped reading: what is still queued is lost). Returns at once."""
        self._drop_requested = True
        self._leave(1006)
        self.wake()

    def cut(self) -> None:
        """Cut the TCP connection now, from any thread (what is queued is lost)."""
        self._leave(1006)
        cut(self._raw)

    def start(self) -> bool:
        """Start the connection's thread; ``False`` (and the socket closed) when no
        thread can be started."""
        try:
            self.thread.start()
        except RuntimeError:
            self._raw.close()
            self._wakeup.close()
            return False
        return True

    def wake(self) -> None:
        """Make the connection's thread re-read its flags and deadlines."""
        if not self._woken:
            self._woken = True
            self._wakeup.notify()  # ignored once torn down

    def _post_close(self, code: int, reason: str, *, discard: bool) -> None:
        with self.lock:
            first = self._close_request is None and not self._left
            if first:
                self._close_request = (code, reason, discard)
        if first:
            self._leave(code)
        self.wake()

    def _leave(self, code: int) -> None:
        """Stop being open (once): record ``code`` unless one is recorded, and tell
        the server, which stops serving this connection."""
        with self.lock:
            if self._left:
                return
            self._left = True
            self.open = False
            if self.close_code is None:
                self.close_code = int(code)  # a plain int, whatever enum it came as
        self.host.connection_left(self)

    # -- the connection's thread ---------------------------------------------------------

    def begin_close(self, code: int, reason: str, *, discard: bool = False) -> None:
        """Start the closing handshake with ``code`` (``discard``: drop what is queued
        first). Connection's thread only; later calls do nothing."""
        if self._closing_since is not None:
            return
        self._closing_since = time.monotonic()
        self.outbox.close()
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, fit_reason(reason))
        self._leave(code)
        self._queue_protocol_output(discard=discard)

    def _run(self) -> None:
        try:
            events = open_websocket(
                self._raw, self._ws, self.settings, self.host.http_refusal, self._wrapped, self._accepted
            )
            if events is None:
                return
            self._sock.setblocking(False)
            self._loop(events)
        except OSError:
            pass  # the socket failed: the connection is over
        except Exception:
            # A bug, or an exception from a hook: this connection ends (1011 when a
            # close frame can still go out); the server goes on.
            _log.error("connection %s failed", self.cid, exc_info=True)
            self._abort()
        finally:
            self._teardown()

    def _accepted(self, path: str) -> bool:
        """The upgrade is accepted, its response not yet written: set up, and join the
        server (a client that sees the upgrade finds its connection listed). ``False``
        when cut meanwhile."""
        self.handle_open(path)
        with self.lock:
            if self._left:
                return False
            self.open = True
        self.host.connection_opened(self)
        return True

    def _wrapped(self, sock: socket.socket) -> None:
        self._raw = self._sock = sock  # wrap_socket detached the plain socket

    def _loop(self, events: list[Any]) -> None:
        self._receive(events)
        with _POLLER() as poller:
            poller.register(self._wakeup.fd, selectors.EVENT_READ)
            poller.register(self._sock, selectors.EVENT_READ)
            interest = selectors.EVENT_READ
            more_to_read = False
            while True:
                self._take_request()
                if not self._flush() or self._drop_requested:
                    return  # the socket failed, or it is dropped (cut in _teardown)
                if self._ws.eof_sent and not self._shut_wr and not self._writer.pending:
                    self._shut_wr = True
                    shutdown_write(self._sock)
                now = time.monotonic()
                if self._ws.state is State.CLOSED or (
                    self._closing_since is not None and now > self._closing_since + self.settings.close_timeout
                ):
                    return
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._writer.pending else 0)
                if wanted != interest:
                    poller.modify(self._sock, wanted)
                    interest = wanted
                ready = poller.select(0 if more_to_read else self._timeout(now))
                if any(key.fd == self._wakeup.fd for key, _ in ready):
                    self._wakeup.clear()
                    self._woken = False  # after draining: a wake since then sent a byte
                readable = more_to_read or any(
                    key.fileobj is self._sock and mask & selectors.EVENT_READ for key, mask in ready
                )
                more_to_read = readable and self._read()
                if not self.silent and self._closing_since is None:
                    self.check_deadlines(time.monotonic())

    def _timeout(self, now: float) -> float | None:
        if self._closing_since is not None:
            deadline: float | None = self._closing_since + self.settings.close_timeout
        else:
            deadline = None if self.silent else self.next_deadline()
        return None if deadline is None or deadline == float("inf") else max(deadline - now, 0.0)

    def _read(self) -> bool:
        """Read what the socket holds now; whether more may be waiting."""
        for _ in range(_READS_PER_WAKE):
            try:
                data = self._sock.recv(_RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError:
                data = b""
            if not data:
                self._ws.receive_eof()
                self._receive(self._ws.events_received())
                return False
            self._ws.receive_data(data)
            self._receive(self._ws.events_received())
        return True

    def _receive(self, events: list[Any]) -> None:
        for frame in events:
            try:
                if isinstance(frame, Frame) and (message := self._assembler.feed(frame)) is not None:
                    self._message(*message)
            except TooManyFragments as exc:
                self.begin_close(self.message_too_big_code, str(exc))
        self._queue_protocol_output(discard=False)

    def _message(self, data: bytes, binary: bool) -> None:
        with self.lock:
            self.frames_in += 1
        if self.silent or self._closing_since is not None:
            self.host.connection_changed()  # frames_in changed
            return
        payload: str | bytes = data
        if not binary:
            try:
                payload = data.decode("utf-8")
            except UnicodeDecodeError:
                self.begin_close(self.invalid_text_code, "invalid UTF-8 in a text frame")
                return
        self.handle_message(payload)

    def _take_request(self) -> None:
        with self.lock:
            request, self._close_request = self._close_request, None
        if request is not None:
            code, reason, discard = request
            self.begin_close(code, reason, discard=discard)

    def _queue_protocol_output(self, *, discard: bool) -> None:
        """Queue what websockets' protocol has to send: the latest pong (in the
        outbox's pong slot; older ones are dropped, as RFC 6455 allows), and the close
        frame, which closes the outbox to data frames (``discard``: drops what is
        queued) and after which no pong is sent."""
        pong, data = split_output(self._ws.data_to_send())  # EOF markers: see _loop
        sent = self._ws.close_sent
        if sent is not None and not self._final_queued:
            self._final_queued = True
            if self._closing_since is None:
                # The client started the closing handshake (its code is recorded), or
                # websockets failed the connection (a protocol error: ours is).
                self._closing_since = time.monotonic()
                rcvd = self._ws.close_rcvd
                self._leave(rcvd.code if rcvd is not None else sent.code)
            self._unrecord(self.outbox.put_final(data, discard=discard))
        elif pong is not None and not self._final_queued:
            self.outbox.put_pong(pong)

    def _flush(self) -> bool:
        """Write as much as the socket takes now; ``False`` when the socket failed."""
        ok, frames = self._writer.flush(self._sock)
        if frames and self.host.waiting:
            self.host.connection_changed()  # ``queued`` changed
        return ok

    def _unrecord(self, unwritten: list[Batch]) -> None:
        """Uncount frames counted when queued but never written (and their sequence
        numbers, the last recorded for their channel)."""
        if not unwritten:
            return
        with self.lock:
            for batch in unwritten:
                self.frames_out -= batch.frames
                for channel, seqs in batch.sequences:
                    recorded = self.sequences.get(channel)
                    if recorded:
                        del recorded[-len(seqs) :]
        self.host.connection_changed()

    def _abort(self) -> None:
        """Best effort: a 1011 close frame, written without waiting."""
        if self._ws.state is State.OPEN and not self._writer.mid_batch:
            self._leave(1011)
            self._ws.send_close(1011, "internal error")
            try:
                self._sock.send(b"".join(self._ws.data_to_send()))
            except (OSError, ValueError):
                pass

    def _teardown(self) -> None:
        rcvd = self._ws.close_rcvd
        self._leave(rcvd.code if rcvd is not None else 1006)
        self._unrecord(self._writer.discard())
        cut(self._raw)
        self._sock.close()
        self._raw.close()
        self._wakeup.close()
        self.host.connection_closed(self)
