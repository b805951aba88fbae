"""``LeapClient``: the thread-based, synchronous Leap Edge client.

A façade over :class:`~leap_sync.connection.core.ConnectionCore` (threads, connection attempts,
reconnects, state, ``close()``; see :mod:`leap_sync.connection.core` for the thread contract),
:class:`~leap_sync.protocol.session.ClientSession` (the Leap Edge protocol) and
:class:`~leap_sync.leap.LeapHandler` (where events go, which call an answer belongs
to, what a close code means, token hygiene).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .backoff import Backoff
from .channels import EventChannel
from .connection.core import ConnectionCore
from .connection.handler import ARRIVALS, Future
from .connection.options import ConnectOptions, check_message_items
from .connection.stats import Stats
from .connection.timeouts import check_timeout
from .errors import LeapConnectionError, LeapTimeoutError
from .leap import CHANNEL_EVENTS, MESSAGES, LeapHandler, Undo, leap_session, with_query
from .log import AnyLogger, Logger, as_logger
from .protocol import frames
from .protocol.codec import COMPRESSIONS, Codec
from .protocol.models import Channel, ChannelEvent, InitEvent, MessageEvent
from .state import StateInfo
from .wire.jsontext import DEFAULT_MAX_ITEMS
from .wire.secrets import header_secrets
from .wire.urls import url_secrets
from .wire.wsframes import DEFAULT_MAX_SIZE

__all__ = ["DEFAULT_URL", "LeapClient", "with_query"]

DEFAULT_URL = "wss://leap.hop.io/ws"

StateListener = Callable[[StateInfo], None]


class LeapClient:
    """A Leap Edge client for threaded, synchronous code.

    Nothing happens at construction: register listeners and create event channels,
    then call :meth:`connect`. ``token=None`` connects tokenless (unprotected channels
    only). ``logger`` implements :class:`~leap_sync.log.Logger`, or is a standard
    ``logging.Logger`` or ``logging.LoggerAdapter`` (metadata as
    ``extra={"leap_sync": ...}``, an error as ``exc_info``: see
    :class:`~leap_sync.log.StdlibLogger`); ``None`` logs to
    ``logging.getLogger("leap_sync")``. Listeners and the logger run on the client's
    callbacks thread, never on the thread that reads the socket: they may raise (a
    listener's exception is logged, a logger's is ignored), block (only later callbacks
    wait) or call :meth:`close`.

    Options: ``url`` (Leap Edge endpoint; ``encoding`` and ``compression`` are always
    added to its query), ``encoding`` (``"json"`` or ``"etf"``, which needs the
    ``etf`` extra), ``compression`` (``"none"`` or ``"zlib"``), ``sslopt``
    (websocket-client's format, e.g. ``{"ca_certs": path}`` or ``{"context": ctx}``;
    certificates are verified unless it says otherwise), ``ssl_context`` (shorthand for
    ``sslopt={"context": ctx}``), ``header``, ``http_proxy_host``/``http_proxy_port``/
    ``http_proxy_auth``/``http_no_proxy``/``proxy_type`` (an explicit proxy, never
    overridden by the environment), ``trust_env`` (read ``http_proxy``/``https_proxy``/
    ``no_proxy`` from the environment when no explicit proxy is set; default true),
    ``connect_timeout`` (one whole attempt: DNS, TCP, proxy, TLS, upgrade, Hello and
    INIT), ``send_timeout``, ``close_timeout`` (how long ``close()`` waits for each
    thread), ``max_message_size`` (bytes, after inflation), ``max_message_items`` (the
    most values one message may decode to, object keys included; checked before
    decoding, so a small zlib frame cannot cost seconds of decoding), ``backoff``
    (:class:`~leap_sync.backoff.Backoff`: delays, reset, attempt limit, random source)
    and ``clock`` (monotonic seconds, for the backoff reset). Bad values raise
    ``ValueError`` or ``TypeError`` here.
    """

    def __init__(
        self,
        project_id: str,
        token: str | None = None,
        logger: AnyLogger | None = None,
        *,
        url: str = DEFAULT_URL,
        encoding: str = "json",
        compression: str = "none",
        sslopt: Mapping[str, Any] | None = None,
        ssl_context: Any = None,
        header: Mapping[str, str] | Iterable[str] | None = None,
        http_proxy_host: str | None = None,
        http_proxy_port: int | None = None,
        http_proxy_auth: tuple[str, str] | None = None,
        http_no_proxy: Iterable[str] | None = None,
        proxy_type: str = "http",
        trust_env: bool = True,
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
        max_message_items: int = DEFAULT_MAX_ITEMS,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _is_text(project_id):
            raise ValueError("project_id must be a non-empty string of text")
        if token is not None and not _is_text(token):
            raise ValueError("token must be a non-empty string of text, or None")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        self.project_id = project_id
        self._token = token
        self.logger: Logger = as_logger(logger)
        check_message_items(max_message_items)
        self._codec = Codec(encoding, max_size=max_message_size, max_items=max_message_items)  # etf: needs erlpack
        self.encoding = encoding
        self.compression = compression
        if ssl_context is not None:
            sslopt = dict(sslopt or {}, context=ssl_context)
        options = ConnectOptions(
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
            close_timeout=close_timeout,
            max_message_size=max_message_size,
            max_message_items=max_message_items,
            sslopt=sslopt,
            header=header,
            http_proxy_host=http_proxy_host,
            http_proxy_port=http_proxy_port,
            http_proxy_auth=http_proxy_auth,
            http_no_proxy=http_no_proxy,
            proxy_type=proxy_type,
            trust_env=trust_env,
        )
        lock = threading.RLock()
        self._handler = LeapHandler(project_id, token, self._codec, encoding, compression, lock)
        if isinstance(url, str):
            for secret in url_secrets(url):
                self._handler.secrets.add(secret)
        for secret in header_secrets(options.headers):
            self._handler.secrets.add(secret)
        self._handler.secrets.add_credentials(options.proxy.auth if options.proxy else None)
        try:
            url = with_query(url, encoding, compression)
            self._core = ConnectionCore(
                self._handler, url=url, options=options, logger=self.logger, backoff=backoff, clock=clock, lock=lock
            )
        except ValueError as exc:  # it may name the URL: never with the token in it
            shown = self._handler.redact(str(exc))
            if shown != str(exc):
                raise ValueError(shown) from None
            raise
        self._handler.core = self._core
        self._number = self._core.number
        self._lock = lock
        self._waiters = self._handler.waiters

    # -- introspection -----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<LeapClient project_id={self.project_id!r} "
            f"state={self.state.connection_state.value} url={self._core.show(self.url)!r} "
            f"token={'set' if self._token else 'none'}>"
        )

    @property
    def state(self) -> StateInfo:
        """The current :class:`StateInfo`."""
        return self._core.state

    @property
    def url(self) -> str:
        """The endpoint the next connection goes to (with ``encoding`` and
        ``compression``), changed by a 4006 redirect."""
        return self._core.url

    @property
    def init_event(self) -> InitEvent | None:
        """The INIT of the current (or last) connection; ``None`` before the first."""
        return self._handler.init_event

    @property
    def latency(self) -> float | None:
        """Round trip, in seconds, of the last acknowledged heartbeat; ``None`` before
        one."""
        live = self._core.live
        latency = leap_session(live.session).latency if live is not None else None
        return latency if latency is not None else self._handler.latency  # else the last connection's

    @property
    def stats(self) -> Stats:
        """A :class:`~leap_sync.Stats` snapshot: time connected, connections and
        reconnects, messages and bytes in and out, the last heartbeat round trip, each
        event channel's depth and drops. Cheap and safe from any thread."""
        return self._core.stats(self.latency)

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channel ids this client is (or will be, after reconnecting) subscribed
        to, as the server's answers left them."""
        with self._lock:
            return tuple(self._handler.subscriptions)

    # -- listeners and channels --------------------------------------------------------

    def add_state_update_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(StateInfo)`` on every state transition, in order, on the
        callbacks thread. Returns a function that removes it. Exceptions it raises are
        logged."""
        return self._core.add_state_update_listener(listener)

    def message_event_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[MessageEvent]:
        """A new channel of :class:`MessageEvent` (channel and direct messages), in
        wire order. See :class:`~leap_sync.channels.EventChannel` for ``maxsize`` and
        ``overflow``. Ends when the client closes or will not reconnect. Fed for as
        long as the application holds it: a channel dropped without ``close()`` is
        freed and no longer fed."""
        return self._core.new_channel(MESSAGES, maxsize, overflow)

    def channel_event_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[ChannelEvent]:
        """A new channel of channel events (``AvailableEvent``, ``UnavailableEvent``,
        ``StateUpdateEvent``, ``TokenStateUpdateEvent``, pipe room events,
        ``UnknownEvent``), in wire order. An AVAILABLE or UNAVAILABLE that answers a
        :meth:`subscribe` call goes to that call instead."""
        return self._core.new_channel(CHANNEL_EVENTS, maxsize, overflow)

    def _arrivals_channel(self) -> EventChannel[MessageEvent | ChannelEvent | StateInfo]:
        """(For ``leap-sync listen``.) A channel of messages, channel events and state
        transitions together, in the order they happened."""
        return self._core.new_channel(ARRIVALS, 0, "drop_oldest")

    # -- connecting --------------------------------------------------------------------

    def connect(self, wait: bool = False, timeout: float | None = None) -> None:
        """Open the connection: one attempt, no retry.

        Returns once the websocket upgrade succeeded; authentication completes in the
        background (watch the state, or pass ``wait=True``). Raises
        :class:`LeapConnectionError` (whose ``phase`` and message name the step that
        failed and why) if the attempt fails or does not finish within
        ``connect_timeout``; the client is then ``ERRORED`` (``will_reconnect=False``)
        and ``connect()`` may be called again. Once connected, the client reconnects by
        itself until :meth:`close` or a fatal error. ``timeout`` bounds the whole call:
        when it passes before the attempt ended (a ``connect_timeout`` longer than it),
        the attempt is abandoned and :class:`LeapTimeoutError` is raised (``ERRORED``,
        ``will_reconnect=False``; ``connect()`` may be called again). Safe to call
        again from a state listener or any thread after a failed attempt: it never
        waits under the client's lock.

        With ``wait=True``, also blocks until ``CONNECTED`` (INIT received) and raises
        :class:`LeapAuthorizationError` (4001), :class:`LeapConnectionError` (the
        client gave up) or :class:`LeapTimeoutError` after ``timeout`` seconds (the
        client keeps trying in the background).
        """
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._core.connect(deadline, timeout)
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
        init: InitEvent = self._core.wait_connected(timeout, lambda: self._handler.init_event)
        return init

    # -- sending -----------------------------------------------------------------------

    def subscribe(self, channel_id: str, timeout: float | None = 10.0, *, wait: bool = False) -> Channel:
        """Subscribe to a channel and return it once Leap Edge confirms (AVAILABLE).

        Raises :class:`ChannelUnavailableError` (with ``error_code``, e.g.
        ``"NOT_GRANTED"``) when refused, :class:`LeapConnectionError` when not
        connected (nothing is sent, nothing changes) or when the connection drops
        before the answer, and :class:`LeapTimeoutError` after ``timeout`` seconds.
        With ``wait=True``, first waits (within the same ``timeout``) for the
        connection.

        Answers are matched to requests in the order they were sent, per channel, so
        an UNAVAILABLE answering an earlier :meth:`unsubscribe` never fails this call.
        A call that gives up (a timeout) leaves its request in matching as an orphan:
        its late answer, if the server still sends it, is known as that request's
        (not a server push), so it never undoes a later :meth:`unsubscribe`; otherwise
        it updates :attr:`subscriptions` like any answer (an AVAILABLE with no
        unsubscribe since: the server did subscribe, so the channel is listed). A
        retry is never left behind the orphan: it takes the first AVAILABLE for the
        channel (subscribed either way); a refusal while an orphan is outstanding is
        the orphan's, and the retry waits on for the next answer; if none comes
        within its timeout (the server never answered the orphan), it raises that
        refusal (:class:`ChannelUnavailableError`) instead of a timeout. The
        subscription is remembered: after a reconnect the client subscribes again if
        the server did not keep it.
        """
        _check_id(channel_id, "channel_id")
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = Future()
        requests: list[tuple[Any, int]] = []
        undos: list[Undo] = []

        def register(session: Any) -> None:
            request, undo = self._handler.subscribing(leap_session(session), channel_id, waiter)
            requests.append((session, request))
            undos.append(undo)

        try:
            failed = False
            try:
                self._core.send(frames.subscribe(channel_id), wait, timeout, register)
            except LeapConnectionError:
                failed = True  # queued, never written: the connection ended first
                raise
            finally:
                for undo in undos:
                    self._handler.call_ended(channel_id, undo, failed)
            self._core.log.debug("subscribe", {"channel": channel_id})
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not waiter.wait(remaining):
                refusals = [self._handler.release(session, channel_id, request) for session, request in requests]
                refusal = next((r for r in refusals if r is not None), None)
                if not waiter.done:  # (else answered right as it gave up: that answer stands)
                    if refusal is not None:
                        raise refusal  # the only answer that came: perhaps its own
                    raise LeapTimeoutError(f"no answer to SUBSCRIBE {channel_id!r} within {timeout:g} s")
        finally:
            for session, request in requests:
                if not waiter.done:  # gave up: free the request's place
                    self._handler.release(session, channel_id, request)
                with self._lock:
                    self._waiters.pop((id(session), request), None)
        if waiter.error is not None:
            raise waiter.error
        channel: Channel = waiter.value
        return channel

    def unsubscribe(self, channel_id: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send UNSUBSCRIBE and forget the subscription: once the frame is queued, the
        channel leaves :attr:`subscriptions` and is never re-subscribed after a
        reconnect (if the server still has it then, because the connection ended
        before the server read the UNSUBSCRIBE, the client sends it again). When not
        connected it raises :class:`LeapConnectionError` and changes nothing (the
        channel stays subscribed, and is re-subscribed after a reconnect); so it does,
        changing nothing, when the connection ends before the frame is written. The
        server's answer (a graceful UNAVAILABLE) arrives on channel-event channels; it
        never answers a later :meth:`subscribe` of the same channel. Blocks and raises
        as :meth:`send_message`."""
        _check_id(channel_id, "channel_id")
        before: list[Undo] = []
        failed = False
        try:
            self._core.send(
                frames.unsubscribe(channel_id),
                wait,
                timeout,
                lambda session: before.append(self._handler.unsubscribed(leap_session(session), channel_id)),
            )
        except LeapConnectionError:
            failed = True  # queued, never written: the connection ended first
            raise
        finally:
            for undo in before:
                self._handler.call_ended(channel_id, undo, failed)

    def set_channel_state(
        self, channel_id: str, state: dict[str, Any], *, wait: bool = False, timeout: float | None = None
    ) -> None:
        """Send SET_CHANNEL_STATE (``state`` is a JSON object; ``TypeError`` for
        anything else). A server that refuses it (not subscribed) answers UNAVAILABLE
        ``UNKNOWN``, which arrives on channel-event channels and never fails a later
        :meth:`subscribe`. Blocks and raises as :meth:`send_message`."""
        _check_id(channel_id, "channel_id")
        if not isinstance(state, dict):
            raise TypeError("channel state must be a dict")
        self._core.send(
            frames.set_channel_state(channel_id, state),
            wait,
            timeout,
            lambda session: self._handler.sending(leap_session(session), channel_id),
        )

    def send_message(
        self,
        channel_id: str,
        event_name: str,
        data: Any = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Send a MESSAGE to a channel; ``data`` is any JSON value (with
        ``encoding="etf"``, ``bytes`` too: they travel as binaries). A server that
        refuses it (not subscribed) answers UNAVAILABLE ``UNKNOWN``, which arrives on
        channel-event channels and never fails a later :meth:`subscribe`.

        Every send (this, :meth:`set_channel_state`, :meth:`unsubscribe` and the pipe
        room calls) blocks the calling thread, any thread, until the I/O thread has
        written the frame to the socket. It raises :class:`LeapConnectionError` when
        not connected (with ``wait=True`` it first waits for the connection), when the
        connection ends before the frame is written or when the frame waits longer than
        ``send_timeout``; :class:`LeapTimeoutError` once ``timeout`` seconds (the whole
        call) have passed, the frame possibly still written later;
        :class:`LeapEncodeError` for a value that cannot be encoded, before anything is
        sent; :class:`LeapClosedError` after :meth:`close`."""
        _check_id(channel_id, "channel_id")
        _check_id(event_name, "event_name")
        self._core.send(
            frames.message(channel_id, event_name, data),
            wait,
            timeout,
            lambda session: self._handler.sending(leap_session(session), channel_id),
        )

    def subscribe_pipe_room(self, join_token: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send PIPE_ROOM_SUBSCRIBE; the room's events arrive on channel-event
        channels. Blocks and raises as :meth:`send_message`."""
        _check_id(join_token, "join_token")
        self._core.send(frames.pipe_room_subscribe(join_token), wait, timeout)

    def unsubscribe_pipe_room(self, room_id: str, *, wait: bool = False, timeout: float | None = None) -> None:
        """Send PIPE_ROOM_UNSUBSCRIBE. Blocks and raises as :meth:`send_message`."""
        _check_id(room_id, "room_id")
        self._core.send(frames.pipe_room_unsubscribe(room_id), wait, timeout)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection for good.

        Idempotent and safe from any thread, listeners, the logger and consumer
        threads included. Interrupts a connection attempt in any phase or a backoff
        wait, sends a close frame when connected (waiting about a second for the
        server's answer), fails pending ``subscribe`` calls, ends every event channel
        (after the events they hold), and joins the client's threads (at most
        ``close_timeout`` seconds each). When it returns the state is ``CLOSED`` and no
        reconnect will happen; only a DNS lookup in progress, which nothing can
        interrupt, or a listener that never returns can keep a thread alive after it.
        """
        self._core.close()

    def __enter__(self) -> LeapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_text(value: Any) -> bool:
    """A non-empty ``str`` that encodes to UTF-8 (no lone surrogate)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
