"""``LeapClient``: the thread-based, synchronous Leap Edge client.

Threads (started by :meth:`LeapClient.connect`, never before; daemon; joined by
:meth:`LeapClient.close`):

- ``leap-sync-io-<n>`` owns the connection: it opens it, reads every frame, runs the
  protocol session, feeds the event channels, calls the state listeners, and runs the
  reconnect loop (one attempt at a time, backoff waits interruptible by ``close()``).
- ``leap-sync-heartbeat-<n>`` sends heartbeats on fixed monotonic deadlines (the I/O
  thread also sends one that falls due while it is busy reading), detects zombie
  connections, and bounds each connection attempt's handshake to ``connect_timeout``.

State listeners run on the I/O thread, in the order of the transitions (``CLOSED`` is
reported by ``close()`` itself when no I/O thread runs); the logger is called from
either thread. Both must return quickly and must not wait for events from this client
(``close()`` from a listener is fine). Event channels are fed in wire order and never
block the I/O thread.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from .backoff import Backoff
from .channels import EventChannel
from .errors import (
    ChannelUnavailableError,
    LeapAuthorizationError,
    LeapClosedError,
    LeapConnectionError,
    LeapError,
    LeapTimeoutError,
)
from .log import Logger, StdlibLogger
from .protocol import frames
from .protocol.codec import COMPRESSIONS, DEFAULT_MAX_SIZE, Codec
from .protocol.heartbeat import Pulse
from .protocol.models import (
    AvailableEvent,
    Channel,
    ChannelEvent,
    Hello,
    InitEvent,
    MessageEvent,
    ServerFrame,
    UnavailableEvent,
)
from .protocol.opcodes import CloseAction, CloseCode, close_action
from .protocol.session import ClientSession, SessionState
from .state import ConnectionState, StateInfo
from .transport import Transport, TransportOptions

__all__ = ["DEFAULT_URL", "LeapClient"]

DEFAULT_URL = "wss://leap.hop.io/ws"
_REDACTED = "<redacted>"
_thread_numbers = itertools.count(1)  # only for naming threads

T = TypeVar("T")
StateListener = Callable[[StateInfo], None]


class _Future:
    """A one-shot result handed from the I/O thread to a waiting caller."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        if not self._done.is_set():
            self.value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self.error = error
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


