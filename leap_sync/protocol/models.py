"""Values that travel on a Leap Edge connection, as frozen, slotted attrs classes.

Server-to-client events (what :func:`leap_sync.protocol.parse.parse_server_frame`
returns) and client-to-server requests (what
:func:`leap_sync.protocol.parse.parse_client_frame` returns, for servers). They carry
data only; validation happens in the parsers, at the boundary.

JSON objects inside events (channel state, message data, metadata) are kept as the
plain ``dict``/``list`` values the codec produced.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "AvailableEvent",
    "Channel",
    "ChannelEvent",
    "ClientFrame",
    "ClientHeartbeat",
    "Event",
    "HeartbeatAck",
    "HeartbeatRequest",
    "Hello",
    "Identify",
    "InitEvent",
    "MessageEvent",
    "PipeRoom",
    "PipeRoomAvailableEvent",
    "PipeRoomSubscribe",
    "PipeRoomUnavailableEvent",
    "PipeRoomUnsubscribe",
    "PipeRoomUpdateEvent",
    "SendMessage",
    "ServerFrame",
    "SetChannelState",
    "StateUpdateEvent",
    "Subscribe",
    "TokenStateUpdateEvent",
    "UnavailableEvent",
    "UnknownClientEvent",
    "UnknownEvent",
    "Unsubscribe",
]

# -- objects inside events ---------------------------------------------------------------


@attrs.frozen
class Channel:
    """A Hop channel: ``{id, project_id, state, type, capabilities?}``.

    ``type`` is ``"private"``, ``"public"`` or ``"unprotected"``.
    """

    #: The channel's id.
    id: str
    #: The project it belongs to.
    project_id: str
    #: The channel's state: the JSON value last set (an object, usually).
    state: Any = attrs.field(factory=dict)
    #: ``"private"``, ``"public"`` or ``"unprotected"``.
    type: str = "private"
    #: The channel's capabilities, when the server sends them.
    capabilities: int | None = None


@attrs.frozen
class PipeRoom:
    """A Pipe room, as Leap Edge sends it (sensitive fields stripped)."""

    #: The room's id.
    id: str
    #: Its name.
    name: str
    #: When it was created, as the server wrote it.
    created_at: str
    #: The protocol media comes in by.
    ingest_protocol: str
    #: The protocols media goes out by (e.g. ``"webrtc"``, ``"llhls"``).
    delivery_protocols: tuple[str, ...]
    #: The token that joins the room (pass it to :meth:`~leap_sync.LeapClient.subscribe_pipe_room`).
    join_token: str
    #: Where media comes in.
    ingest_region: str
    #: ``"live"`` or ``"offline"``.
    state: str  # "live" | "offline"


# -- server control frames ----------------------------------------------------------------


@attrs.frozen
class Hello:
    """Op 1: the server's first frame. ``heartbeat_interval`` is in milliseconds."""

    heartbeat_interval: int


@attrs.frozen
class HeartbeatRequest:
    """Op 3 from the server: answer at once with the same ``tag`` (``None`` for an
    untagged request)."""

    tag: str | None = None


@attrs.frozen
class HeartbeatAck:
    """Op 4: a heartbeat was acknowledged; ``tag`` and ``latency`` (ms, the server's
    measured round trip) are set for an answered tagged request."""

    tag: str | None = None
    latency: int | None = None


# -- server dispatch events ---------------------------------------------------------------


@attrs.frozen
class InitEvent:
    """``INIT``: authentication succeeded; the connection is ready.

    ``scope`` is ``"project"``, ``"token"`` or ``"noauth"``; ``channels`` are those the
    session is already subscribed to.
    """

    #: This connection's id.
    cid: str
    #: How many connections the session has, this one included.
    connection_count: int
    #: The token's metadata (any JSON value).
    metadata: Any
    #: ``"project"``, ``"token"`` or ``"noauth"``.
    scope: str
    #: The channels the session is already subscribed to.
    channels: tuple[Channel, ...] = ()


@attrs.frozen
class MessageEvent:
    """``MESSAGE`` (a channel message) or ``DIRECT_MESSAGE`` (sent to the token).

    ``data`` is whatever JSON value the sender gave (object, list, string, number,
    ``null``). ``unicast`` is true when only this connection, not the whole session,
    received it. ``seq`` is a server-assigned sequence number when the server provides
    one (the embedded test server does for sequenced channels; Hop's edge does not).
    """

    #: The channel it was published on; ``None`` for a direct message.
    channel_id: str | None
    #: The event's name, as the sender gave it.
    event_name: str
    #: The payload: any JSON value (with ETF, ``bytes`` too).
    data: Any
    #: Whether only this connection, not the whole session, received it.
    unicast: bool = False
    #: Whether it came as a ``DIRECT_MESSAGE`` (see :attr:`is_direct_message`).
    direct: bool = False
    #: The server's sequence number, when it numbers messages (the embedded server does
    #: for ``sequenced`` channels; Hop's does not).
    seq: int | None = None

    @property
    def is_direct_message(self) -> bool:
        """Whether this came as a ``DIRECT_MESSAGE`` rather than a channel message."""
        return self.direct


