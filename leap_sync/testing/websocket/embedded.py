"""What every embedded server shares, whatever protocol it speaks.

:class:`EmbeddedServer` binds and accepts (:mod:`~leap_sync.testing.websocket.listener`), gives
each connection its own thread (a :class:`~leap_sync.testing.websocket.connection.WebSocketConnection`
made by the subclass), keeps the open connections by cid and the last ``history_limit``
closed ones (so a server that runs for days under a reconnect loop stays the same
size: older closed connections are forgotten, their frame counts kept as totals),
lets tests wait for a condition, injects the faults every protocol has (a close
with any code, a TCP cut, a raw frame), and closes it all.

Locks: ``_lock`` (re-entrant) guards the registry and whatever the subclass keeps with
it, and is held only to copy or queue, never across socket I/O; every change a test
may wait for bumps a version under a separate condition, so waiting never holds
``_lock``; ``_live_lock`` guards the threads to join on :meth:`EmbeddedServer.close`.
"""

from __future__ import annotations

import abc
import collections
import itertools
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from ...errors import LeapError
from ...protocol.codec import Payload
from ...wire.wsframes import unmasked_message
from .connection import WebSocketConnection
from .listener import Listener, bind
from .redaction import register_secrets
from .sockets import Settings, check_close

__all__ = ["DEFAULT_HISTORY_LIMIT", "RECHECK", "EmbeddedServer", "Inspectable"]

DEFAULT_HISTORY_LIMIT = 1000
"""Closed connections a server keeps listed (``all_connections``) by default."""

RECHECK = 0.05
"""Seconds between re-checks of a wait's condition when nothing changed."""
_GOING_AWAY = 1001
_server_numbers = itertools.count(1)  # thread names only

ConnT = TypeVar("ConnT", bound=WebSocketConnection)
InfoT = TypeVar("InfoT")
_S = TypeVar("_S", bound="EmbeddedServer[Any]")


