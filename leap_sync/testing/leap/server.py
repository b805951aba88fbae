"""``LeapEdgeServer``: an embedded, protocol-complete Leap Edge server for tests.

It listens on loopback port 0 by default (any IPv4 or IPv6 host, ``"::"`` dual-stack),
speaks websockets through the ``websockets`` library's sans-I/O protocol and Leap Edge
through the same sans-I/O layer as the client
(:class:`~leap_sync.protocol.server_session.ServerSession` for the connection rules,
:mod:`~leap_sync.protocol.frames` for every frame it sends). Everything it knows is set
up through its control API, thread-safe and callable while clients are connected; the
same API injects faults. The parts live in modules named for what they hold:

- :mod:`~leap_sync.testing.leap.model`: tokens, channels, sessions, Pipe rooms and their
  rules; :mod:`~leap_sync.testing.leap.registry`: the calls that set them up;
- :mod:`~leap_sync.testing.leap.handling`: what each client frame does;
- :mod:`~leap_sync.testing.leap.events`: events sent to clients (publish, state, DMs);
- :mod:`~leap_sync.testing.leap.faults`: fault injection;
- :mod:`~leap_sync.testing.leap.introspection`: connections, counters, waits;
- :mod:`~leap_sync.testing.leap.connection`: Leap Edge's rules on one connection;
- :mod:`~leap_sync.testing.leap.core`: the state they share and how frames reach clients;
- :mod:`~leap_sync.testing.websocket.embedded`, :mod:`~leap_sync.testing.websocket.connection`,
  :mod:`~leap_sync.testing.websocket.outbox`, :mod:`~leap_sync.testing.websocket.listener`,
  :mod:`~leap_sync.testing.websocket.sockets`: the threads, queues and sockets, shared with
  :class:`~leap_sync.testing.ElstatServer`.

Heartbeats follow :mod:`leap_sync.protocol.server_heartbeat`: beats on the Hello grid,
extra beats acknowledged and harmless, 4007 for a beat missed by more than
``heartbeat_tolerance`` (default 20% of the interval, at least 50 ms) or a tagged
request unanswered for ``heartbeat_request_timeout`` (default the larger of the
tolerance and one second); before Identify only ``identify_timeout`` applies (4002).
``strict_heartbeats=True`` also closes a client for an early or extra beat.

Each connection has its own thread and a bounded outbound queue
(``send_queue_limit`` bytes): a client that stops reading is closed 4000 ("slow
consumer") when its queue overflows, and never delays anyone else; no lock is held
across socket I/O. Binaries (``bytes``) reach ETF connections unchanged and close
JSON connections 4000 (see :mod:`leap_sync.testing.leap.core`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ...protocol.models import ClientFrame
from ..websocket.embedded import DEFAULT_HISTORY_LIMIT
from ..websocket.sockets import Settings
from ..websocket.validation import (
    check_count,
    check_host_port,
    check_seconds,
    check_size,
    check_ssl_context,
    check_text,
)
from .connection import HeartbeatSettings, LeapConnection
from .faults import Faults
from .handling import ClientFrames
from .introspection import ConnectionInfo, Introspection
from .registry import Registry

__all__ = ["SERVER_HEADER", "ConnectionInfo", "LeapEdgeServer"]

SERVER_HEADER = "leap-sync-embedded-leap-edge"
"""The ``Server`` header of the upgrade response."""


class LeapEdgeServer(ClientFrames, Registry, Faults, Introspection):
    """An embedded Leap Edge server on ``host:port`` (loopback, a free port by default).

    Use it as a context manager, or call :meth:`start` and :meth:`close`. ``url`` is
    the websocket endpoint (``ws://127.0.0.1:<port>/ws``). Times are in seconds, sizes
    in bytes. ``ssl_context`` serves ``wss://``. ``project_id`` is the default project
    of the control methods. ``on_frame(cid, frame)``, when given, sees every parsed
    client frame (on the connection's thread). ``open_timeout`` bounds the TLS and
    HTTP opening handshake, ``close_timeout`` the closing handshake (after which the
    TCP connection is cut), ``send_queue_limit`` the bytes queued for one client.
    ``heartbeat_ack_delay`` holds back each heartbeat acknowledgement, like a network
    round trip: the official JavaScript client (``@onehop/leap-edge-js`` 1.0.11) takes
    an ack that arrives in the same millisecond as its beat for a missing one
    (``diff && ...``) and reconnects, so serve it with 2 ms or more (``leap-sync
    serve`` defaults to 5 ms). ``history_limit`` is how many closed connections
    :attr:`all_connections` keeps listed (the oldest are forgotten, so a server under a
    reconnect loop stays the same size; :attr:`frames_in`/:attr:`frames_out` still
    count them). Nothing starts until :meth:`start`.

    Every option is checked here, before anything is set up (``TypeError`` for a wrong
    type, ``ValueError`` out of range; durations are finite ``int``/``float`` seconds,
    at most a day, sizes ``int`` bytes, ``bool`` is no number):

    - ``host`` a ``str``, ``port`` 0 to 65535;
    - ``heartbeat_interval`` at least 0.001 (Hello carries whole milliseconds);
      ``identify_timeout``, ``open_timeout``, and ``heartbeat_tolerance`` and
      ``heartbeat_request_timeout`` unless ``None``: above 0;
    - ``heartbeat_ack_delay``, ``session_ttl``, ``close_timeout``: 0 or more;
    - ``max_message_size``, ``send_queue_limit``: 1 byte to 1 TiB;
    - ``history_limit``: an ``int`` from 0 to 10,000,000;
    - ``project_id`` a non-empty ``str`` UTF-8 can encode; ``strict_heartbeats`` a
      ``bool``; ``ssl_context`` an :class:`ssl.SSLContext` or ``None``; ``on_frame``
      callable or ``None``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_interval: float = 30.0,
        identify_timeout: float = 10.0,
        heartbeat_tolerance: float | None = None,
        heartbeat_request_timeout: float | None = None,
        strict_heartbeats: bool = False,
        heartbeat_ack_delay: float = 0.0,
        session_ttl: float = 30.0,
        project_id: str = "project_x",
        ssl_context: Any = None,
        max_message_size: int = 1024 * 1024,
        send_queue_limit: int = 16 * 1024 * 1024,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        on_frame: Callable[[str, ClientFrame], None] | None = None,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        check_host_port(host, port)
        check_count("history_limit", history_limit)
        heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval, minimum=0.001, inclusive=True)
        identify_timeout = check_seconds("identify_timeout", identify_timeout)
        if heartbeat_tolerance is not None:
            heartbeat_tolerance = check_seconds("heartbeat_tolerance", heartbeat_tolerance)
        if heartbeat_request_timeout is not None:
            heartbeat_request_timeout = check_seconds("heartbeat_request_timeout", heartbeat_request_timeout)
        if not isinstance(strict_heartbeats, bool):
            raise TypeError(f"strict_heartbeats must be a bool, not {type(strict_heartbeats).__name__}")
        heartbeat_ack_delay = check_seconds("heartbeat_ack_delay", heartbeat_ack_delay, inclusive=True)
        session_ttl = check_seconds("session_ttl", session_ttl, inclusive=True)
        check_text("project_id", project_id)
        check_ssl_context(ssl_context)
        check_size("max_message_size", max_message_size)
        check_size("send_queue_limit", send_queue_limit)
        open_timeout = check_seconds("open_timeout", open_timeout)
        close_timeout = check_seconds("close_timeout", close_timeout, inclusive=True)
        if on_frame is not None and not callable(on_frame):
            raise TypeError(f"on_frame must be callable or None, not {type(on_frame).__name__}")
        super().__init__(
            host,
            port,
            Settings(
                server_header=SERVER_HEADER,
                max_message_size=max_message_size,
                send_queue_limit=send_queue_limit,
                open_timeout=open_timeout,
                close_timeout=close_timeout,
                ssl_context=ssl_context,
            ),
            HeartbeatSettings(
                interval=heartbeat_interval,
                identify_timeout=identify_timeout,
                tolerance=heartbeat_tolerance,
                request_timeout=heartbeat_request_timeout,
                strict_heartbeats=strict_heartbeats,
            ),
            project_id=project_id,
            session_ttl=session_ttl,
            history_limit=history_limit,
        )
        self.heartbeat_interval = heartbeat_interval
        self.identify_timeout = identify_timeout
        self.heartbeat_tolerance = heartbeat_tolerance
        self.heartbeat_request_timeout = heartbeat_request_timeout
        self.session_ttl = session_ttl
        self._on_frame = on_frame
        self._ack_delay = heartbeat_ack_delay

    def __repr__(self) -> str:
        url = self.url if self.running else None
        return f"<LeapEdgeServer {'running' if self.running else 'stopped'} url={url!r}>"

    def _new_connection(self, sock: socket.socket, cid: str, name: str) -> LeapConnection:
        return LeapConnection(self, self._settings, self._heartbeat, sock, cid, name)

    @property
    def url(self) -> str:
        """The websocket endpoint, ``ws://host:port/ws`` (``wss`` with TLS; an IPv6
        host in brackets)."""
        return self._address("ws", "/ws")
