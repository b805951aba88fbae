"""The embedded server's control calls that set up its model: tokens and their grants,
channels, Pipe rooms (see :mod:`leap_sync.testing.leap.model` for the rules). Thread-safe,
callable while clients are connected; changes that clients must hear of (a deleted
channel, an updated room) are queued to them before the call returns.

Every call checks its values before it changes anything: a call that raises
(``TypeError``, ``ValueError``, ``KeyError``, or
:class:`~leap_sync.errors.LeapEncodeError` for a value an encoding cannot carry, which
would otherwise fail later on a client's connection) leaves the model as it was and
sends nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import attrs

from ...protocol import frames
from ...protocol.models import Channel, PipeRoom
from .connection import live_sessions
from .core import ServerCore
from .model import CHANNEL_TYPES, ChannelRecord, PipeRoomRecord, TokenRecord, connection_map

__all__ = ["Registry"]


class Registry(ServerCore):
    """Tokens, channels and Pipe rooms (see the module docstring)."""

    def add_token(
        self,
        token: str,
        project_id: str | None = None,
        grants: Iterable[str] | None = None,
        metadata: Any = None,
        *,
        scope: str = "token",
        state: Any = None,
    ) -> None:
        """Register a Leap token. ``grants=None`` grants every channel of the project;
        otherwise the listed channel ids (for ``private`` channels). ``scope`` is what
        INIT reports (``"token"`` or ``"project"``). ``metadata`` and ``state`` must be
        values both encodings carry (else :class:`~leap_sync.errors.LeapEncodeError`)."""
        project = _text("project_id", project_id or self.project_id)
        record = TokenRecord(_text("token", token), project, _ids("grants", grants), metadata, scope, state)
        self._check_storable([metadata, state, scope])
        with self._lock:
            self._tokens_seen = self._tokens_seen | {token}
            self._model.projects.add(project)
            self._model.tokens[token] = record

    def remove_token(self, token: str) -> None:
        """Forget a token (existing connections stay; new Identifies get 4001)."""
        with self._lock:
            self._model.tokens.pop(token, None)

    def grant(self, token: str, *channel_ids: str) -> None:
        """Add channel grants to a token that has an explicit grant list."""
        granted = _ids("channel_ids", channel_ids)
        with self._lock:
            record = self._model.tokens[token]
            if record.grants is not None and granted is not None:
                record.grants = record.grants | granted

    def create_channel(
        self,
        channel_id: str,
        project_id: str | None = None,
        type: str = "private",
        state: dict[str, Any] | None = None,
        *,
        capabilities: int | None = None,
        sequenced: bool = False,
    ) -> Channel:
        """Create (or replace the settings of) a channel; returns its model.

        Channels created with ``sequenced=True`` number their messages (``seq`` in the
        MESSAGE data, 1, 2, 3...) and every connection records the numbers written to
        it, so a test can prove nothing was lost, duplicated or reordered."""
        if type not in CHANNEL_TYPES:
            raise ValueError(f"channel type must be private, public or unprotected, not {type!r}")
        project = _text("project_id", project_id or self.project_id)
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"a channel state is a dict, not {state.__class__.__name__}")
        if capabilities is not None and (isinstance(capabilities, bool) or not isinstance(capabilities, int)):
            raise TypeError(f"capabilities is an int or None, not {capabilities.__class__.__name__}")
        channel = ChannelRecord(
            _text("channel_id", channel_id), project, type, dict(state or {}), capabilities, bool(sequenced)
        )
        self._check_storable(frames.channel_object(channel.model()))
        with self._lock:
            self._model.projects.add(project)
            old = self._model.channels.get(channel_id)
            if old is not None:
                channel.seq = old.seq
            self._model.channels[channel_id] = channel
            return channel.model()

    def channel(self, channel_id: str) -> Channel:
        """The channel's current model (``KeyError`` if unknown)."""
        with self._lock:
            return self._model.channels[channel_id].model()

    def delete_channel(self, channel_id: str) -> None:
        """Delete a channel: subscribers get UNAVAILABLE (graceful)."""
        with self._lock:
            self._model.channels.pop(channel_id)
            frame = frames.dispatch("UNAVAILABLE", channel_id, {"graceful": True, "error_code": None})
            sessions = [s for s in live_sessions(list(self._conns.values())) if channel_id in s.subscriptions]
            for session in sessions:
                session.subscriptions.pop(channel_id, None)
            self._deliver([c for s in sessions for c in s.connections], frame)

    def create_pipe_room(
        self,
        name: str,
        project_id: str | None = None,
        *,
        room_id: str | None = None,
        join_token: str | None = None,
        state: str = "offline",
        ingest_protocol: str = "rtmp",
        delivery_protocols: Iterable[str] = ("webrtc", "llhls"),
        ingest_region: str = "us-east-1",
        created_at: str = "2026-01-01T00:00:00Z",
    ) -> PipeRoom:
        """Create a Pipe room; clients join it with its ``join_token``. Values an
        encoding cannot carry raise :class:`~leap_sync.errors.LeapEncodeError`."""
        room = PipeRoom(
            id=room_id or f"pipe_room_{secrets.token_hex(6)}",
            name=name,
            created_at=created_at,
            ingest_protocol=ingest_protocol,
            delivery_protocols=tuple(delivery_protocols),
            join_token=join_token or f"join_{secrets.token_hex(8)}",
            ingest_region=ingest_region,
            state=state,
        )
        record = PipeRoomRecord(room, _text("project_id", project_id or self.project_id), connection_map(room))
        self._check_storable([frames.pipe_room_object(room), record.connection])
        with self._lock:
            self._model.pipe_rooms[room.id] = record
        return room

    def update_pipe_room(
        self, room_id: str, *, state: str | None = None, connection: dict[str, Any] | None = None
    ) -> PipeRoom:
        """Change a room (``state`` ``"live"``/``"offline"``); subscribers get
        PIPE_ROOM_UPDATE. A value an encoding cannot carry raises
        :class:`~leap_sync.errors.LeapEncodeError` and changes nothing."""
        if connection is not None and not isinstance(connection, dict):
            raise TypeError(f"a room's connection map is a dict, not {type(connection).__name__}")
        with self._lock:
            record = self._model.pipe_rooms[room_id]
            room = record.room if state is None else attrs.evolve(record.room, state=state)
            mapping = connection if connection is not None else connection_map(room)
            frame = frames.dispatch(
                "PIPE_ROOM_UPDATE", room_id, {"pipe_room": frames.pipe_room_object(room), "connection": mapping}
            )
            self._check_storable(frame)
            wires = self._encode_for(self._room_members(room_id), frame)
            record.room, record.connection = room, mapping
            self._queue(wires)
            return room

    def delete_pipe_room(self, room_id: str) -> None:
        """Delete a room: subscribers get PIPE_ROOM_UNAVAILABLE (graceful)."""
        with self._lock:
            record = self._model.pipe_rooms.pop(room_id)
            frame = frames.dispatch(
                "PIPE_ROOM_UNAVAILABLE",
                room_id,
                {"graceful": True, "error_code": None, "join_token": record.room.join_token},
            )
            members = self._room_members(room_id)
            for session in live_sessions(members):
                session.pipe_rooms.pop(room_id, None)
            self._deliver(members, frame)

    def _room_members(self, room_id: str) -> list[Any]:
        sessions = live_sessions(list(self._conns.values()))
        return [c for s in sessions if room_id in s.pipe_rooms for c in s.connections]


def _text(name: str, value: Any) -> str:
    """``value``, a ``str`` (``TypeError`` otherwise)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _ids(name: str, values: Iterable[str] | None) -> frozenset[str] | None:
    """``values`` as a set of ids (``None`` stays ``None``); ``TypeError`` for one
    ``str`` (a set of its characters is never meant) or an item that is not a ``str``."""
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"{name} must be an iterable of str, not one str")
    ids = frozenset(values)
    for item in ids:
        _text(f"each of {name}", item)
    return ids
