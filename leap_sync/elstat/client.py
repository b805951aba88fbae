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

import contextlib
import functools
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
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


@contextlib.contextmanager
def _holding_live(core: ConnectionCore, lock: threading.RLock) -> Iterator[Live | None]:
    """Hold the live connection's lock (if there is one), then ``lock`` (the order
    every thread takes them in), with ``core.live`` still that connection; yields it."""
    while True:
        live = core.live
        with live.lock if live is not None else contextlib.nullcontext(), lock:
            if core.live is live:
                yield live
                return


class _Request:
    """A SUBSCRIBE/UNSUBSCRIBE on the wire: what it asked, its answer (``future``: the
    channels confirmed, set whether or not anyone still waits), how many calls wait
    for it, and the session (connection) it went out on."""

    __slots__ = ("before", "channels", "future", "generation", "number", "op", "session", "waiters")

    def __init__(self, op: Op, channels: list[str], session: ElstatSession, number: int, waiters: int) -> None:
        self.op = op
        self.channels = channels
        self.future = Future()
        self.session = session
        self.number = number
        self.waiters = waiters
        self.before: dict[str, bool] = {}  # whether each channel was wanted before this request
        self.generation = 0  # the connection (counted by on_connected) it went out on


class ElstatClient:
    """A client for Elstat's Streaming API.

    ``url`` is the status page (``https://status.example.com``) or its streaming
    endpoint. Nothing connects at construction. ``ping_interval`` and ``ping_timeout``
    (seconds) keep the connection honest: Elstat has no heartbeats, so after
    ``ping_interval`` without receiving anything the client pings, and a connection
    that answers nothing for ``ping_timeout`` after that is presumed dead and replaced.
    The other options are ``LeapClient``'s (``sslopt``, ``ssl_context``, ``header``,
    the proxy options, ``trust_env``, ``connect_timeout``, ``send_timeout``,
    ``close_timeout``, ``max_message_size``, ``backoff``, ``clock``).
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
        self._owner: dict[str, _Request] = {}  # the latest request of a call naming each channel
        self._generation = 0  # connections set up (on_connected)

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
        """Send ``op`` for ``channels`` and wait for the answers (see the module
        :mod:`leap_sync.elstat.session` for how answers find their requests).

        A channel whose latest pending request on this connection is of the same kind
        and still awaited is not sent again: this call shares that request's answer
        for it. A call that gives up (a timeout, an error) leaves its requests to
        their answers, which still update :attr:`subscriptions`, and lets a later
        request take their channels over."""
        names = [name for group in split_request(op, channels) for name in group]  # ValueError before anything
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        held: list[_Request] = []  # the requests this call waits for (their ``waiters`` count it)
        shared_count = 0  # the first ones are other calls' requests it shares
        answered_by: dict[str, _Request] = {}
        try:
            if wait:
                self._core.wait_connected(timeout, lambda: True)
            live = self._core.live
            if live is not None and live.session.connected and not self._core.closing.is_set():
                session = cast(ElstatSession, live.session)
                with live.lock, self._lock:
                    for name in names:
                        number = session.sharing(op, name)
                        shared = self._requests.get((id(session), number)) if number is not None else None
                        if shared is not None and shared.session is session:
                            if shared not in held:
                                shared.waiters += 1
                                held.append(shared)
                            answered_by[name] = shared
            shared_count = len(held)
            to_send = [name for name in names if name not in answered_by]
            for group in split_request(op, to_send) if to_send else ():
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._core.send(
                    {"op": int(op), "channels": group},
                    False,
                    remaining,
                    functools.partial(self._expect, op=op, group=group, held=held),
                )
            for request in held[shared_count:]:  # this call's own requests
                for name in request.channels:
                    answered_by[name] = request
            self._core.log.debug(
                "subscribe" if op is Op.SUBSCRIBE else "unsubscribe",
                {"channels": len(names), "shared": len(names) - len(to_send)},
            )
            for request in held:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not request.future.wait(remaining):
                    raise LeapTimeoutError(f"no answer to {op.name} within {timeout:g} s")
                if request.future.error is not None:
                    raise request.future.error
            return [name for name in names if name in answered_by[name].future.value]
        except LeapConnectionError:
            self._undo(held[shared_count:])
            raise
        finally:
            self._let_go(held)
            with self._lock:
                for request in held[shared_count:]:
                    for name in request.channels:
                        if self._owner.get(name) is request:
                            del self._owner[name]

    def _let_go(self, held: list[_Request]) -> None:
        """A call stops waiting for ``held``: a request nobody waits for any more and
        still unanswered is abandoned in its session (see
        :meth:`ElstatSession.abandon`)."""
        if not held:
            return
        live = self._core.live
        with live.lock if live is not None else contextlib.nullcontext(), self._lock:
            for request in held:
                request.waiters -= 1
                unanswered = request.waiters == 0 and not request.future.done
                if unanswered and live is not None and request.session is live.session:
                    request.session.abandon(request.number)

    def _undo(self, requests: list[_Request]) -> None:
        """(A call that failed with a connection error: the connection ended.) Put
        back what ``requests`` changed in what the application wants, for every
        channel no later call named since, so that the call changes nothing. If a newer
        connection was already set up with the changed wishes, send it what puts it
        back (an UNSUBSCRIBE for what the call subscribed, a SUBSCRIBE for what it
        unsubscribed)."""
        if not requests:
            return
        with _holding_live(self._core, self._lock) as live:
            fix: dict[Op, list[str]] = {Op.SUBSCRIBE: [], Op.UNSUBSCRIBE: []}
            for request in requests:
                for name, was_wanted in request.before.items():
                    if self._owner.get(name) is not request:
                        continue  # a later call decided
                    if was_wanted:
                        self._wanted[name] = None
                    else:
                        self._wanted.pop(name, None)
                        self._confirmed.pop(name, None)
                    changed = was_wanted is (request.op is Op.UNSUBSCRIBE)
                    if changed and request.generation != self._generation:
                        fix[Op.SUBSCRIBE if was_wanted else Op.UNSUBSCRIBE].append(name)
            if live is None or not live.session.connected:
                return
            session = cast(ElstatSession, live.session)
            for op, names in fix.items():
                for group in split_request(op, names) if names else ():
                    if self._core.closing.is_set():
                        return
                    self._expect(session, op, group, None)
                    if not live.emit({"op": int(op), "channels": group}):
                        return

    def _expect(self, session: Any, op: Op, group: list[str], held: list[_Request] | None) -> None:
        """(Under the connection's lock, right before the frame is queued.) Record the
        request (awaited by the calling call, if ``held`` is given), and what the
        application wants from now on: a call that fails before sending changes
        nothing."""
        session = cast(ElstatSession, session)
        number = session.expect_reply(op, group)
        request = _Request(op, group, session, number, 0 if held is None else 1)
        if held is not None:
            held.append(request)
        with self._lock:
            self._requests[(id(session), number)] = request
            request.generation = self._generation
            for name in group:
                request.before[name] = name in self._wanted
                if held is not None:  # a call's, not the client's own re-subscription
                    self._owner[name] = request
                if op is Op.SUBSCRIBE:
                    self._wanted[name] = None
                else:
                    self._wanted.pop(name, None)

    # -- what the core asks (the I/O thread; never blocks) ----------------------------------

    def new_session(self) -> ElstatSession:
        return ElstatSession(*self._ping)

    def deliver(self, live: Live, result: ElstatResult) -> None:
        core = self._core
        if result.data:
            for channel in core.channels(_DATA):
                channel._put_many(result.data)
        if result.incidents:
            for channel in core.channels(_INCIDENTS):
                channel._put_many(result.incidents)
        for number, reply, claimed in result.replies:
            with self._lock:
                request = self._requests.pop((id(live.session), number), None) if number is not None else None
                if reply.op is Op.SUBSCRIBED:
                    for name in claimed:
                        if name not in reply.channels:
                            self._confirmed.pop(name, None)  # refused (again)
                    asked = claimed if request is not None else self._wanted
                    for name in reply.channels:
                        # never a channel this client did not ask for, nor one a
                        # later call unsubscribed (its UNSUBSCRIBE follows this answer)
                        if name in asked and name in self._wanted:
                            self._confirmed[name] = None
                else:
                    for name in reply.channels:
                        self._confirmed.pop(name, None)
            if request is not None:
                request.future.set([name for name in request.channels if name in reply.channels])
        for op in result.unknown_ops:
            core.log.info("ignoring a frame with an unknown op", {"op": op})

    def on_connected(self, live: Live) -> None:
        session = cast(ElstatSession, live.session)
        # Under the connection's lock, as calls register theirs: an unsubscribe()
        # either registers first (and is not re-subscribed here) or its UNSUBSCRIBE
        # follows the re-subscription on the wire (and the server ends unsubscribed).
        with live.lock:
            with self._lock:
                # A new connection has no subscription yet: what stands is what is wanted
                # and was confirmed before, until the answers to the re-subscriptions say
                # otherwise.
                self._generation += 1
                self._confirmed = {name: None for name in self._confirmed if name in self._wanted}
                wanted = list(self._wanted)
            if not wanted:
                return
            self._core.log.debug("resubscribing", {"channels": len(wanted)})
            for group in split_request(Op.SUBSCRIBE, wanted):
                if self._core.closing.is_set():  # close() wants the thread: stop re-subscribing
                    return
                self._expect(session, Op.SUBSCRIBE, group, None)
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