class EmbeddedServer(abc.ABC, Generic[ConnT]):
    """An embedded server on ``host:port`` (see the module docstring). Subclasses make
    connections (:meth:`_new_connection`) and refuse upgrade requests
    (:meth:`http_refusal`). Threads: ``<thread_prefix>-<n>`` accepts, and each
    connection gets one named ``<thread_prefix>-<n>-conn``. Nothing starts until
    :meth:`start`."""

    def __init__(
        self, host: str, port: int, settings: Settings, thread_prefix: str, history_limit: int = DEFAULT_HISTORY_LIMIT
    ) -> None:
        self.host = host
        self._port = port
        self._settings = settings
        self._thread_name = f"{thread_prefix}-{next(_server_numbers)}"
        self._listener: Listener | None = None
        # Every accepted connection until its thread ends, handshaking ones included.
        # A lock of its own: close() reaches them without the model lock.
        self._live_lock = threading.Lock()
        self._live: set[ConnT] = set()
        self._closing = False
        # Held by the one close() running: another close() (any thread) waits for it.
        self._close_lock = threading.Lock()
        self._lock = threading.RLock()
        self._conns: dict[str, ConnT] = {}
        """Open connections (past the opening handshake), by cid, oldest first."""
        self._history: dict[str, ConnT] = {}
        """The connections listed by ``all_connections``: the open ones and the last
        ``history_limit`` closed ones, by cid, oldest first (in the order they opened)."""
        self._history_limit = history_limit
        self._closed: collections.deque[ConnT] = collections.deque()
        """The closed connections of ``_history``, in the order they closed."""
        self._retired_in = 0
        self._retired_out = 0
        """Frame counts of the closed connections forgotten (no longer in ``_history``)."""
        self._changes = threading.Condition(threading.Lock())
        self._version = 0
        self._waiters = 0
        register_secrets(self)  # kept out of the servers' logs while this server lives

    def log_secrets(self) -> Iterable[str]:
        """The secrets the servers' logs never show (see
        ``leap_sync.testing.websocket.redaction``); none here, a subclass's
        credentials (a Leap server's tokens). Lock-free: it runs inside logging calls."""
        return ()

    @abc.abstractmethod
    def _new_connection(self, sock: socket.socket, cid: str, name: str) -> ConnT:
        """A connection (not started) serving the accepted ``sock``."""

    @abc.abstractmethod
    def http_refusal(self, path: str) -> tuple[int, str] | None:
        """``(status, text)`` to refuse an upgrade request for ``path``, or ``None``."""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Bind and start accepting. Raises ``OSError`` when the address cannot be
        bound, :class:`~leap_sync.LeapError` when running. A :meth:`close` running on another
        thread is waited for first."""
        with self._close_lock:
            if self._listener is not None:
                raise LeapError("the server is already running")
            sock = bind(self.host, self._port)
            self._port = sock.getsockname()[1]
            with self._live_lock:
                self._closing = False
            self._listener = Listener(sock, self._accept, self._thread_name)
            self._listener.start()
        return self

    def close(self) -> None:
        """Stop: close every connection (1001), join every thread. Idempotent, from
        any number of threads at once: every call returns once the server is closed
        (the first does the work, the others wait for it), never before.

        Connections still in the opening handshake are cut at once; the others get a
        close frame after what was queued for them, and those that do not finish the
        closing handshake within ``close_timeout`` (a client that stopped reading) are
        cut, so ``close()`` returns within about ``close_timeout`` at worst, at once
        when every client answers. Not from a connection's thread."""
        with self._close_lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                self._close(listener)

    def _close(self, listener: Listener) -> None:
        """The work of :meth:`close` (under ``_close_lock``)."""
        listener.close()
        with self._live_lock:
            self._closing = True
            live = list(self._live)
        for conn in live:
            if conn.open:
                conn.request_close(_GOING_AWAY, "")  # silenced connections too
            else:
                conn.cut()
        deadline = time.monotonic() + self._settings.close_timeout + 0.5
        for conn in live:
            conn.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [conn for conn in live if conn.thread.is_alive()]
        for conn in stuck:
            conn.cut()
        for conn in stuck:
            conn.thread.join(2.0)

    def __enter__(self: _S) -> _S:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the server was started and not closed."""
        return self._listener is not None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    def _address(self, scheme: str, path: str = "") -> str:
        """``scheme://host:port/path``, with ``s`` added to the scheme under TLS and
        an IPv6 host in brackets."""
        secure = "s" if self._settings.ssl_context is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}{secure}://{host}:{self._port}{path}"

    def _accept(self, sock: socket.socket) -> None:
        """Serve a new TCP connection (on the listener's thread). Raises what setting
        it up raised (no descriptor for its wakeup...), with nothing left behind but
        ``sock``, which the listener then closes. The thread starts under
        ``_live_lock``, so :meth:`close` never meets a connection not started."""
        with self._live_lock:
            if self._closing:
                sock.close()
                return
            conn = self._new_connection(sock, f"conn_{secrets.token_hex(8)}", f"{self._thread_name}-conn")
            if conn.start():  # else no thread to be had: the connection is refused
                self._live.add(conn)

    # -- connection hooks ----------------------------------------------------------------

    def connection_opened(self, conn: ConnT) -> None:
        self._register(conn)

    def _register(self, conn: ConnT) -> bool:
        """Serve ``conn`` from now on; ``False`` when it left already (the server is
        closing)."""
        with self._lock:
            if not conn.open:
                return False
            self._conns[conn.cid] = conn
            self._history[conn.cid] = conn
        self.connection_changed()
        return True

    def connection_left(self, conn: ConnT) -> None:
        with self._lock:
            if self._conns.get(conn.cid) is conn:
                del self._conns[conn.cid]
        self.connection_changed()

    def connection_closed(self, conn: ConnT) -> None:
        with self._live_lock:
            self._live.discard(conn)
        with self._lock:  # its last counters and close code are final: history now
            if self._history.get(conn.cid) is conn:
                self._closed.append(conn)
                while len(self._closed) > self._history_limit:
                    old = self._closed.popleft()
                    del self._history[old.cid]
                    with old.lock:
                        self._retired_in += old.frames_in
                        self._retired_out += old.frames_out
        self.connection_changed()

    @property
    def history_limit(self) -> int:
        """How many closed connections the server keeps listed."""
        return self._history_limit

    def _listed(self) -> list[ConnT]:
        """The open and the last ``history_limit`` closed connections, oldest first
        (call under ``_lock``)."""
        return list(self._history.values())

    def _frame_totals(self) -> tuple[int, int]:
        """Messages received from and sent to clients over every connection since the
        start, forgotten ones included (call under ``_lock``)."""
        frames_in, frames_out = self._retired_in, self._retired_out
        for conn in self._history.values():
            with conn.lock:
                frames_in += conn.frames_in
                frames_out += conn.frames_out
        return frames_in, frames_out

    # -- waits -----------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Whether a thread waits in ``wait_for`` (or another wait)."""
        return self._waiters > 0

    def connection_changed(self) -> None:
        """Wake the waits (any thread; ``_lock`` may be held)."""
        with self._changes:
            self._version += 1
            self._changes.notify_all()

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(server)`` holds, re-checked at every change a test
        may wait for (connect, close, frames written or received, subscriptions...)
        and at least every 50 ms (for conditions on a client's state), on the calling
        thread with no server lock held. ``TimeoutError`` after ``timeout`` seconds."""
        if not self._wait_until(lambda: predicate(self), timeout):
            raise TimeoutError(f"condition not met within {timeout:g} s")

    def _wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Re-check ``ready()`` (called without any lock held by this method) at every
        change, and at least every :data:`RECHECK` seconds for conditions on state the
        server cannot see (a client's), until it holds (``True``) or ``timeout`` seconds
        pass (``False``)."""
        deadline = time.monotonic() + timeout
        with self._changes:
            self._waiters += 1
        try:
            while True:
                with self._changes:
                    seen = self._version
                if ready():
                    return True
                with self._changes:
                    while self._version == seen:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        if not self._changes.wait(min(remaining, RECHECK)):
                            break  # re-check what no change announces
        finally:
            with self._changes:
                self._waiters -= 1

    # -- faults every protocol has -------------------------------------------------------

    def _select(self, cid: str | None) -> list[ConnT]:
        """The open connection with ``cid`` (``KeyError`` if none), or every open one."""
        with self._lock:
            return [self._conns[cid]] if cid is not None else list(self._conns.values())

    def disconnect(self, code: int = 1000, reason: str = "", *, cid: str | None = None) -> int:
        """Close every open connection (or one) with ``code`` and ``reason``, after
        the frames queued before. Returns how many closes were started; each
        connection's closing handshake runs on its own thread, and a client that does
        not answer within ``close_timeout`` is cut. ``ValueError`` for a code or
        reason no close frame can carry (1005, 1006, 1015, over 123 bytes of reason)."""
        check_close(code, reason)
        conns = self._select(cid)
        for conn in conns:
            conn.request_close(code, reason)  # a silenced connection closes with this code too
        return len(conns)

    def drop(self, *, cid: str | None = None) -> int:
        """Cut every TCP connection (or one) without a close frame.

        Each is cut as soon as the frames queued before are handed to its socket, or
        at once when its socket takes no more: a client that stopped reading is cut
        too (what is still queued for it is lost, as in a real drop)."""
        conns = self._select(cid)
        for conn in conns:
            conn.request_drop()
        return len(conns)

    def send_raw(self, payload: Payload, *, cid: str | None = None) -> int:
        """Send one websocket message with this exact payload (a text frame for
        ``str``, a binary frame for ``bytes``) to every open connection (or one);
        returns how many it was queued on. ``TypeError`` for another type,
        ``ValueError`` for a ``str`` UTF-8 cannot encode (a lone surrogate)."""
        if not isinstance(payload, (str, bytes, bytearray)):
            raise TypeError(f"a payload is a str or bytes, not {type(payload).__name__}")
        wire = unmasked_message(payload)
        return sum(conn.send_wire(wire) for conn in self._select(cid))


class Inspectable(EmbeddedServer[ConnT], Generic[ConnT, InfoT]):
    """An :class:`EmbeddedServer` that shows tests its connections as snapshots
    (``InfoT``, made by :meth:`_snapshot`) and its frame totals. Every call takes
    ``_lock`` only to copy, so it returns promptly."""

    @abc.abstractmethod
    def _snapshot(self, conn: ConnT) -> InfoT:
        """A snapshot of ``conn`` (called under ``_lock``)."""

    @property
    def connections(self) -> list[InfoT]:
        """The open connections, oldest first."""
        with self._lock:
            return [self._snapshot(conn) for conn in self._conns.values()]

    @property
    def all_connections(self) -> list[InfoT]:
        """The open connections and the last ``history_limit`` closed ones (1000 by
        default), oldest first."""
        with self._lock:
            return [self._snapshot(conn) for conn in self._listed()]

    @property
    def frames_in(self) -> int:
        """Messages received from clients, over every connection since the start
        (those no longer listed included)."""
        with self._lock:
            return self._frame_totals()[0]

    @property
    def frames_out(self) -> int:
        """Messages written to clients, over every connection since the start (those
        no longer listed included)."""
        with self._lock:
            return self._frame_totals()[1]
