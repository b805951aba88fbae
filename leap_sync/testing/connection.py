"""One client connection of the embedded Leap Edge server, and the thread serving it.

Every accepted TCP connection gets one daemon thread, ``leap-sync-server-<n>-conn``,
which alone touches its socket and its websockets sans-I/O
:class:`~websockets.server.ServerProtocol`: the TLS and HTTP opening handshake
(bounded by ``open_timeout``), then a poll loop that reads frames, applies the
connection rules (:class:`~leap_sync.protocol.server_session.ServerSession`), hands
each client frame to the server's business logic, writes what the connection's
:class:`~leap_sync.testing.outbox.Outbox` holds as the socket accepts it, and enforces
the deadlines (identify, heartbeats, tagged requests, the closing handshake).

Other threads never write to the socket and never wait for this one: they queue frames
(:meth:`Connection.send_wire`) or post requests (:meth:`Connection.request_close`,
:meth:`Connection.cut`) and wake the thread through a socket pair. So a client that
stops reading stalls nobody but itself: its queue grows to ``send_queue_limit`` bytes,
and then it is shed (closed with :data:`SLOW_CONSUMER_CLOSE_CODE`, its queued frames
discarded, its TCP connection cut if the close frame cannot be written within
``close_timeout``).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..protocol.codec import Codec
from ..protocol.models import ClientHeartbeat, Identify
from ..protocol.opcodes import CloseCode
from ..protocol.server_session import ServerClose, ServerSession
from ..protocol.wsframes import unmasked_message
from .outbox import Batch, Outbox, Put
from .sockets import ConnectionHost, Settings, cut, fit_reason, open_websocket

if TYPE_CHECKING:
    from .model import Session

__all__ = ["SLOW_CONSUMER_CLOSE_CODE", "Connection"]

SLOW_CONSUMER_CLOSE_CODE = CloseCode.UNKNOWN
"""The close code of a client shed for not reading (its outbound queue overflowed):
4000, Leap Edge's "unknown error, try reconnecting", which every Leap client answers
by reconnecting; the reason says ``slow consumer``."""

_log = logging.getLogger("leap_sync.testing")
_RECV_SIZE = 65536
_WRITE_CHUNK = 256 * 1024
_READS_PER_WAKE = 16  # fairness between reading and writing in one loop turn
_POLLER: type[selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.SelectSelector)


class Connection:
    """Server-side state of one websocket connection (see the module docstring).

    Attributes other threads read (under :attr:`lock` for a consistent snapshot):
    ``cid``, ``encoding``, ``compression``, ``identify``, ``session``, ``silent``,
    ``open``, ``close_code`` and the counters.
    """

    def __init__(self, host: ConnectionHost, settings: Settings, sock: socket.socket, cid: str, name: str) -> None:
        self.host = host
        self.settings = settings
        self.cid = cid
        self.lock = threading.Lock()  # guards ``rules`` and the counters; never held across I/O
        self.encoding = "json"
        self.compression = "none"
        self.rules: ServerSession | None = None
        self.identify: Identify | None = None
        self.session: Session | None = None
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
        self.heartbeats = 0
        self.last_heartbeat: float | None = None
        self.connected_at = time.monotonic()
        self.sequences: dict[str, list[int]] = {}
        self.outbox = Outbox(settings.send_queue_limit)

        self._raw = sock
        self._sock: socket.socket = sock
        self._ws = ServerProtocol(max_size=settings.max_message_size)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._close_request: tuple[int, str, bool] | None = None
        self._drop_requested = False
        self._closing_since: float | None = None
        self._shut_wr = False
        self._final_queued = False
        self._partial: memoryview | None = None
        self._batch: Batch | None = None
        self._later: list[tuple[float, bytes]] = []  # (due, frame): delayed acks, in order
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- called from any thread --------------------------------------------------------

    def encode(self, frame: dict[str, Any]) -> bytes:
        """``frame`` as one complete websocket message in this connection's encoding
        and compression. Raises :class:`~leap_sync.errors.LeapEncodeError`."""
        assert self.rules is not None
        payload, _binary = self.rules.encode(frame)
        return unmasked_message(payload)

    def send(self, frame: dict[str, Any]) -> bool:
        """Encode and queue one frame; ``False`` when it was not queued."""
        return self.send_wire(self.encode(frame))

    def send_wire(self, data: bytes, *, count: int = 1, channel: str | None = None, seqs: tuple[int, ...] = ()) -> bool:
        """Queue complete frame bytes (``count`` messages; ``seqs`` of ``channel``
        recorded once written). ``False`` when silenced, closing, or when the queue
        overflowed (the connection is then shed)."""
        if self.silent:
            return False
        result = self.outbox.put(data, count=count, channel=channel, seqs=seqs)
        if result is Put.OVERFLOW:
            limit = self.settings.send_queue_limit
            self._post_close(SLOW_CONSUMER_CLOSE_CODE, f"slow consumer: over {limit} bytes queued", discard=True)
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

    def send_later(self, frame: dict[str, Any], delay: float) -> None:
        """Queue ``frame`` ``delay`` seconds from now (connection's thread only)."""
        self._later.append((time.monotonic() + delay, self.encode(frame)))

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

    def start(self) -> None:
        self.thread.start()

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
                self.close_code = code
        self.host.connection_left(self)

    def wake(self) -> None:
        """Make the connection's thread re-read its flags and deadlines."""
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # already woken (buffer full) or torn down

    # -- the connection's thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            events = self._handshake()
            if events is None:
                return
            with self.lock:
                if self._left:
                    return  # cut while handshaking
                self.open = True
            self.host.connection_opened(self)
            self._loop(events)
        except OSError:
            pass  # the socket failed: the connection is over
        except Exception:
            # A bug, or an exception from ``on_frame``: this connection ends (1011
            # when a close frame can still go out); the server goes on.
            _log.error("connection %s failed", self.cid, exc_info=True)
            self._abort()
        finally:
            self._teardown()

    def _handshake(self) -> list[Any] | None:
        """TLS, then the HTTP upgrade; the frames that came with the request, or
        ``None`` when the connection ends here."""
        opened = open_websocket(self._raw, self._ws, self.settings, self.host.http_refusal, self._wrapped)
        if opened is None:
            return None
        path, events = opened
        self._setup(path)
        self._sock.setblocking(False)
        return events

    def _wrapped(self, sock: socket.socket) -> None:
        self._raw = self._sock = sock  # wrap_socket detached the plain socket

    def _setup(self, path: str) -> None:
        import urllib.parse

        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        self.encoding = query.get("encoding", "json")
        self.compression = query.get("compression", "none")
        s = self.settings
        self.rules = ServerSession(
            Codec(self.encoding, max_size=s.max_message_size),
            interval=s.interval,
            identify_timeout=s.identify_timeout,
            now=time.monotonic(),
            tolerance=s.tolerance,
            request_timeout=s.request_timeout,
            compression=self.compression == "zlib",
            strict=s.strict_heartbeats,
        )

    def _loop(self, events: list[Any]) -> None:
        self._receive(events)
        with _POLLER() as poller:
            poller.register(self._wake_r, selectors.EVENT_READ)
            poller.register(self._sock, selectors.EVENT_READ)
            interest = selectors.EVENT_READ
            more_to_read = False
            while True:
                self._take_request()
                self._release_later(time.monotonic())
                if not self._flush() or self._drop_requested:
                    return  # the socket failed, or it is dropped (cut in _teardown)
                if self._ws.eof_sent and self._partial is None and not self.outbox.queued:
                    self._shutdown_write()
                now = time.monotonic()
                if self._ws.state is State.CLOSED or (
                    self._closing_since is not None and now > self._closing_since + self.settings.close_timeout
                ):
                    return
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._partial or self.outbox.queued else 0)
                if wanted != interest:
                    poller.modify(self._sock, wanted)
                    interest = wanted
                ready = poller.select(0 if more_to_read else self._timeout(now))
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    self._drain_wake()
                    self._woken = False  # after draining: a wake since then sent a byte
                readable = more_to_read or any(
                    key.fileobj is self._sock and mask & selectors.EVENT_READ for key, mask in ready
                )
                more_to_read = readable and self._read()
                self._check_time()

    def _release_later(self, now: float) -> None:
        while self._later and self._later[0][0] <= now:
            self.send_wire(self._later.pop(0)[1])

    def _timeout(self, now: float) -> float | None:
        deadlines = [self._later[0][0]] if self._later else []
        if self._closing_since is not None:
            deadlines.append(self._closing_since + self.settings.close_timeout)
        elif not self.silent and self.rules is not None:
            with self.lock:
                self.rules.check_heartbeats = self.host.enforcing_heartbeats
                deadlines.append(self.rules.deadline)
        earliest = min(deadlines, default=float("inf"))
        return None if earliest == float("inf") else max(earliest - now, 0.0)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError)

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
            if not isinstance(frame, Frame):
                continue
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._fragments = [bytes(frame.data)]
                self._fragment_binary = frame.opcode is Opcode.BINARY
            elif frame.opcode is Opcode.CONT:
                self._fragments.append(bytes(frame.data))
            else:
                continue  # ping (answered by the protocol), pong, close
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._message(data, self._fragment_binary)
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
                self._begin_close(1007, "invalid UTF-8 in a text frame", discard=False)
                return
        assert self.rules is not None
        now = time.monotonic()
        try:
            with self.lock:
                self.rules.check_heartbeats = self.host.enforcing_heartbeats
                frame, replies = self.rules.receive(payload, binary, now)
                if isinstance(frame, ClientHeartbeat) and frame.tag is None:
                    self.heartbeats += 1
                    self.last_heartbeat = now
            self.host.connection_frame(self, frame, replies)
        except ServerClose as close:
            self._begin_close(close.code, close.reason, discard=False)

    def _check_time(self) -> None:
        if self.silent or self._closing_since is not None or self.rules is None:
            return
        try:
            with self.lock:
                self.rules.check_heartbeats = self.host.enforcing_heartbeats
                self.rules.check(time.monotonic())
        except ServerClose as close:
            self._begin_close(close.code, close.reason, discard=False)

    def _take_request(self) -> None:
        with self.lock:
            request, self._close_request = self._close_request, None
        if request is not None:
            code, reason, discard = request
            self._begin_close(code, reason, discard=discard)

    def _begin_close(self, code: int, reason: str, *, discard: bool) -> None:
        if self._closing_since is not None:
            return
        self._closing_since = time.monotonic()
        self.outbox.close()
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, fit_reason(reason))
        self._leave(code)
        self._queue_protocol_output(discard=discard)

    def _queue_protocol_output(self, *, discard: bool) -> None:
        """Queue what websockets' protocol has to send: pongs, and the close frame,
        which closes the outbox to data frames (``discard``: drops what is queued)."""
        data = b"".join(self._ws.data_to_send())  # EOF markers are b"": see _loop
        if self._ws.close_sent is not None and not self._final_queued:
            self._final_queued = True
            if self._closing_since is None:
                self._closing_since = time.monotonic()  # the client started the closing handshake
                rcvd = self._ws.close_rcvd
                self._leave(rcvd.code if rcvd is not None else 1006)
            self._unrecord(self.outbox.put_final(data, discard=discard))
        elif data:
            self.outbox.put(data, count=0)  # a pong: dropped with the rest if the queue is full

    def _flush(self) -> bool:
        """Write as much as the socket takes now; ``False`` when the socket failed."""
        while True:
            if self._partial is None:
                self._batch = self.outbox.take(_WRITE_CHUNK)
                if self._batch is None:
                    return True
                self._partial = memoryview(self._batch.data)
            try:
                sent = self._sock.send(self._partial)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return True
            except OSError:
                return False
            self._partial = self._partial[sent:]
            if not self._partial:
                self._partial = None
                self._written(self._batch)

    def _written(self, batch: Batch | None) -> None:
        if batch is not None and batch.frames and self.host.waiting:
            self.host.connection_changed()  # ``queued`` changed

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

    def _shutdown_write(self) -> None:
        if not self._shut_wr:
            self._shut_wr = True
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except (OSError, ValueError):
                pass

    def _abort(self) -> None:
        """Best effort: a 1011 close frame, written without waiting."""
        if self._ws.state is State.OPEN and self._partial is None:
            self._leave(1011)
            self._ws.send_close(1011, "internal error")
            try:
                self._sock.send(b"".join(self._ws.data_to_send()))
            except (OSError, ValueError):
                pass

    def _teardown(self) -> None:
        rcvd = self._ws.close_rcvd
        self._leave(rcvd.code if rcvd is not None else 1006)
        unwritten = self.outbox.discard()
        if self._partial is not None and self._batch is not None:
            unwritten.insert(0, self._batch)
        self._unrecord(unwritten)
        cut(self._raw)
        for sock in (self._sock, self._raw, self._wake_r, self._wake_w):
            sock.close()
        self.host.connection_closed(self)