@attrs.frozen
class AvailableEvent:
    """``AVAILABLE``: a channel became available to this session."""

    #: The channel's id.
    channel_id: str | None
    #: The channel, with its state.
    channel: Channel


@attrs.frozen
class UnavailableEvent:
    """``UNAVAILABLE``: unsubscribed from, or refused, a channel (or pipe room).

    ``error_code`` is ``None`` when ``graceful``, otherwise e.g. ``"NOT_GRANTED"`` or
    ``"UNKNOWN"``.
    """

    #: The channel's id.
    channel_id: str | None
    #: ``True`` for an unsubscription, ``False`` for a refusal or a loss.
    graceful: bool
    #: Why, when not graceful (e.g. ``"NOT_GRANTED"``, ``"UNKNOWN"``).
    error_code: str | None = None


@attrs.frozen
class StateUpdateEvent:
    """``STATE_UPDATE``: a channel's state changed."""

    #: The channel's id.
    channel_id: str | None
    #: Its new state.
    state: Any


@attrs.frozen
class TokenStateUpdateEvent:
    """``TOKEN_STATE_UPDATE``: the Leap token's state changed."""

    #: The frame's channel id, if it had one.
    channel_id: str | None
    #: The token's new state.
    state: Any


@attrs.frozen
class PipeRoomAvailableEvent:
    """``PIPE_ROOM_AVAILABLE``: a Pipe room became available. ``connection`` maps a
    delivery protocol (``"webrtc"``, ``"llhls"``) to ``{edge_endpoint, type,
    serving_pop}``; it is empty while the room is offline."""

    #: The room's channel id, when the server gives one.
    channel_id: str | None
    #: The room.
    pipe_room: PipeRoom
    #: Delivery protocol to ``{edge_endpoint, type, serving_pop}``; empty while the room is offline.
    connection: Any = attrs.field(factory=dict)


@attrs.frozen
class PipeRoomUpdateEvent:
    """``PIPE_ROOM_UPDATE``: a Pipe room changed (same fields as available)."""

    #: The room's channel id, when the server gives one.
    channel_id: str | None
    #: The room, as it is now.
    pipe_room: PipeRoom
    #: Delivery protocol to ``{edge_endpoint, type, serving_pop}``; empty while the room is offline.
    connection: Any = attrs.field(factory=dict)


@attrs.frozen
class PipeRoomUnavailableEvent:
    """``PIPE_ROOM_UNAVAILABLE``: a Pipe room went away or was refused."""

    #: The room's channel id, when the server gives one.
    channel_id: str | None
    #: ``True`` for an unsubscription, ``False`` for a refusal or a loss.
    graceful: bool
    #: Why, when not graceful.
    error_code: str | None = None
    #: The room's join token, when the server sends it.
    join_token: str | None = None


@attrs.frozen
class UnknownEvent:
    """A dispatch event this library does not know; kept so newer servers do not break
    older clients."""

    #: The channel it concerns, if any.
    channel_id: str | None
    #: The event's name.
    event_name: str
    #: Its payload, as decoded.
    data: Any
    #: Whether only this connection received it.
    unicast: bool = False


ChannelEvent = (
    AvailableEvent
    | UnavailableEvent
    | StateUpdateEvent
    | TokenStateUpdateEvent
    | PipeRoomAvailableEvent
    | PipeRoomUpdateEvent
    | PipeRoomUnavailableEvent
    | UnknownEvent
)
"""What a client's channel-event channel yields."""

Event = InitEvent | MessageEvent | ChannelEvent
"""Every dispatch event a server sends."""

ServerFrame = Hello | HeartbeatRequest | HeartbeatAck | Event
"""Everything :func:`~leap_sync.protocol.parse.parse_server_frame` returns."""


# -- client frames (what a server parses) -----------------------------------------------


@attrs.frozen
class Identify:
    """Op 2: ``token`` is ``None`` for a tokenless connection."""

    project_id: str
    token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ClientHeartbeat:
    """Op 3 from a client: a periodic beat (``tag`` ``None``) or the answer to a tagged
    request."""

    tag: str | None = None


@attrs.frozen
class Subscribe:
    channel_id: str


@attrs.frozen
class Unsubscribe:
    channel_id: str


@attrs.frozen
class SetChannelState:
    channel_id: str
    state: Any


@attrs.frozen
class SendMessage:
    """``MESSAGE`` sent by a client to a channel."""

    channel_id: str
    event_name: str
    data: Any


@attrs.frozen
class PipeRoomSubscribe:
    join_token: str


@attrs.frozen
class PipeRoomUnsubscribe:
    room_id: str


@attrs.frozen
class UnknownClientEvent:
    """A dispatch event from a client that Leap Edge does not define."""

    channel_id: str | None
    event_name: str
    data: Any


ClientFrame = (
    Identify
    | ClientHeartbeat
    | Subscribe
    | Unsubscribe
    | SetChannelState
    | SendMessage
    | PipeRoomSubscribe
    | PipeRoomUnsubscribe
    | UnknownClientEvent
)
"""Everything :func:`~leap_sync.protocol.parse.parse_client_frame` returns."""
