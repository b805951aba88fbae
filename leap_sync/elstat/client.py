"""``ElstatClient``: a synchronous client for Elstat's Streaming API (status pages).

A thin façade over :class:`~leap_sync.connection.core.ConnectionCore`, the same core as
``LeapClient`` (threads, bounded and interruptible connection attempts, backoff,
state listeners, ``close()``, event channels): see :mod:`leap_sync.connection.core` for the thread
contract. What is Elstat's lives here and in :mod:`leap_sync.elstat.requests`:
subscriptions (split over 256-byte payloads, re-subscribed after every reconnect),
matching SUBSCRIBED/UNSUBSCRIBED to the calls waiting for them, and the close-code
policy (4200 and 4420 are fatal: they mean this client sent something Elstat refuses,
which reconnecting would only repeat).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..backoff import Backoff
from ..channels import EventChannel
from ..connection.core import ConnectionCore
from ..connection.handler import ARRIVALS, Decision, Live, in_arrival_order, scrub_error
from ..connection.options import ConnectOptions
from ..connection.stats import Stats
from ..connection.timeouts import check_seconds, check_timeout
from ..errors import LeapConnectionError
from ..log import AnyLogger, Logger, as_logger
from ..state import StateInfo
from ..wire.close import CloseAction
from ..wire.secrets import Secrets, header_secrets
from ..wire.urls import redact_url, redact_urls, url_secrets
from .protocol import CloseCode, DataEvent, IncidentEvent, Op
from .requests import Requests
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
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # urllib's text may quote the password: never shown
        raise ValueError(f"an Elstat URL has a bad host or port: {redact_url(url)!r}") from None
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"an Elstat URL is http(s):// or ws(s):// with a host, not {redact_url(url)!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/api/streaming"):
        path += "/api/streaming"
    return urllib.parse.urlunsplit((schemes[parts.scheme], parts.netloc, path, parts.query, ""))


def _names(channels: str | Iterable[str]) -> list[str]:
    return [channels] if isinstance(channels, str) else list(channels)


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
        logger: AnyLogger | None = None,
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
        self._logger: Logger = as_logger(logger)
        if ssl_context is not None:
            sslopt = dict(sslopt or {}, context=ssl_context)
        self._ping = ping
        # Every secret the client knows: the URL's, an explicit proxy's (an
        # environment proxy's is added when the connection chooses it).
        self._secrets = Secrets(*url_secrets(url)) if isinstance(url, str) else Secrets()
        connect_options = ConnectOptions(sslopt=sslopt, max_message_size=max_message_size, **options)
        self._secrets.add_credentials(connect_options.proxy.auth if connect_options.proxy else None)
        for secret in header_secrets(connect_options.headers):
            self._secrets.add(secret)
        try:
            self._core = ConnectionCore(
                _ElstatHandler(self),
                url=streaming_url(url),
                options=connect_options,
                logger=self._logger,
                backoff=backoff,
                clock=clock,
            )
        except ValueError as exc:  # it may name the URL: never with a secret in it
            shown = self._redact(str(exc))
            if shown != str(exc):
                raise ValueError(shown) from None
            raise
        self._lock = self._core.lock
        self._calls = Requests(self._core)
        self._wanted = self._calls.wanted  # the same dict

    def __repr__(self) -> str:
        return f"<ElstatClient state={self.state.connection_state.value} url={self._core.show(self.url)!r}>"

    @property
    def state(self) -> StateInfo:
        """The current :class:`~leap_sync.state.StateInfo`."""
        return self._core.state

    @property
    def stats(self) -> Stats:
        """A :class:`~leap_sync.Stats` snapshot, as ``LeapClient.stats``
        (``heartbeat_rtt`` always ``None``: Elstat has no heartbeats). Cheap and safe
        from any thread."""
        return self._core.stats(None)

    @property
    def url(self) -> str:
        """The streaming endpoint."""
        return self._core.url

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channels the server confirmed (and that were not unsubscribed since),
        in the order they were confirmed."""
        with self._lock:
            return tuple(self._calls.confirmed)

    def add_state_update_listener(self, listener: StateListener) -> Callable[[], None]:
        """As ``LeapClient.add_state_update_listener``: on the callbacks thread, in
        order; returns a function that removes it."""
        return self._core.add_state_update_listener(listener)

    def data_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[DataEvent]:
        """A new channel of :class:`~leap_sync.elstat.DataEvent`, in wire order (fed
        for as long as the application holds it; see ``LeapClient.message_event_channel``)."""
        return self._core.new_channel(_DATA, maxsize, overflow)

    def incident_channel(self, maxsize: int = 0, overflow: str = "drop_oldest") -> EventChannel[IncidentEvent]:
        """A new channel of :class:`~leap_sync.elstat.IncidentEvent` (new, update,
        close), in wire order."""
        return self._core.new_channel(_INCIDENTS, maxsize, overflow)

    def _arrivals_channel(self) -> EventChannel[DataEvent | IncidentEvent | StateInfo]:
        """(For ``leap-sync elstat``.) A channel of data and incident events and state
        transitions together, in the order they happened."""
        return self._core.new_channel(ARRIVALS, 0, "drop_oldest")

    # -- connecting and closing ----------------------------------------------------------

    def connect(self, wait: bool = False, timeout: float | None = None) -> None:
        """One connection attempt, bounded by ``connect_timeout``; as
        ``LeapClient.connect`` (Elstat has no authentication: the client is
        ``CONNECTED`` once the websocket is open)."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._core.connect(deadline, timeout)
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
        :class:`~leap_sync.LeapConnectionError` (not connected, or the connection dropped before
        every answer came: either way the call changes nothing, and the next
        connection is subscribed to what stood before it) and
        :class:`~leap_sync.LeapTimeoutError` after ``timeout`` seconds (the server's later answer
        still counts). A channel another call is already subscribing (unanswered) is
        not sent again: this call shares that answer. A retry after a timeout sends
        its channels again and is answered even if the server never answers the
        first request.
        """
        return self._calls.call(Op.SUBSCRIBE, _names(channels), timeout, wait)

    def unsubscribe(
        self, channels: str | Iterable[str], timeout: float | None = 10.0, *, wait: bool = False
    ) -> list[str]:
        """Unsubscribe; return the channels the server confirmed it unsubscribed.
        Raises as :meth:`subscribe` (a call that fails changes nothing: the channels
        stay subscribed, and are re-subscribed after a reconnect)."""
        return self._calls.call(Op.UNSUBSCRIBE, _names(channels), timeout, wait)

    # -- what the core asks (the I/O thread; never blocks), through _ElstatHandler -----------

    def _new_session(self) -> ElstatSession:
        return ElstatSession(*self._ping, max_items=self._core.options.max_message_items)

    def _deliver(self, live: Live, result: ElstatResult) -> None:
        core = self._core
        if result.data:
            core.registry.feed(_DATA, result.data)
        if result.incidents:
            core.registry.feed(_INCIDENTS, result.incidents)
        if (result.data or result.incidents) and core.registry.references(ARRIVALS):
            after = result.incidents_after
            if len(after) != len(result.incidents):  # a result built without positions
                after = [len(result.data)] * len(result.incidents)
            core.registry.feed(ARRIVALS, in_arrival_order(result.data, list(zip(after, result.incidents, strict=True))))
        if result.replies:
            self._calls.on_replies(live, result.replies)
        for op in result.unknown_ops:
            core.log.info("ignoring a frame with an unknown op", {"op": op})

    def _on_connected(self, live: Live) -> None:
        self._calls.on_connected(live)

    def _on_lost(self, error: LeapConnectionError, session: Any) -> None:
        fatal = self._refusal(error)
        self._calls.fail(fatal if fatal is not None else LeapConnectionError(f"connection lost: {error}"))

    def _on_finish(self, error: BaseException) -> None:
        self._calls.fail(error)

    def _awaiting(self, session: Any) -> tuple[str, str]:
        return ("upgrade", "websocket upgrade")  # never asked: connected from the start

    def _decide(self, error: LeapConnectionError, session: Any, wrote: bool) -> Decision:
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

    def _scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        return scrub_error(error, self._redact)  # no token: what a URL or a proxy may carry

    def _redact(self, text: str) -> str:
        return redact_urls(self._secrets(text))


class _ElstatHandler:
    """What the connection core calls (:class:`~leap_sync.connection.handler.Handler`),
    kept off the client's public surface: each call goes to the client's private
    method of the same name."""

    __slots__ = ("client",)

    def __init__(self, client: ElstatClient) -> None:
        self.client = client

    def new_session(self) -> ElstatSession:
        return self.client._new_session()

    def deliver(self, live: Live, result: ElstatResult) -> None:
        self.client._deliver(live, result)

    def on_connected(self, live: Live) -> None:
        self.client._on_connected(live)

    def on_lost(self, error: LeapConnectionError, session: Any) -> None:
        self.client._on_lost(error, session)

    def on_finish(self, error: BaseException) -> None:
        self.client._on_finish(error)

    def awaiting(self, session: Any) -> tuple[str, str]:
        return self.client._awaiting(session)

    def decide(self, error: LeapConnectionError, session: Any, wrote: bool) -> Decision:
        return self.client._decide(error, session, wrote)

    def scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        return self.client._scrub(error)

    def redact(self, text: str) -> str:
        return self.client._redact(text)