def with_query(url: str, encoding: str, compression: str) -> str:
    """``url`` with its ``encoding`` and ``compression`` query parameters set (other
    parameters kept). Raises ``ValueError`` for a URL that is not ``ws://`` or
    ``wss://``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"Leap Edge URL must be ws:// or wss:// with a host, not {url!r}")
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("encoding", "compression")
    ]
    query += [("encoding", encoding), ("compression", compression)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query), path=parts.path or "/"))


class LeapClient:
    """A Leap Edge client for threaded, synchronous code.

    Nothing happens at construction: register listeners and create event channels,
    then call :meth:`connect`. ``token=None`` connects tokenless (unprotected channels
    only). ``logger`` implements :class:`~leap_sync.log.Logger`; ``None`` logs to
    ``logging.getLogger("leap_sync")``.

    Options: ``url`` (Leap Edge endpoint; ``encoding`` and ``compression`` are always
    added to its query), ``encoding`` (``"json"`` or ``"etf"``, which needs the
    ``etf`` extra), ``compression`` (``"none"`` or ``"zlib"``), ``sslopt``
    (websocket-client's format, e.g. ``{"ca_certs": path}`` or ``{"context": ctx}``;
    certificates are verified unless it says otherwise), ``ssl_context`` (shorthand for
    ``sslopt={"context": ctx}``), ``header``, ``http_proxy_host``/``http_proxy_port``/
    ``http_proxy_auth``/``http_no_proxy``/``proxy_type``, ``trust_env`` (read proxy
    environment variables; default true), ``connect_timeout`` (upgrade, and Hello plus
    INIT after it), ``send_timeout``, ``close_timeout`` (how long ``close()`` waits for
    each thread), ``max_message_size`` (bytes, after inflation), ``backoff``
    (:class:`~leap_sync.backoff.Backoff`: delays, reset, attempt limit, random
    source) and ``clock`` (monotonic seconds, for the backoff reset).
    """

    def __init__(
        self,
        project_id: str,
        token: str | None = None,
        logger: Logger | None = None,
        *,
        url: str = DEFAULT_URL,
        encoding: str = "json",
        compression: str = "none",
        sslopt: dict[str, Any] | None = None,
        ssl_context: Any = None,
        header: Any | None = None,
        http_proxy_host: str | None = None,
        http_proxy_port: int | None = None,
        http_proxy_auth: tuple[str, str] | None = None,
        http_no_proxy: list[str] | None = None,
        proxy_type: str = "http",
        trust_env: bool = True,
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(project_id, str) or not project_id:
            raise ValueError("project_id must be a non-empty string")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string or None")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        if close_timeout <= 0:
            raise ValueError("close_timeout must be positive")
        self.project_id = project_id
        self._token = token
        self.logger: Logger = logger if logger is not None else StdlibLogger()
        self._codec = Codec(encoding, max_size=max_message_size)  # etf: fails here without erlpack
        self.encoding = encoding
        self.compression = compression
        self._url = with_query(url, encoding, compression)
        if ssl_context is not None:
            sslopt = dict(sslopt or {}, context=ssl_context)
        self._options = TransportOptions(
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
            max_message_size=max_message_size,
            sslopt=sslopt,
            header=header,
            http_proxy_host=http_proxy_host,
            http_proxy_port=http_proxy_port,
            http_proxy_auth=http_proxy_auth,
            http_no_proxy=http_no_proxy,
            proxy_type=proxy_type,
            trust_env=trust_env,
        )
        self._close_timeout = close_timeout
        self._backoff = backoff if backoff is not None else Backoff()
        self._clock = clock
        self._number = next(_thread_numbers)

        # Lifecycle, channels, waiters, subscriptions.
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._closed_reported = False
        self._finished = False  # channels ended: the client will not deliver again
        self._io_thread: threading.Thread | None = None
        self._hb_thread: threading.Thread | None = None
        self._pending_ws: Any = None  # the websocket of a connection attempt in flight...
        self._connect_deadline: float | None = None  # ...and when it must be upgraded
        self._message_channels: tuple[EventChannel[MessageEvent], ...] = ()
        self._channel_channels: tuple[EventChannel[ChannelEvent], ...] = ()
        self._listeners: tuple[StateListener, ...] = ()
        self._waiters: dict[str, list[_Future]] = {}
        self._subscriptions: dict[str, None] = {}  # ordered set of channel ids

        # The live connection; the heartbeat thread waits on the same lock.
        self._session_lock = threading.Lock()
        self._hb_cond = threading.Condition(self._session_lock)
        self._hb_stop = False
        self._session: ClientSession | None = None
        self._transport: Transport | None = None

        self._state = StateInfo(ConnectionState.IDLE)
        self._state_cond = threading.Condition()
        self.init_event: InitEvent | None = None
        """The INIT of the current (or last) connection; ``None`` before the first."""
        self._latency: float | None = None
        self._connected_at: float | None = None

    # -- introspection -----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<LeapClient project_id={self.project_id!r} "
            f"state={self._state.connection_state.value} url={self._url!r} "
            f"token={'set' if self._token else 'none'}>"
        )

    @property
    def state(self) -> StateInfo:
        """The current :class:`StateInfo`."""
        return self._state

    @property
    def url(self) -> str:
        """The endpoint the next connection goes to (with ``encoding`` and
        ``compression``), changed by a 4006 redirect."""
        return self._url

    @property
    def latency(self) -> float | None:
        """Round trip, in seconds, of the last acknowledged heartbeat; ``None`` before
        one."""
        session = self._session
        if session is not None and session.latency is not None:
            return session.latency
        return self._latency  # the last connection's

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channel ids this client is (or will be, after reconnecting) subscribed
        to."""
        with self._lock:
            return tuple(self._subscriptions)

    # -- listeners and channels --------------------------------------------------------

    def add_state_update_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(StateInfo)`` on every state transition, in order, on the I/O
        thread. Returns a function that removes it. Exceptions it raises are logged."""
        if not callable(listener):
            raise TypeError("listener must be callable")
        with self._lock:
            self._listeners += (listener,)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(f for f in self._listeners if f is not listener)

        return remove

    def message_event_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[MessageEvent]:
        """A new channel of :class:`MessageEvent` (channel and direct messages), in
        wire order. See :class:`~leap_sync.channels.EventChannel` for ``maxsize`` and
        ``overflow``. Ends when the client closes or will not reconnect."""
        channel: EventChannel[MessageEvent] = self._new_channel("_message_channels", maxsize, overflow)
        return channel

    def channel_event_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[ChannelEvent]:
        """A new channel of channel events (``AvailableEvent``, ``UnavailableEvent``,
        ``StateUpdateEvent``, ``TokenStateUpdateEvent``, pipe room events,
        ``UnknownEvent``), in wire order. An AVAILABLE or UNAVAILABLE that answers a
        :meth:`subscribe` call goes to that call instead."""
        channel: EventChannel[ChannelEvent] = self._new_channel("_channel_channels", maxsize, overflow)
        return channel

    def _new_channel(self, registry: str, maxsize: int, overflow: str) -> EventChannel[Any]:
        channel: EventChannel[Any] = EventChannel(maxsize, overflow, on_close=self._detach)
        with self._lock:
            if self._finished:
                channel._finish(None)
            else:
                setattr(self, registry, (*getattr(self, registry), channel))
        return channel

    def _detach(self, channel: EventChannel[Any]) -> None:
        with self._lock:
            self._message_channels = tuple(c for c in self._message_channels if c is not channel)
            self._channel_channels = tuple(c for c in self._channel_channels if c is not channel)

    # -- connecting --------------------------------------------------------------------

    def connect(self, wait: bool = False, timeout: float | None = None) -> None:
        """Open the connection: one attempt, no retry.

        Returns once the websocket upgrade succeeded; authentication completes in the
        background (watch the state, or pass ``wait=True``). Raises
        :class:`LeapConnectionError` if the upgrade fails; the client is then
        ``ERRORED`` (``will_reconnect=False``) and ``connect()`` may be called again.
        Once connected, the client reconnects by itself until :meth:`close` or a fatal
        error.

        With ``wait=True``, also blocks until ``CONNECTED`` (INIT received) and raises
        :class:`LeapAuthorizationError` (4001), :class:`LeapConnectionError` (the
        client gave up) or :class:`LeapTimeoutError` after ``timeout`` seconds (the
        client keeps trying in the background).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._closing.is_set():
                raise LeapClosedError("the client is closed")
            if self._finished:
                raise LeapClosedError("the client stopped after a fatal error; make a new one")
            if self._io_thread is not None:
                if self._io_thread.is_alive():
                    raise LeapError("connect() was already called; the client reconnects by itself")
                self._io_thread.join()
            if self._hb_thread is not None:
                self._hb_thread.join(self._close_timeout)
            attempt = _Future()
            with self._hb_cond:
                self._hb_stop = False
            self._io_thread = threading.Thread(
                target=self._run, args=(attempt,), name=f"leap-sync-io-{self._number}", daemon=True
            )
            self._hb_thread = threading.Thread(
                target=self._heartbeat_loop, name=f"leap-sync-heartbeat-{self._number}", daemon=True
            )
            self._hb_thread.start()
            self._io_thread.start()
        attempt.wait(None)
        if attempt.error is not None:
            # The I/O thread is finishing (state ERRORED, heartbeat thread stopping):
            # let it end, so a retry can call connect() at once.
            io_thread = self._io_thread
            if io_thread is not None and io_thread is not threading.current_thread():
                io_thread.join(self._close_timeout)
            raise attempt.error
        if wait:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.wait_connected(remaining)

    def wait_connected(self, timeout: float | None = None) -> InitEvent:
        """Block until ``CONNECTED`` and return the INIT event.

        Raises :class:`LeapTimeoutError` after ``timeout`` seconds,
        :class:`LeapClosedError` if the client is closed, and the fatal error
        (:class:`LeapAuthorizationError`, :class:`LeapConnectionError`) if it will not
        reconnect.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state_cond:
            while True:
                info = self._state
                state = info.connection_state
                if state is ConnectionState.CONNECTED and self.init_event is not None:
                    return self.init_event
                if state is ConnectionState.CLOSED or self._closing.is_set():
                    raise LeapClosedError("the client is closed")
                if state is ConnectionState.IDLE:
                    raise LeapError("connect() has not been called")
                if state is ConnectionState.ERRORED and not info.will_reconnect:
                    if isinstance(info.error, LeapError):
                        raise info.error
                    raise LeapConnectionError(f"the client will not reconnect: {info.error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LeapTimeoutError(f"not connected within {timeout:g} s (state: {state.value})")
                self._state_cond.wait(remaining)

    # -- sending -----------------------------------------------------------------------

    def subscribe(self, channel_id: str, timeout: float | None = 10.0, *, wait: bool = False) -> Channel:
        """Subscribe to a channel and return it once Leap Edge confirms (AVAILABLE).

        Raises :class:`ChannelUnavailableError` (with ``error_code``, e.g.
        ``"NOT_GRANTED"``) when refused, :class:`LeapConnectionError` when not
        connected or when the connection drops before the answer, and
        :class:`LeapTimeoutError` after ``timeout`` seconds. With ``wait=True``, first
        waits (within the same ``timeout``) for the connection. The subscription is
        remembered: after a reconnect the client subscribes again if the server did
        not keep it.
        """
        _check_id(channel_id, "channel_id")
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Future()
        with self._lock:
            self._waiters.setdefault(channel_id, []).append(waiter)
        try:
            self._send(frames.subscribe(channel_id), wait, timeout)
            self.logger.debug("subscribe", {"channel": channel_id})
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not waiter.wait(remaining):
                raise LeapTimeoutError(f"no answer to SUBSCRIBE {channel_id!r} within {timeout:g} s")
        finally:
            with self._lock:
                waiters = self._waiters.get(channel_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[channel_id]
        if waiter.error is not None:
            raise waiter.error
        channel: Channel = waiter.value
        return channel

    def unsubscribe(self, channel_id: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send UNSUBSCRIBE and forget the subscription."""
        _check_id(channel_id, "channel_id")
        with self._lock:
            self._subscriptions.pop(channel_id, None)
        self._send(frames.unsubscribe(channel_id), wait, timeout)

    def set_channel_state(
        self, channel_id: str, state: dict[str, Any], *, wait: bool = False, timeout: float | None = None
    ) -> None:
        """Send SET_CHANNEL_STATE (``state`` is a JSON object)."""
        _check_id(channel_id, "channel_id")
        if not isinstance(state, dict):
            raise TypeError("channel state must be a dict")
        self._send(frames.set_channel_state(channel_id, state), wait, timeout)

    def send_message(
        self,
        channel_id: str,
        event_name: str,
        data: Any = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Send a MESSAGE to a channel; ``data`` is any JSON (or ETF) value."""
        _check_id(channel_id, "channel_id")
        _check_id(event_name, "event_name")
        self._send(frames.message(channel_id, event_name, data), wait, timeout)

    def subscribe_pipe_room(self, join_token: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send PIPE_ROOM_SUBSCRIBE; the room's events arrive on channel-event
        channels."""
        _check_id(join_token, "join_token")
        self._send(frames.pipe_room_subscribe(join_token), wait, timeout)

    def unsubscribe_pipe_room(self, room_id: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send PIPE_ROOM_UNSUBSCRIBE."""
        _check_id(room_id, "room_id")
        self._send(frames.pipe_room_unsubscribe(room_id), wait, timeout)

    def _send(self, frame: dict[str, Any], wait: bool, timeout: float | None) -> None:
        if wait:
            self.wait_connected(timeout)
        if self._closing.is_set():
            raise LeapClosedError("the client is closed")
        with self._session_lock:
            session, transport = self._session, self._transport
        if session is None or transport is None or session.state is not SessionState.CONNECTED:
            raise LeapConnectionError(
                f"not connected (state: {self._state.connection_state.value}); "
                "pass wait=True to wait for the connection"
            )
        payload, binary = session.encode(frame)
        transport.send(payload, binary)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection for good.

        Idempotent and safe from any thread, state listeners and consumer threads
        included. Interrupts a backoff wait, sends a close frame when connected, fails
        pending ``subscribe`` calls, ends every event channel (after the events they
        hold), and joins the threads the client started (at most ``close_timeout``
        seconds each). Called from the I/O thread (a listener), it returns at once and
        the thread ends right after the listener returns.
        """
        with self._lock:
            first = not self._closing.is_set()
            self._closing.set()
            io_thread, hb_thread = self._io_thread, self._hb_thread
        if first:
            self.logger.debug("closing", {"project_id": self.project_id})
        with self._hb_cond:
            self._hb_stop = True
            self._hb_cond.notify_all()
            # _serve publishes its transport under this lock after checking _closing,
            # so either we see it here or it sees _closing set and closes it itself.
            transport = self._transport
            pending = self._pending_ws
        if transport is not None:
            try:
                transport.send_close(1000, "", timeout=min(1.0, self._close_timeout))
            except LeapConnectionError:
                transport.abort()
        if pending is not None:
            pending.interrupt()  # a handshake in flight
        with self._state_cond:
            self._state_cond.notify_all()
        current = threading.current_thread()
        if io_thread is not None and io_thread is not current:
            # A second for the server to echo our close frame, then cut the socket.
            io_thread.join(min(1.0, self._close_timeout))
            if io_thread.is_alive() and transport is not None:
                transport.abort(LeapConnectionError("the client was closed"))
                io_thread.join(self._close_timeout)
            if io_thread.is_alive():
                self.logger.warn("the I/O thread did not stop in time", {"thread": io_thread.name})
        if hb_thread is not None and hb_thread is not current:
            hb_thread.join(self._close_timeout)
        if io_thread is None or not io_thread.is_alive():
            self._report_closed()

    def __enter__(self) -> LeapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _report_closed(self) -> None:
        """End everything and report CLOSED, once."""
        with self._lock:
            if self._closed_reported:
                return
            self._closed_reported = True
        self._finish(LeapClosedError("the client was closed"))
        self._set_state(ConnectionState.CLOSED)

    def _finish(self, error: BaseException) -> None:
        """No more events: end every channel and fail every waiter with ``error``."""
        with self._lock:
            self._finished = True
            channels: tuple[EventChannel[Any], ...] = self._message_channels + self._channel_channels
            self._message_channels = ()
            self._channel_channels = ()
        for channel in channels:
            channel._finish(None)
        self._fail_waiters(error)

    # -- state ---------------------------------------------------------------------------

    def _set_state(
        self, state: ConnectionState, error: BaseException | None = None, will_reconnect: bool = False
    ) -> None:
        info = StateInfo(state, error, will_reconnect)
        with self._state_cond:
            self._state = info
            self._state_cond.notify_all()
        metadata: dict[str, Any] = {"state": state.value}
        if state is ConnectionState.ERRORED:
            metadata["will_reconnect"] = will_reconnect
            self.logger.warn("connection errored", {**metadata, "error": str(error)})
        else:
            self.logger.debug("state", metadata)
        for listener in self._listeners:
            try:
                listener(info)
            except Exception as exc:
                self.logger.error("state listener raised", exc, {"state": state.value})

    # -- the I/O thread ------------------------------------------------------------------

    def _run(self, attempt: _Future) -> None:
        try:
            try:
                transport = self._open()
            except LeapConnectionError as exc:
                exc = self._scrub(exc)
                attempt.fail(exc)
                if not self._closing.is_set():
                    self._set_state(ConnectionState.ERRORED, exc, False)
                return
            if self._closing.is_set():
                transport.close()
                attempt.fail(LeapClosedError("the client was closed while connecting"))
                return
            attempt.set()
            self._supervise(transport)
        except BaseException as exc:  # a bug: never die silently
            crash = LeapConnectionError(f"internal error: {self._scrub_text(repr(exc))}")
            self.logger.error("I/O thread crashed", crash)
            attempt.fail(crash)
            self._finish(crash)
            self._set_state(ConnectionState.ERRORED, crash, False)
        finally:
            with self._hb_cond:
                self._hb_stop = True
                self._hb_cond.notify_all()
            hb_thread = self._hb_thread
            if hb_thread is not None and hb_thread is not threading.current_thread():
                hb_thread.join(self._close_timeout)
            if self._closing.is_set():
                self._report_closed()

    def _open(self) -> Transport:
        """One connection attempt (CONNECTING, then AUTHENTICATING once upgraded)."""
        self._set_state(ConnectionState.CONNECTING)
        url = self._url
        self.logger.debug("connecting", {"url": url})

        def remember(ws: Any) -> None:
            # The heartbeat thread, idle until Hello, interrupts a handshake that is not
            # done by the deadline (websocket-client's timeout is per read, not total).
            with self._hb_cond:
                self._pending_ws = ws
                self._connect_deadline = time.monotonic() + self._options.connect_timeout
                self._hb_cond.notify_all()

        try:
            transport = Transport.open(url, self._options, stop=self._closing, on_socket=remember)
        finally:
            with self._hb_cond:
                self._pending_ws = None
                self._connect_deadline = None
        self.logger.debug("websocket upgraded", {"url": url})
        self._set_state(ConnectionState.AUTHENTICATING)
        return transport

    def _supervise(self, transport: Transport) -> None:
        """Serve connections and reconnect until closed or a fatal error."""
        redirected = False
        while True:
            error = self._scrub(self._serve(transport))
            transport.close()
            self._fail_waiters(LeapConnectionError(f"connection lost: {error}"))
            if self._closing.is_set():
                return
            connected_at, self._connected_at = self._connected_at, None
            if connected_at is not None:
                redirected = False
                if self._clock() - connected_at >= self._backoff.reset_after:
                    self._backoff.reset()
            code = error.close_code
            action = close_action(code)
            if code is not None:
                self.logger.info("connection closed", {"code": code, "reason": error.close_reason or ""})
            if action is CloseAction.FATAL:
                fatal = LeapAuthorizationError(
                    f"Leap Edge rejected the credentials (close code {code}: "
                    f"{error.close_reason or CloseCode.INVALID_AUTH.description})",
                    close_code=code,
                    close_reason=error.close_reason,
                )
                self._give_up(fatal)
                return
            delay: float | None = None
            if action is CloseAction.REDIRECT and not redirected:
                target = self._redirect_target(error.close_reason or "")
                if target is not None:
                    self.logger.info("redirected by Leap Edge (4006)", {"url": target})
                    self._url = target
                    redirected = True
                    delay = 0.0
            if delay is None:
                delay = self._backoff.next_delay()
            self._set_state(ConnectionState.ERRORED, error, True)
            while True:
                if self._backoff.exhausted:
                    self._give_up(
                        LeapConnectionError(
                            f"gave up after {self._backoff.max_attempts} reconnect attempts: {error}",
                            close_code=error.close_code,
                            close_reason=error.close_reason,
                        )
                    )
                    return
                self.logger.info("reconnecting", {"delay": round(delay, 3), "attempt": self._backoff.failures})
                if self._closing.wait(delay):
                    return
                try:
                    transport = self._open()
                except LeapConnectionError as exc:
                    if self._closing.is_set():
                        return  # close() abandoned the attempt: not an error
                    error = self._scrub(exc)
                    self._set_state(ConnectionState.ERRORED, error, True)
                    delay = self._backoff.next_delay()
                    continue
                if self._closing.is_set():
                    transport.close()
                    return
                break

    def _give_up(self, error: LeapConnectionError) -> None:
        self.logger.error("not reconnecting", error)
        self._finish(error)
        self._set_state(ConnectionState.ERRORED, error, False)

    def _serve(self, transport: Transport) -> LeapConnectionError:
        """Read one connection until it ends; return why it ended."""
        session = ClientSession(self.project_id, self._token, self._codec)
        with self._hb_cond:
            if self._closing.is_set():  # close() ran before it could see this transport
                transport.fail(1000, LeapConnectionError("the client was closed"))
                return LeapConnectionError("the client was closed")
            self._session, self._transport = session, transport
        clock = time.monotonic
        handshake_deadline = clock() + self._options.connect_timeout  # for Hello and INIT
        try:
            while True:
                if session.state is SessionState.CONNECTED:
                    batch = transport.receive()
                else:
                    remaining = handshake_deadline - clock()
                    if remaining <= 0:
                        what = "Hello" if session.hello is None else "INIT"
                        error = LeapConnectionError(f"no {what} within {self._options.connect_timeout:g} s")
                        transport.fail(CloseCode.UNKNOWN, error)
                        return error
                    batch = transport.receive(remaining)
                    if not batch:
                        continue
                with self._hb_cond:
                    had_heartbeat = session.heartbeat is not None
                    result = session.receive(batch, clock())
                    if not had_heartbeat and session.heartbeat is not None:
                        self._hb_cond.notify_all()
                for frame in result.send:
                    self._send_on(transport, session, frame)
                tracker = session.heartbeat
                if tracker is not None and clock() >= tracker.next_beat:
                    # Busy stream: beat from here between batches rather than wait for
                    # the heartbeat thread to win the GIL from this one.
                    self._beat_if_due(session, transport)
                if result.messages:
                    for channel in self._message_channels:
                        channel._put_many(result.messages)
                for event in result.events:
                    self._on_event(event, session, transport)
                if result.error is not None:
                    self.logger.error("protocol error from server", result.error)
                    error = LeapConnectionError(f"protocol error: {result.error}")
                    transport.fail(1002, error)
                    return error
        except LeapConnectionError as exc:
            return exc
        finally:
            with self._hb_cond:
                if session.latency is not None:
                    self._latency = session.latency
                self._session = self._transport = None
                self._hb_cond.notify_all()

    def _send_on(self, transport: Transport, session: ClientSession, frame: dict[str, Any]) -> None:
        """Send from the I/O thread; a failure shows up as the connection ending."""
        try:
            payload, binary = session.encode(frame)
            transport.send(payload, binary)
        except LeapError as exc:
            self.logger.warn("send failed", {"error": str(self._scrub_text(str(exc)))})

    def _on_event(self, event: ServerFrame, session: ClientSession, transport: Transport) -> None:
        if isinstance(event, Hello):
            self.logger.debug("hello", {"heartbeat_interval": event.heartbeat_interval})
            self.logger.debug(
                "identify",
                {"project_id": self.project_id, "token": _REDACTED if self._token else None},
            )
            return
        if isinstance(event, InitEvent):
            self._on_init(event, session, transport)
            return
        if isinstance(event, (AvailableEvent, UnavailableEvent)):
            channel_id = event.channel_id
            if channel_id is None and isinstance(event, AvailableEvent):
                channel_id = event.channel.id
            with self._lock:
                waiters = self._waiters.pop(channel_id, None) if channel_id is not None else None
                if channel_id is not None:
                    if isinstance(event, AvailableEvent):
                        self._subscriptions[channel_id] = None
                    else:
                        self._subscriptions.pop(channel_id, None)
            if waiters:
                for waiter in waiters:
                    if isinstance(event, AvailableEvent):
                        waiter.set(event.channel)
                    else:
                        waiter.fail(
                            ChannelUnavailableError(channel_id or "", event.error_code, graceful=event.graceful)
                        )
                return
        for channel in self._channel_channels:
            channel._put_many((event,))  # type: ignore[arg-type]

    def _on_init(self, event: InitEvent, session: ClientSession, transport: Transport) -> None:
        self.init_event = event
        self._connected_at = self._clock()
        kept = {channel.id for channel in event.channels}
        with self._lock:
            missing = [c for c in self._subscriptions if c not in kept]
            for channel_id in kept:
                self._subscriptions[channel_id] = None
        self.logger.debug(
            "init",
            {"cid": event.cid, "scope": event.scope, "channels": len(event.channels), "resubscribing": len(missing)},
        )
        for channel_id in missing:
            self._send_on(transport, session, frames.subscribe(channel_id))
        self._set_state(ConnectionState.CONNECTED)

    def _fail_waiters(self, error: BaseException) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        for waiter in waiters:
            waiter.fail(error)

    def _redirect_target(self, reason: str) -> str | None:
        """The URL a 4006 close reason names, with our query; ``None`` if unusable."""
        try:
            target = with_query(reason.strip(), self.encoding, self.compression)
        except ValueError:
            self.logger.warn("ignoring 4006 with an unusable endpoint", {"reason": reason[:200]})
            return None
        if self._url.startswith("wss:") and not target.startswith("wss:"):
            self.logger.warn("ignoring 4006 redirect from wss to plain ws", {"url": target})
            return None
        return target

    def _beat_if_due(self, session: ClientSession, transport: Transport) -> None:
        """Send a heartbeat from the I/O thread if one is due (zombies are left to the
        heartbeat thread)."""
        with self._hb_cond:
            tracker = session.heartbeat
            now = time.monotonic()
            if tracker is None or tracker.poll(now) is not Pulse.BEAT:
                return
            tracker.sent(now)  # before sending: the ack must find it
        self._send_on(transport, session, frames.heartbeat())

    # -- the heartbeat thread ------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        cond = self._hb_cond
        clock = time.monotonic
        given_up: ClientSession | None = None
        with cond:
            while not self._hb_stop:
                session = self._session
                tracker = session.heartbeat if session is not None else None
                transport = self._transport
                if session is None or tracker is None or transport is None or session is given_up:
                    self._watch_handshake()
                    continue
                now = clock()
                pulse = tracker.poll(now)
                if pulse is Pulse.WAIT:
                    cond.wait(tracker.next_beat - now)
                    continue
                if pulse is Pulse.BEAT:
                    cond.release()
                    try:
                        self._beat_if_due(session, transport)
                    finally:
                        cond.acquire()
                else:
                    given_up = session
                    error = LeapConnectionError(
                        "heartbeat not acknowledged and nothing received for "
                        f"{now - tracker.last_received:.1f} s: connection presumed dead"
                    )
                    cond.release()
                    try:
                        self.logger.warn("zombie connection", {"silent_for": round(now - tracker.last_received, 3)})
                        if transport is not None:
                            transport.fail(CloseCode.UNKNOWN, error)
                    finally:
                        cond.acquire()

    def _watch_handshake(self) -> None:
        """(Heartbeat thread, lock held, nothing to beat for.) Wait for a change, and
        interrupt a connection attempt that overran its deadline."""
        deadline, ws = self._connect_deadline, self._pending_ws
        if deadline is None or ws is None:
            self._hb_cond.wait()
            return
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._hb_cond.wait(remaining)
            return
        self._connect_deadline = None
        ws.interrupt(timed_out=True)

    # -- token hygiene -------------------------------------------------------------------

    def _scrub_text(self, text: str) -> str:
        if self._token:
            return text.replace(self._token, _REDACTED)
        return text

    def _scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        """``error`` with the token removed from its message and close reason."""
        if not self._token:
            return error
        reason = error.close_reason
        if self._token not in str(error) and not (reason and self._token in reason):
            return error
        scrubbed = type(error)(
            self._scrub_text(str(error)),
            close_code=error.close_code,
            close_reason=self._scrub_text(reason) if reason is not None else None,
        )
        return scrubbed


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
