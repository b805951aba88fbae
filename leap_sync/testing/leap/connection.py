"""Leap Edge's rules on one connection of the embedded Leap Edge server.

:class:`LeapConnection` is a :class:`~leap_sync.testing.websocket.connection.WebSocketConnection`
(the thread, socket and queue machinery) that reads the encoding and compression from
the upgrade request's query, applies the connection rules
(:class:`~leap_sync.protocol.server_session.ServerSession`: Identify first, heartbeats,
tagged requests and their deadlines) and hands each client frame to the server's
business logic (:class:`LeapHost`).
"""

from __future__ import annotations

import collections
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ...protocol.codec import Codec
from ...protocol.models import ClientFrame, ClientHeartbeat, Identify
from ...protocol.opcodes import CloseCode
from ...protocol.server_session import ServerClose, ServerSession
from ...wire.wsframes import unmasked_message
from ..websocket.connection import WebSocketConnection
from ..websocket.sockets import ConnectionHost, Settings
from .model import Session

if TYPE_CHECKING:
    import socket

__all__ = ["SLOW_CONSUMER_CLOSE_CODE", "HeartbeatSettings", "LeapConnection", "LeapHost", "live_sessions"]

SLOW_CONSUMER_CLOSE_CODE = CloseCode.UNKNOWN
"""The close code of a client shed for not reading (its outbound queue overflowed):
4000, Leap Edge's "unknown error, try reconnecting", which every Leap client answers
by reconnecting; the reason says ``slow consumer``."""


@attrs.frozen
class HeartbeatSettings:
    """Leap Edge's deadlines, shared by every connection of one server (seconds)."""

    interval: float
    identify_timeout: float
    tolerance: float | None
    request_timeout: float | None
    strict_heartbeats: bool


class LeapHost(ConnectionHost["LeapConnection"], Protocol):
    """What a Leap connection needs from its server, besides :class:`ConnectionHost`."""

    @property
    def enforcing_heartbeats(self) -> bool: ...

    def connection_frame(self, conn: LeapConnection, frame: ClientFrame, replies: list[dict[str, Any]]) -> None:
        """Act on one client frame; may raise :class:`ServerClose`."""


class LeapConnection(WebSocketConnection):
    """One Leap Edge connection (see the module docstring).

    Attributes other threads read (under :attr:`lock` for a consistent snapshot),
    besides those of :class:`WebSocketConnection`: ``encoding``, ``compression``,
    ``identify``, ``session``, ``heartbeats`` and ``last_heartbeat``.
    """

    slow_consumer_code = SLOW_CONSUMER_CLOSE_CODE

    def __init__(
        self,
        host: LeapHost,
        settings: Settings,
        heartbeat: HeartbeatSettings,
        sock: socket.socket,
        cid: str,
        name: str,
    ) -> None:
        super().__init__(host, settings, sock, cid, name)
        self.host: LeapHost = host
        self.heartbeat = heartbeat
        self.encoding = "json"
        self.compression = "none"
        self.rules: ServerSession | None = None  # guarded by ``lock``
        self.identify: Identify | None = None
        self.session: Session | None = None
        self.heartbeats = 0
        self.last_heartbeat: float | None = None
        self._later: collections.deque[tuple[float, bytes]] = collections.deque()  # (due, frame): delayed acks
        self._later_bytes = 0

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

    def send_later(self, frame: dict[str, Any], delay: float) -> None:
        """Queue ``frame`` ``delay`` seconds from now (connection's thread only). The
        frames held back count toward ``send_queue_limit`` with those queued: past it,
        the client is shed as a slow consumer."""
        wire = self.encode(frame)
        if self._later_bytes + len(wire) + self.outbox.queued > self.settings.send_queue_limit:
            self.shed()
            return
        self._later.append((time.monotonic() + delay, wire))
        self._later_bytes += len(wire)

    # -- hooks (on the connection's thread) ----------------------------------------------

    def handle_open(self, path: str) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        self.encoding = query.get("encoding", "json")
        self.compression = query.get("compression", "none")
        h = self.heartbeat
        self.rules = ServerSession(
            Codec(self.encoding, max_size=self.settings.max_message_size),
            interval=h.interval,
            identify_timeout=h.identify_timeout,
            now=time.monotonic(),
            tolerance=h.tolerance,
            request_timeout=h.request_timeout,
            compression=self.compression == "zlib",
            strict=h.strict_heartbeats,
        )

    def handle_message(self, payload: str | bytes) -> None:
        assert self.rules is not None
        now = time.monotonic()
        try:
            with self.lock:
                self.rules.check_heartbeats = self.host.enforcing_heartbeats
                frame, replies = self.rules.receive(payload, isinstance(payload, bytes), now)
                if isinstance(frame, ClientHeartbeat) and frame.tag is None:
                    self.heartbeats += 1
                    self.last_heartbeat = now
            self.host.connection_frame(self, frame, replies)
        except ServerClose as close:
            self.begin_close(close.code, close.reason)

    def next_deadline(self) -> float | None:
        later = self._later[0][0] if self._later else None
        if self.rules is None:
            return later
        with self.lock:
            self.rules.check_heartbeats = self.host.enforcing_heartbeats
            deadline = self.rules.deadline
        return deadline if later is None else min(later, deadline)

    def check_deadlines(self, now: float) -> None:
        while self._later and self._later[0][0] <= now:
            wire = self._later.popleft()[1]
            self._later_bytes -= len(wire)
            self.send_wire(wire)
        if self.rules is None:
            return
        try:
            with self.lock:
                self.rules.check_heartbeats = self.host.enforcing_heartbeats
                self.rules.check(now)
        except ServerClose as close:
            self.begin_close(close.code, close.reason)


def live_sessions(conns: list[LeapConnection]) -> list[Session]:
    """The distinct sessions of ``conns``, in order."""
    sessions: dict[int, Session] = {}
    for conn in conns:
        if conn.session is not None:
            sessions.setdefault(id(conn.session), conn.session)
    return list(sessions.values())
