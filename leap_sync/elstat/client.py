"""``ElstatClient``: a synchronous client for Elstat's Streaming API (status pages).

A thin façade over :class:`~leap_sync.connection.core.ConnectionCore`, the same core as
``LeapClient`` (threads, bounded and interruptible connection attempts, backoff,
state listeners, ``close()``, event channels): see :mod:`leap_sync.connection.core` for the thread
contract. What is Elstat's lives here: subscriptions (split over 256-byte payloads,
re-subscribed after every reconnect), matching SUBSCRIBED/UNSUBSCRIBED to the calls
waiting for them, and the close-code policy (4200 and 4420 are fatal: they mean this
client sent something Elstat refuses, which reconnecting would only repeat).
"""

from __future__ import annotations

import functools
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from ..backoff import Backoff
from ..channels import EventChannel
from ..connection.core import ConnectionCore
from ..connection.handler import Decision, Future, Live
from ..connection.options import ConnectOptions
from ..connection.timeouts import check_seconds, check_timeout
from ..errors import LeapConnectionError, LeapTimeoutError
from ..log import Logger, StdlibLogger
from ..state import StateInfo
from ..wire.close import CloseAction
from .protocol import CloseCode, DataEvent, IncidentEvent, Op, split_request
from .session import ElstatResult, ElstatSession

__all__ = ["ElstatClient", "streaming_url"]

_DATA = "data"
_INCIDENTS = "incidents"
StateListener = Callable[[StateInfo], None]


