"""``ElstatServer``: an embedded server for Elstat's Streaming API, for tests.

It listens on loopback port 0 by default (any IPv4 or IPv6 host, ``"::"`` dual-stack)
at ``/api/streaming``, on the same machinery as
:class:`~leap_sync.testing.LeapEdgeServer` (:mod:`~leap_sync.testing.websocket.embedded`: one
thread per connection, a bounded outbound queue each, no lock held across socket I/O),
and speaks Elstat through :mod:`leap_sync.elstat.protocol` (every client payload
parsed by :func:`~leap_sync.elstat.protocol.parse_client_payload`, every frame built by
its ``*_frame`` functions). The rules on one connection are in
:mod:`~leap_sync.testing.elstat.connection`.

The server speaks only when spoken to (no hello, no heartbeats; websockets answers
pings):

- SUBSCRIBE is answered SUBSCRIBED with the requested channels that exist, in the
  order asked, each once (unknown ones left out); UNSUBSCRIBE is answered UNSUBSCRIBED
  with the requested channels the connection was subscribed to. Both answers always
  come, with an empty list if need be.
- :meth:`ElstatServer.push_data` sends DATA to a channel's subscribers;
  :meth:`ElstatServer.push_incident` sends an incident to every open connection.
- Payloads over 256 bytes close the connection 4420 TOO_MUCH, invalid ones 4200
  INVALID_PAYLOAD (see :mod:`~leap_sync.testing.elstat.connection`).

Control calls are thread-safe, callable while clients are connected, and return at
once whatever the clients do: frames are queued (in the same order on every
connection), closes and drops are posted to each connection's thread.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import attrs

from ...elstat.protocol import MAX_PAYLOAD, Op, Request, check_channel, data_frame, incident_frame, reply_frame
from ...wire.wsframes import unmasked_message
from ..websocket.embedded import DEFAULT_HISTORY_LIMIT, Inspectable
from ..websocket.sockets import Settings
from ..websocket.validation import check_count, check_host_port, check_seconds, check_size, check_ssl_context
from .connection import ElstatConnection

__all__ = ["SERVER_HEADER", "ElstatConnectionInfo", "ElstatServer"]

SERVER_HEADER = "leap-sync-embedded-elstat"
"""The ``Server`` header of the upgrade response."""
PATH = "/api/streaming"
_INCIDENT_OPS = {"new": Op.INCIDENT_NEW, "update": Op.INCIDENT_UPDATE, "close": Op.INCIDENT_CLOSE}


@attrs.frozen
class ElstatConnectionInfo:
    """A snapshot of one connection, for tests.

    ``close_code`` is the code the connection ended with, whoever sent it (the server's
    for a close it started, the client's for one the client started, 1006 for a
    connection that ended without a closing handshake), ``None`` while open.
    ``frames_in`` counts client messages; ``frames_out`` messages sent, counted when
    queued and uncounted if never written (a dropped or shed connection); ``queued``
    is the bytes still queued."""

    cid: str
    subscriptions: frozenset[str]
    open: bool
    close_code: int | None
    frames_in: int
    frames_out: int
    queued: int = 0


def _info(conn: ElstatConnection) -> ElstatConnectionInfo:
    """A snapshot of ``conn`` (call under the server's lock)."""
    with conn.lock:
        return ElstatConnectionInfo(
            cid=conn.cid,
            subscriptions=frozenset(conn.subscriptions),
            open=conn.open,
            close_code=conn.close_code,
            frames_in=conn.frames_in,
            frames_out=conn.frames_out,
            queued=conn.outbox.queued,
        )


def _channel(name: Any) -> str:
    """``name`` if it is a ``<type>:<name>`` string that UTF-8 can encode (every frame
    naming it must be sendable); ``TypeError``/``ValueError`` otherwise."""
    check_channel(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a channel name must be text UTF-8 can encode (no lone surrogates), not {name!r}") from None
    return str(name)


def _incident_op(kind: str | int) -> Op:
    if isinstance(kind, str) and kind in _INCIDENT_OPS:
        return _INCIDENT_OPS[kind]
    if isinstance(kind, int) and not isinstance(kind, bool) and kind in _INCIDENT_OPS.values():
        return Op(kind)
    raise ValueError(f'incident kind must be "new", "update", "close" or op 4, 5, 6, not {kind!r}')


class ElstatServer(Inspectable[ElstatConnection, ElstatConnectionInfo]):
    """An embedded Elstat Streaming API server on ``host:port`` (loopback, a free port
    by default); see the module docstring.

    Use it as a context manager, or call :meth:`start` and :meth:`close`. ``url`` is
    the websocket endpoint (``ws://127.0.0.1:<port>/api/streaming``), ``base_url``
    what an Elstat client is given (``http://127.0.0.1:<port>``). ``channels`` are the
    channels that exist at the start (``<type>:<name>``). ``ssl_context`` serves
    ``wss://``. Times are in seconds, sizes in bytes: ``open_timeout`` bounds the TLS
    and HTTP opening handshake, ``close_timeout`` the closing handshake (after which
    the TCP connection is cut; the default keeps :meth:`close` within a second even
    with clients that stopped reading), ``send_queue_limit`` the bytes queued for one
    client (beyond it the client is shed: closed 1013, try again later),
    ``history_limit`` how many closed connections :attr:`all_connections` keeps listed
    (the oldest are forgotten; :attr:`frames_in`/:attr:`frames_out` still count them). Threads:
    ``leap-sync-server-elstat-<n>`` accepts, and each connection gets one named
    ``leap-sync-server-elstat-<n>-conn``. Nothing starts until :meth:`start`.

    Faults come from the generic embedded websocket server it extends:
    :meth:`send_raw` (any text or binary frame), :meth:`disconnect` (any close code,
    4200 and 4420 included; 1000 by default) and :meth:`drop` (TCP cut, no close
    frame), to every open connection or to one ``cid``; so do :meth:`wait_for`,
    :meth:`close` and the context manager.

    Every option is checked here, before anything is set up (``TypeError`` for a wrong
    type, ``ValueError`` out of range): ``host`` a ``str``, ``port`` 0 to 65535,
    ``channels`` an iterable of channel names (not one ``str``), ``ssl_context`` an
    :class:`ssl.SSLContext` or ``None``, ``send_queue_limit`` an ``int`` from 1 byte to
    1 TiB, ``history_limit`` an ``int`` from 0 to 10,000,000, ``open_timeout`` above 0
    and ``close_timeout`` 0 or more, finite ``int``/``float`` seconds of at most a day.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        channels: Iterable[str] = (),
        ssl_context: Any = None,
        send_queue_limit: int = 16 * 1024 * 1024,
        open_timeout: float = 10.0,
        close_timeout: float = 0.5,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        check_host_port(host, port)
        check_count("history_limit", history_limit)
        check_ssl_context(ssl_context)
        check_size("send_queue_limit", send_queue_limit)
        open_timeout = check_seconds("open_timeout", open_timeout)
        close_timeout = check_seconds("close_timeout", close_timeout, inclusive=True)
        if isinstance(channels, str):
            raise TypeError("channels must be an iterable of channel names, not one str")
        names = [_channel(name) for name in channels]
        super().__init__(
            host,
            port,
            Settings(
                server_header=SERVER_HEADER,
                max_message_size=MAX_PAYLOAD,
                send_queue_limit=send_queue_limit,
                open_timeout=open_timeout,
                close_timeout=close_timeout,
                ssl_context=ssl_context,
            ),
            "leap-sync-server-elstat",
            history_limit,
        )
        self._channels: dict[str, None] = dict.fromkeys(names)

    def __repr__(self) -> str:
        url = self.url if self.running else None
        return f"<ElstatServer {'running' if self.running else 'stopped'} url={url!r}>"

    @property
    def url(self) -> str:
        """The websocket endpoint, ``ws://host:port/api/streaming`` (``wss`` with TLS;
        an IPv6 host in brackets)."""
        return self._address("ws", PATH)

    @property
    def base_url(self) -> str:
        """The server's base URL, ``http://host:port`` (``https`` with TLS), as an
        Elstat client takes it."""
        return self._address("http")

    # -- channels ------------------------------------------------------------------------

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels that exist, in the order they were added."""
        with self._lock:
            return tuple(self._channels)

    def add_channel(self, name: str) -> None:
        """Make a channel exist (``<type>:<name>``, text UTF-8 can encode;
        ``ValueError``/``TypeError`` otherwise). Adding one that exists does nothing."""
        _channel(name)
        with self._lock:
            self._channels[name] = None

    def remove_channel(self, name: str) -> None:
        """Make a channel stop existing (``KeyError`` if it does not): its subscribers
        are unsubscribed silently (Elstat has no message for it), and later SUBSCRIBEs
        leave it out."""
        with self._lock:
            del self._channels[name]
            for conn in self._conns.values():
                conn.subscriptions.pop(name, None)
        self.connection_changed()

    # -- pushes ----------------------------------------------------------------------------

    def push_data(self, channel: str, value: Any, *, timestamp_ms: int | None = None) -> int:
        """Send DATA ``[timestamp_ms, value]`` to the channel's subscribers; returns
        how many connections it was queued on. ``timestamp_ms`` defaults to now, in
        unix milliseconds. ``value`` is sent as given (a bool for ``status:``
        channels and an int of milliseconds for ``latency:`` ones, by convention);
        :class:`~leap_sync.errors.LeapEncodeError` for one JSON cannot carry.
        ``KeyError`` for a channel that does not exist, whose message says how to
        declare it: ``ElstatServer(channels=["status:api"])`` or
        ``server.add_channel("status:api")`` (a client cannot subscribe to a channel
        the server does not have, so pushing to one is a mistake in the test)."""
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif not isinstance(timestamp_ms, int) or isinstance(timestamp_ms, bool):
            raise TypeError("timestamp_ms must be an int of unix milliseconds")
        wire = unmasked_message(data_frame(channel, timestamp_ms, value))
        with self._lock:
            if channel not in self._channels:
                raise KeyError(
                    f"no channel {channel!r}: declare it first, with ElstatServer(channels=[{channel!r}])"
                    f" or server.add_channel({channel!r})"
                )
            # A copy: a connection whose queue overflows leaves ``_conns`` at once.
            return sum(conn.send_wire(wire) for conn in list(self._conns.values()) if channel in conn.subscriptions)

    def push_incident(self, kind: str | int, incident: dict[str, Any]) -> int:
        """Send an incident to every open connection (Elstat broadcasts them): ``kind``
        ``"new"``, ``"update"`` or ``"close"`` (or op 4, 5, 6), ``incident`` the
        object sent as ``d``. Returns how many connections it was queued on.
        ``ValueError`` for another kind, ``TypeError`` for an incident that is not a
        dict, :class:`~leap_sync.errors.LeapEncodeError` for one JSON cannot carry."""
        op = _incident_op(kind)
        if not isinstance(incident, dict):
            raise TypeError(f"an incident is a dict, not {type(incident).__name__}")
        wire = unmasked_message(incident_frame(op, incident))
        with self._lock:
            return sum(conn.send_wire(wire) for conn in list(self._conns.values()))

    # -- introspection -----------------------------------------------------------------

    def _snapshot(self, conn: ElstatConnection) -> ElstatConnectionInfo:
        return _info(conn)

    def wait_for_connections(self, count: int = 1, timeout: float = 10.0) -> list[ElstatConnectionInfo]:
        """Block until at least ``count`` connections are open; return them.
        ``TimeoutError`` after ``timeout`` seconds."""
        found: list[ElstatConnectionInfo] = []

        def ready() -> bool:
            found[:] = self.connections
            return len(found) >= count

        if not self._wait_until(ready, timeout):
            raise TimeoutError(f"{len(found)} of {count} connections after {timeout:g} s")
        return found

    # -- connection hooks (on the connection's thread) -------------------------------------

    def _new_connection(self, sock: socket.socket, cid: str, name: str) -> ElstatConnection:
        return ElstatConnection(self, self._settings, sock, cid, name)

    def http_refusal(self, path: str) -> tuple[int, str] | None:
        """Refuse an upgrade to anything but ``/api/streaming`` (any query)."""
        if urllib.parse.urlsplit(path).path != PATH:
            return 404, f"Elstat streams at {PATH}\n"
        return None

    def connection_request(self, conn: ElstatConnection, request: Request) -> None:
        """Answer SUBSCRIBE with SUBSCRIBED, UNSUBSCRIBE with UNSUBSCRIBED."""
        asked = list(dict.fromkeys(request.channels))
        with self._lock:
            if request.op is Op.SUBSCRIBE:
                done = [name for name in asked if name in self._channels]
                conn.subscriptions.update(dict.fromkeys(done))
                reply = reply_frame(Op.SUBSCRIBED, done)
            else:
                done = [name for name in asked if name in conn.subscriptions]
                for name in done:
                    del conn.subscriptions[name]
                reply = reply_frame(Op.UNSUBSCRIBED, done)
            conn.send_wire(unmasked_message(reply))  # under the lock: ordered with pushes
        self.connection_changed()
