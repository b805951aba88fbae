"""What the embedded server does with each connection and each client frame: the
upgrade request's checks, Hello, INIT, subscriptions, client messages and state
changes, Pipe rooms. These run on the connection's thread (the hooks of
:class:`~leap_sync.testing.leap.connection.LeapHost`), under the model lock.

- SUBSCRIBE answers AVAILABLE (to every connection of the session), or UNAVAILABLE
  with ``UNKNOWN`` (no such channel) or ``NOT_GRANTED``. MESSAGE and
  SET_CHANNEL_STATE from a client need a subscription (else UNAVAILABLE ``UNKNOWN``)
  and reach every subscriber, sender included.
- A frame whose values cannot be relayed (NaN from lenient JSON, an int ETF cannot
  carry) closes its sender 4005 and reaches nobody; a binary reaches ETF subscribers
  and closes JSON ones 4000 (see :mod:`leap_sync.testing.leap.core`).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from ...errors import LeapEncodeError
from ...protocol import frames
from ...protocol.codec import COMPRESSIONS, ENCODINGS
from ...protocol.etf import erlpack_available
from ...protocol.models import (
    ClientFrame,
    ClientHeartbeat,
    Identify,
    PipeRoomSubscribe,
    PipeRoomUnsubscribe,
    SendMessage,
    SetChannelState,
    Subscribe,
    UnknownClientEvent,
    Unsubscribe,
)
from ...protocol.opcodes import CloseCode
from ...protocol.server_session import ServerClose
from .connection import LeapConnection
from .events import Events

__all__ = ["ClientFrames"]


def _unavailable(channel_id: str, error_code: str | None) -> dict[str, Any]:
    return frames.dispatch("UNAVAILABLE", channel_id, {"graceful": error_code is None, "error_code": error_code})


class ClientFrames(Events):
    """The connection hooks and the business logic of client frames."""

    _on_frame: Callable[[str, ClientFrame], None] | None = None
    _ack_delay = 0.0

    # -- connection hooks (on the connection's thread) ---------------------------------

    def http_refusal(self, path: str) -> tuple[int, str] | None:
        """Refuse an upgrade to anything but ``/ws`` with a supported query."""
        parts = urllib.parse.urlsplit(path)
        if not parts.path.endswith("/ws"):
            return 404, "Leap Edge lives at /ws\n"
        query = dict(urllib.parse.parse_qsl(parts.query))
        if query.get("encoding", "json") not in ENCODINGS or query.get("compression", "none") not in COMPRESSIONS:
            return 400, "encoding must be json|etf and compression zlib|none\n"
        if query.get("encoding") == "etf" and not erlpack_available():
            return 400, "this server has no ETF support (install erlpack)\n"
        return None

    def connection_opened(self, conn: LeapConnection) -> None:
        if self._register(conn):  # else it left already (the server is closing)
            assert conn.rules is not None
            conn.send(conn.rules.hello_frame())

    def connection_frame(self, conn: LeapConnection, frame: ClientFrame, replies: list[dict[str, Any]]) -> None:
        if self._on_frame is not None:
            self._on_frame(conn.cid, frame)
        if not self._acks_paused:
            for reply in replies:
                if self._ack_delay > 0:
                    conn.send_later(reply, self._ack_delay)
                else:
                    conn.send(reply)
        if isinstance(frame, ClientHeartbeat):
            self.connection_changed()
            return
        try:
            with self._lock:
                self._dispatch(conn, frame)
        except LeapEncodeError as exc:
            # Decoded, but not relayable: nothing was sent to anyone.
            raise ServerClose(CloseCode.INVALID_PAYLOAD, f"payload cannot be relayed: {exc}") from None
        finally:
            self.connection_changed()

    def connection_left(self, conn: LeapConnection) -> None:
        with self._lock:
            session = conn.session
            if session is not None and conn in session.connections:
                session.connections.discard(conn)
                if not session.connections:
                    session.empty_since = time.monotonic()
            super().connection_left(conn)

    # -- business logic (under ``_lock``) ------------------------------------------------

    def _dispatch(self, conn: LeapConnection, frame: ClientFrame) -> None:
        if isinstance(frame, Identify):
            self._identify(conn, frame)
        elif isinstance(frame, Subscribe):
            self._subscribe(conn, frame.channel_id)
        elif isinstance(frame, Unsubscribe):
            self._unsubscribe(conn, frame.channel_id)
        elif isinstance(frame, SetChannelState):
            if self._require_subscription(conn, frame.channel_id):
                self.set_channel_state(frame.channel_id, frame.state)
        elif isinstance(frame, SendMessage):
            if self._require_subscription(conn, frame.channel_id):
                self.publish(frame.channel_id, frame.event_name, frame.data)
        elif isinstance(frame, PipeRoomSubscribe):
            self._pipe_room_subscribe(conn, frame.join_token)
        elif isinstance(frame, PipeRoomUnsubscribe):
            self._pipe_room_unsubscribe(conn, frame.room_id)
        elif isinstance(frame, UnknownClientEvent):
            raise ServerClose(CloseCode.INVALID_PAYLOAD, f"unknown event {frame.event_name[:50]}")

    def _identify(self, conn: LeapConnection, ident: Identify) -> None:
        if not conn.open:
            return  # it is closing: joining a session now would outlive it
        session, scope, metadata = self._model.session_for(ident, time.monotonic())
        session.connections.add(conn)
        session.empty_since = None
        conn.identify = ident
        conn.session = session
        channels = self._model.channels
        init = frames.dispatch(
            "INIT",
            None,
            {
                "cid": conn.cid,
                "connection_count": len(session.connections),
                "metadata": metadata,
                "scope": scope,
                "channels": [
                    frames.channel_object(channels[c].model()) for c in session.subscriptions if c in channels
                ],
            },
        )
        conn.send(init)

    def _subscribe(self, conn: LeapConnection, channel_id: str) -> None:
        session, ident = conn.session, conn.identify
        assert session is not None and ident is not None
        channel = self._model.channels.get(channel_id)
        if channel is None or channel.project_id != ident.project_id:
            conn.send(_unavailable(channel_id, "UNKNOWN"))
        elif not self._model.allowed(ident, channel):
            conn.send(_unavailable(channel_id, "NOT_GRANTED"))
        else:
            session.subscriptions[channel_id] = None
            frame = frames.dispatch("AVAILABLE", channel_id, {"channel": frames.channel_object(channel.model())})
            self._deliver(list(session.connections), frame)

    def _unsubscribe(self, conn: LeapConnection, channel_id: str) -> None:
        session = conn.session
        assert session is not None
        session.subscriptions.pop(channel_id, None)
        self._deliver(list(session.connections), _unavailable(channel_id, None))

    def _require_subscription(self, conn: LeapConnection, channel_id: str) -> bool:
        session = conn.session
        if session is not None and channel_id in session.subscriptions and channel_id in self._model.channels:
            return True
        conn.send(_unavailable(channel_id, "UNKNOWN"))
        return False

    def _pipe_room_subscribe(self, conn: LeapConnection, join_token: str) -> None:
        session, ident = conn.session, conn.identify
        assert session is not None and ident is not None
        record = self._model.pipe_room_by_join_token(join_token, ident.project_id)
        if record is None:
            data = {"graceful": False, "error_code": "UNKNOWN", "join_token": join_token}
            conn.send(frames.dispatch("PIPE_ROOM_UNAVAILABLE", None, data))
            return
        session.pipe_rooms[record.room.id] = None
        frame = frames.dispatch(
            "PIPE_ROOM_AVAILABLE",
            record.room.id,
            {"pipe_room": frames.pipe_room_object(record.room), "connection": record.connection},
        )
        self._deliver(list(session.connections), frame)

    def _pipe_room_unsubscribe(self, conn: LeapConnection, room_id: str) -> None:
        session = conn.session
        assert session is not None
        session.pipe_rooms.pop(room_id, None)
        record = self._model.pipe_rooms.get(room_id)
        frame = frames.dispatch(
            "PIPE_ROOM_UNAVAILABLE",
            room_id,
            {"graceful": True, "error_code": None, "join_token": record.room.join_token if record else None},
        )
        self._deliver(list(session.connections), frame)