def streaming_url(url: str) -> str:
    """The websocket URL of the Streaming API of a status page: ``http(s)://host/base``
    becomes ``ws(s)://host/base/api/streaming`` (a ``ws(s)://`` URL keeps its scheme;
    ``/api/streaming`` is added unless the path ends with it). Raises ``TypeError``
    for a URL that is not a ``str`` and ``ValueError`` for one that is not usable."""
    if not isinstance(url, str):
        raise TypeError(f"an Elstat URL is a str, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"an Elstat URL is http(s):// or ws(s):// with a host, not {url!r}")
    parts.port  # noqa: B018 - raises ValueError for a port out of range
    path = parts.path.rstrip("/")
    if not path.endswith("/api/streaming"):
        path += "/api/streaming"
    return urllib.parse.urlunsplit((schemes[parts.scheme], parts.netloc, path, parts.query, ""))


def _names(channels: str | Iterable[str]) -> list[str]:
    return [channels] if isinstance(channels, str) else list(channels)


class _Request:
    """A SUBSCRIBE/UNSUBSCRIBE on the wire: what it asked, and who waits for it."""

    __slots__ = ("channels", "future", "op")

    def __init__(self, op: Op, channels: list[str], future: Future | None) -> None:
        self.op = op
        self.channels = channels
        self.future = future


class ElstatClient:
    """A client for Elstat's Streaming API.

    ``url`` is the status page (``https://status.example.com``) or its streaming
    endpoint. Nothing connects at construction. ``ping_interval`` and ``ping_timeout``
    (seconds) keep the connection honest: Elstat has no heartbeats, so after
    ``ping_interval`` without receiving anything the client pings, and a connection
    that answers nothing for ``ping_timeout`` after that is presumed dead and replaced.
    The other options are ``LeapClient``'s (``sslopt``, ``ssl_context``, ``header``,
    the proxy options, ``trust_env``, ``connect_timeout``, ``send_timeout``,
    ``close_timeout``, ``max_message_size``, ``max_message_items``, ``backoff``,
    ``clock``).
    """

    def __init__(
        self,
        url: str,
        logger: Logger | None = None,
        *,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        sslopt: Mapping[str, Any] | None = None,
        ssl_context: Any = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_message_size: int = 1024 * 1024,
        **options: Any,
    ) -> None:
        ping = (check_seconds(ping_interval, "ping_interval"), check_seconds(ping_timeout, "ping_timeout"))
        self.logger: Logger = logger if logger is not None else StdlibLogger()
        if ssl_context is not None:
            sslopt = dict(sslopt or {}, context=ssl_context)
        self._ping = ping
        self._core = ConnectionCore(
            self,
            url=streaming_url(url),
            options=ConnectOptions(sslopt=sslopt, max_message_size=max_message_size, **options),
            logger=self.logger,
            backoff=backoff,
            clock=clock,
        )
        self._lock = self._core.lock
        self._requests: dict[tuple[int, int], _Request] = {}
        self._wanted: dict[str, None] = {}  # what the application asked for: re-subscribed after reconnects
        self._confirmed: dict[str, None] = {}  # what the server confirmed

    def __repr__(self) -> str:
        return f"<ElstatClient state={self.state.connection_state.value} url={self.url!r}>"

    @property
    def state(self) -> StateInfo:
        """The current :class:`~leap_sync.state.StateInfo`."""
        return self._core.state

    @property
    def url(self) -> str:
        """The streaming endpoint."""
        return self._core.url

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channels the server confirmed (and that were not unsubscribed since),
        in the order they were confirmed."""
        with self._lock:
            return tuple(self._confirmed)

    def add_state_update_listener(self, listener: StateListener) -> Callable[[], None]:
        """As ``LeapClient.add_state_update_listener``: on the callbacks thread, in
        order; returns a function that removes it."""
        return self._core.add_state_update_listener(listener)

    def data_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[DataEvent]:
        """A new channel of :class:`~leap_sync.elstat.DataEvent`, in wire order."""
        return self._core.new_channel(_DATA, maxsize, overflow)

    def incident_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[IncidentEvent]:
        """A new channel of :class:`~leap_sync.elstat.IncidentEvent` (new, update,
        close), in wire order."""
        return self._core.new_channel(_INCIDENTS, maxsize, overflow)

    # -- connecting and closing ----------------------------------------------------------

    def connect(self, wait: bool = False, timeout: float | None = None) -> None:
        """One connection attempt, bounded by ``connect_timeout``; as
        ``LeapClient.connect`` (Elstat has no authentication: the client is
        ``CONNECTED`` once the websocket is open)."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._core.connect(deadline)
        if wait:
            self.wait_connected(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until ``CONNECTED``; raises as ``LeapClient.wait_connected``."""
        self._core.wait_connected(timeout, lambda: True)

    def close(self) -> None:
        """Close for good; as ``LeapClient.close``."""
        self._core.close()

    def __enter__(self) -> ElstatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self, channels: str | Iterable[str], timeout: float | None = 10.0, *, wait: bool = False
    ) -> list[str]:
        """Subscribe to ``<type>:<name>`` channels; return those the server confirmed
        (unknown ones are left out), in the order asked.

        A long list goes out in as many payloads as the 256-byte limit needs; a name
        that cannot fit even alone raises ``ValueError`` before anything is sent. The
        channels are re-subscribed after every reconnect. Raises
        :class:`LeapConnectionError` (not connected, or the connection dropped before
        every answer came) and :class:`LeapTimeoutError` after ``timeout`` seconds.
        """
        return self._request(Op.SUBSCRIBE, _names(channels), timeout, wait)

    def unsubscribe(
        self, channels: str | Iterable[str], timeout: float | None = 10.0, *, wait: bool = False
    ) -> list[str]:
        """Unsubscribe; return the channels the server confirmed it unsubscribed."""
        return self._request(Op.UNSUBSCRIBE, _names(channels), timeout, wait)

    def _request(self, op: Op, channels: list[str], timeout: float | None, wait: bool) -> list[str]:
        groups = split_request(op, channels)  # ValueError before anything is sent
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        names = [name for group in groups for name in group]
        futures: list[Future] = []
        keys: list[tuple[int, int]] = []
        try:
            for group in groups:
                future = Future()
                futures.append(future)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._core.send(
                    {"op": int(op), "channels": group},
                    wait,
                    remaining,
                    functools.partial(self._expect, op=op, group=group, future=future, keys=keys),
                )
                wait = False  # connected now; later groups go on the same connection
            self._core.log.debug("subscribe" if op is Op.SUBSCRIBE else "unsubscribe", {"channels": len(names)})
            confirmed: list[str] = []
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not future.wait(remaining):
                    raise LeapTimeoutError(f"no answer to {op.name} within {timeout:g} s")
                if future.error is not None:
                    raise future.error
                confirmed += future.value
            return confirmed
        finally:
            with self._lock:
                for key in keys:
                    request = self._requests.get(key)
                    if request is not None:
                        request.future = None  # its answer still updates subscriptions

    def _expect(self, session: Any, op: Op, group: list[str], future: Future | None, keys: list[Any]) -> None:
        """(Under the connection's lock, right before the frame is queued.) Record the
        request, and what the application wants from now on: a call that fails before
        sending changes nothing."""
        key = (id(session), cast(ElstatSession, session).expect_reply(op, group))
        keys.append(key)
        with self._lock:
            self._requests[key] = _Request(op, group, future)
            for name in group:
                if op is Op.SUBSCRIBE:
                    self._wanted[name] = None
                else:
                    self._wanted.pop(name, None)

    # -- what the core asks (the I/O thread; never blocks) ----------------------------------

    def new_session(self) -> ElstatSession:
        return ElstatSession(*self._ping, max_items=self._core.options.max_message_items)

    def deliver(self, live: Live, result: ElstatResult) -> None:
        core = self._core
        if result.data:
            for channel in core.channels(_DATA):
                channel._put_many(result.data)
        if result.incidents:
            for channel in core.channels(_INCIDENTS):
                channel._put_many(result.incidents)
        for number, reply in result.replies:
            with self._lock:
                request = self._requests.pop((id(live.session), number), None) if number is not None else None
                if reply.op is Op.SUBSCRIBED:
                    for name in request.channels if request is not None else ():
                        if name not in reply.channels:
                            self._confirmed.pop(name, None)  # refused (again)
                    asked = request.channels if request is not None else self._wanted
                    for name in reply.channels:
                        if name in asked:  # never a channel this client did not ask for
                            self._confirmed[name] = None
                else:
                    for name in reply.channels:
                        self._confirmed.pop(name, None)
            if request is not None and request.future is not None:
                request.future.set([name for name in request.channels if name in reply.channels])
        for op in result.unknown_ops:
            core.log.info("ignoring a frame with an unknown op", {"op": op})

    def on_connected(self, live: Live) -> None:
        with self._lock:
            # A new connection has no subscription yet: what stands is what is wanted and
            # was confirmed before, until the answers to the re-subscriptions say otherwise.
            self._confirmed = {name: None for name in self._confirmed if name in self._wanted}
            wanted = list(self._wanted)
        if not wanted:
            return
        self._core.log.debug("resubscribing", {"channels": len(wanted)})
        session = cast(ElstatSession, live.session)
        with live.lock:
            for group in split_request(Op.SUBSCRIBE, wanted):
                if self._core.closing.is_set():  # close() wants the thread: stop re-subscribing
                    return
                self._expect(session, Op.SUBSCRIBE, group, None, [])
                if not live.emit({"op": int(Op.SUBSCRIBE), "channels": group}):
                    return

    def on_lost(self, error: LeapConnectionError, session: Any) -> None:
        fatal = self._refusal(error)
        self._fail_requests(fatal if fatal is not None else LeapConnectionError(f"connection lost: {error}"))

    def on_finish(self, error: BaseException) -> None:
        self._fail_requests(error)

    def _fail_requests(self, error: BaseException) -> None:
        with self._lock:
            requests = list(self._requests.values())
            self._requests.clear()
        for request in requests:
            if request.future is not None:
                request.future.fail(error)

    def awaiting(self, session: Any) -> tuple[str, str]:
        return ("upgrade", "websocket upgrade")  # never asked: connected from the start

    def decide(self, error: LeapConnectionError, session: Any, wrote: bool) -> Decision:
        fatal = self._refusal(error)  # fatal whatever was written (DESIGN.md)
        if fatal is not None:
            return Decision(CloseAction.FATAL, fatal)
        return Decision(CloseAction.RECONNECT, error)

    @staticmethod
    def _refusal(error: LeapConnectionError) -> LeapConnectionError | None:
        """The error to report when ``error`` is Elstat refusing what the client sent
        (4200 or 4420), named; else ``None``."""
        code = error.close_code
        if code not in (CloseCode.INVALID_PAYLOAD, CloseCode.TOO_MUCH):
            return None
        return error.with_message(
            f"Elstat closed the connection with {code} {CloseCode(code).name}"
            f"{': ' + error.close_reason if error.close_reason else ''} "
            "(it refused what this client sent; reconnecting would only repeat it)"
        )

    def scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        return error  # Elstat has no secrets

    def redact(self, text: str) -> str:
        return text
