"""Turn decoded frames (the objects a :class:`~leap_sync.protocol.codec.Codec` returns)
into models, checking every type.

:func:`parse_server_frame` is what a client uses; :func:`parse_client_frame` is what a
server uses. Both raise :class:`LeapProtocolError` (carrying the op and event name) for
anything malformed, and never anything else. Unknown dispatch events are not errors:
they parse to :class:`UnknownEvent` / :class:`UnknownClientEvent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import LeapProtocolError
from .models import (
    AvailableEvent,
    Channel,
    ClientFrame,
    ClientHeartbeat,
    Event,
    HeartbeatAck,
    HeartbeatRequest,
    Hello,
    Identify,
    InitEvent,
    MessageEvent,
    PipeRoom,
    PipeRoomAvailableEvent,
    PipeRoomSubscribe,
    PipeRoomUnavailableEvent,
    PipeRoomUnsubscribe,
    PipeRoomUpdateEvent,
    SendMessage,
    ServerFrame,
    SetChannelState,
    StateUpdateEvent,
    Subscribe,
    TokenStateUpdateEvent,
    UnavailableEvent,
    UnknownClientEvent,
    UnknownEvent,
    Unsubscribe,
)

__all__ = [
    "CAPABILITIES_RANGE",
    "CONNECTION_COUNT_RANGE",
    "HEARTBEAT_INTERVAL_RANGE",
    "LATENCY_RANGE",
    "SEQ_RANGE",
    "parse_channel",
    "parse_client_frame",
    "parse_messages",
    "parse_pipe_room",
    "parse_server_frame",
]

# Every number taken from the wire is range-checked: a value outside its range is a
# protocol error, never an OverflowError (or a heartbeat every microsecond) later on.
HEARTBEAT_INTERVAL_RANGE = (10, 86_400_000)
"""Hello's ``heartbeat_interval`` (ms): from 10 ms to one day (Leap Edge sends 30,000)."""
LATENCY_RANGE = (0, 86_400_000)
"""A tagged heartbeat ack's ``latency`` (ms)."""
CONNECTION_COUNT_RANGE = (0, 2**53)
"""INIT's ``connection_count``."""
CAPABILITIES_RANGE = (0, 2**64 - 1)
"""A channel's ``capabilities`` bit set."""
SEQ_RANGE = (0, 2**63 - 1)
"""A message's ``seq`` (set by the embedded server on sequenced channels)."""
_SEQ_MAX = SEQ_RANGE[1]


class _Bad(Exception):
    """Internal: a field check failed; turned into LeapProtocolError with context."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(
    obj: dict[str, Any], name: str, kind: type, *, optional: bool = False, bounds: tuple[int, int] | None = None
) -> Any:
    """``obj[name]`` checked to be of ``kind`` (and, for ``int``, within ``bounds``)."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _Bad(f"missing field {name!r}")
    if kind is int:
        if not _is_int(value):
            raise _Bad(f"field {name!r} must be an integer")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            shown = str(value) if -(10**30) < value < 10**30 else f"an integer of {len(str(abs(value)))} digits"
            raise _Bad(f"field {name!r} is out of range ({shown}; allowed {bounds[0]}..{bounds[1]})")
    elif not isinstance(value, kind):
        raise _Bad(f"field {name!r} must be of type {kind.__name__}")
    return value


def _sendable(obj: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    """``obj[name]`` as a string a client may send back (a tag it echoes, a channel id
    it re-subscribes): text, so no lone surrogate (which JSON's ``\\ud800`` escapes
    can smuggle in)."""
    value = _field(obj, name, str, optional=optional)
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"field {name!r} holds a lone surrogate") from None
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object")
    return value


def parse_channel(obj: Any) -> Channel:
    """A channel object: ``{id, project_id, state, type, capabilities?}``."""
    obj = _object(obj, "channel")
    state = obj.get("state")
    return Channel(
        id=_sendable(obj, "id"),
        project_id=_field(obj, "project_id", str),
        state={} if state is None else state,
        type=_field(obj, "type", str),
        capabilities=_field(obj, "capabilities", int, optional=True, bounds=CAPABILITIES_RANGE),
    )


def parse_pipe_room(obj: Any) -> PipeRoom:
    """A pipe room object."""
    obj = _object(obj, "pipe_room")
    protocols = obj.get("delivery_protocols")
    if protocols is None:
        protocols = []
    if not isinstance(protocols, (list, tuple)) or not all(isinstance(p, str) for p in protocols):
        raise _Bad("field 'delivery_protocols' must be a list of strings")
    return PipeRoom(
        id=_field(obj, "id", str),
        name=_field(obj, "name", str),
        created_at=_field(obj, "created_at", str),
        ingest_protocol=_field(obj, "ingest_protocol", str),
        delivery_protocols=tuple(protocols),
        join_token=_field(obj, "join_token", str),
        ingest_region=_field(obj, "ingest_region", str),
        state=_field(obj, "state", str),
    )


# -- server -> client -----------------------------------------------------------------------


def _init(c: str | None, u: Any, data: Any) -> Event:
    data = _object(data, "INIT data")
    channels = data.get("channels")
    if channels is None:
        channels = []
    if not isinstance(channels, list):
        raise _Bad("field 'channels' must be a list")
    return InitEvent(
        cid=_field(data, "cid", str),
        connection_count=_field(data, "connection_count", int, bounds=CONNECTION_COUNT_RANGE),
        metadata=data.get("metadata"),
        scope=_field(data, "scope", str),
        channels=tuple(parse_channel(ch) for ch in channels),
    )


def _message(c: str | None, u: Any, data: Any, direct: bool = False) -> Event:
    data = _object(data, "message data")
    return MessageEvent(
        c,
        _field(data, "e", str),
        data.get("d"),
        u is True,
        direct,
        _field(data, "seq", int, optional=True, bounds=SEQ_RANGE),
    )


def _direct_message(c: str | None, u: Any, data: Any) -> Event:
    return _message(c, u, data, True)


def _available(c: str | None, u: Any, data: Any) -> Event:
    data = _object(data, "AVAILABLE data")
    if c is not None:
        _sendable({"c": c}, "c")  # a channel id the client may subscribe to again
    return AvailableEvent(c, parse_channel(data.get("channel")))


def _graceful(data: dict[str, Any]) -> bool:
    graceful = data.get("graceful", False)
    if not isinstance(graceful, bool):
        raise _Bad("field 'graceful' must be a boolean")
    return graceful


def _unavailable(c: str | None, u: Any, data: Any) -> Event:
    data = _object(data, "UNAVAILABLE data")
    return UnavailableEvent(c, _graceful(data), _field(data, "error_code", str, optional=True))


def _state_update(c: str | None, u: Any, data: Any) -> Event:
    return StateUpdateEvent(c, _object(data, "STATE_UPDATE data").get("state"))


def _token_state_update(c: str | None, u: Any, data: Any) -> Event:
    return TokenStateUpdateEvent(c, _object(data, "TOKEN_STATE_UPDATE data").get("state"))


def _pipe_room_fields(data: Any, what: str) -> tuple[PipeRoom, Any]:
    data = _object(data, what)
    connection = data.get("connection")
    if connection is None:
        connection = {}
    if not isinstance(connection, dict):
        raise _Bad("field 'connection' must be an object")
    return parse_pipe_room(data.get("pipe_room")), connection


def _pipe_room_available(c: str | None, u: Any, data: Any) -> Event:
    room, connection = _pipe_room_fields(data, "PIPE_ROOM_AVAILABLE data")
    return PipeRoomAvailableEvent(c, room, connection)


def _pipe_room_update(c: str | None, u: Any, data: Any) -> Event:
    room, connection = _pipe_room_fields(data, "PIPE_ROOM_UPDATE data")
    return PipeRoomUpdateEvent(c, room, connection)


def _pipe_room_unavailable(c: str | None, u: Any, data: Any) -> Event:
    data = _object(data, "PIPE_ROOM_UNAVAILABLE data")
    return PipeRoomUnavailableEvent(
        c,
        _graceful(data),
        _field(data, "error_code", str, optional=True),
        _field(data, "join_token", str, optional=True),
    )


_SERVER_EVENTS: dict[str, Callable[[str | None, Any, Any], Event]] = {
    "INIT": _init,
    "MESSAGE": _message,
    "DIRECT_MESSAGE": _direct_message,
    "AVAILABLE": _available,
    "UNAVAILABLE": _unavailable,
    "STATE_UPDATE": _state_update,
    "TOKEN_STATE_UPDATE": _token_state_update,
    "PIPE_ROOM_AVAILABLE": _pipe_room_available,
    "PIPE_ROOM_UPDATE": _pipe_room_update,
    "PIPE_ROOM_UNAVAILABLE": _pipe_room_unavailable,
}


def parse_server_frame(obj: Any) -> ServerFrame:
    """Parse one decoded frame a server sent.

    Returns :class:`Hello`, :class:`HeartbeatRequest`, :class:`HeartbeatAck`, or a
    dispatch event model (:class:`MessageEvent`, :class:`InitEvent`, ...,
    :class:`UnknownEvent` for events this library does not know). Raises
    :class:`LeapProtocolError` for anything malformed, including an op a server may
    not send.
    """
    # The common case first, with as few steps as possible: a channel MESSAGE.
    if obj.__class__ is dict:
        op = obj.get("op")
        d = obj.get("d")
        if op == 0 and op.__class__ is int and d.__class__ is dict and d.get("e") == "MESSAGE":
            inner = d.get("d")
            c = d.get("c")
            if inner.__class__ is dict and c.__class__ is str:
                name = inner.get("e")
                seq = inner.get("seq")
                u = d.get("u")
                if (
                    name.__class__ is str
                    and (seq is None or (seq.__class__ is int and 0 <= seq <= _SEQ_MAX))
                    and (u is None or u is True or u is False)
                ):
                    return MessageEvent(c, name, inner.get("d"), u is True, False, seq)
    else:
        if not isinstance(obj, dict):
            raise LeapProtocolError("frame must be an object")
        op = obj.get("op")
        d = obj.get("d")
    return _parse_server_frame_slow(op, d)


# MessageEvent built without its attrs ``__init__`` (which takes a Python-level call
# per field): a bare instance and its six slots set directly. MessageEvent has no
# validators, converters or post-init; tests/test_session_batches.py checks the fields
# and that such an event equals one made by the constructor.
_MESSAGE_FIELDS = ("channel_id", "event_name", "data", "unicast", "direct", "seq")
_message_slots = tuple(MessageEvent.__dict__[name].__set__ for name in _MESSAGE_FIELDS)


def parse_messages(objs: list[Any], start: int, out: list[MessageEvent]) -> int:
    """Parse the run of well-formed channel MESSAGE frames in ``objs`` from ``start``
    into ``out`` (what :func:`parse_server_frame` makes of each), and return the index
    of the first frame that is anything else (``len(objs)`` if none), for
    :func:`parse_server_frame` to parse. One call per batch instead of one per frame."""
    add = out.append
    new = object.__new__
    cls = MessageEvent
    set_channel, set_name, set_data, set_unicast, set_direct, set_seq = _message_slots
    seq_max = _SEQ_MAX
    i = start
    for obj in objs[start:] if start else objs:
        # Subscripts, not .get(): a frame without these keys or of another shape (a
        # list, a string, ...) raises, and the slow path decides what it is.
        try:
            op = obj["op"]
            d = obj["d"]
            if op.__class__ is not int or op or d["e"] != "MESSAGE":
                return i
            inner = d["d"]
            c = d["c"]
            name = inner["e"]
        except (KeyError, TypeError):
            return i
        seq = inner.get("seq")
        u = d.get("u")
        if not (
            c.__class__ is str
            and name.__class__ is str
            and (seq is None or (seq.__class__ is int and 0 <= seq <= seq_max))
            and (u is None or u is True or u is False)
        ):
            return i
        event = new(cls)
        set_channel(event, c)
        set_name(event, name)
        set_data(event, inner.get("d"))
        set_unicast(event, u is True)
        set_direct(event, False)
        set_seq(event, seq)
        add(event)
        i += 1
    return i


def _parse_server_frame_slow(op: Any, d: Any) -> ServerFrame:
    if not _is_int(op):
        raise LeapProtocolError("frame has no integer 'op'")
    event: str | None = None
    try:
        if op == 0:
            d = _object(d, "dispatch 'd'")
            event = d.get("e")
            if not isinstance(event, str):
                event = None
                raise _Bad("dispatch has no string event name 'e'")
            c = d.get("c")
            if c is not None and not isinstance(c, str):
                raise _Bad("dispatch channel 'c' must be a string or null")
            u = d.get("u")
            if u is not None and not isinstance(u, bool):
                raise _Bad("dispatch 'u' must be a boolean")
            handler = _SERVER_EVENTS.get(event)
            if handler is None:
                return UnknownEvent(c, str(event), d.get("d"), u is True)
            return handler(c, u, d.get("d"))
        if op == 1:
            return Hello(_field(_object(d, "Hello 'd'"), "heartbeat_interval", int, bounds=HEARTBEAT_INTERVAL_RANGE))
        if op == 3:
            if d is None:
                return HeartbeatRequest(None)
            return HeartbeatRequest(_sendable(_object(d, "heartbeat 'd'"), "tag", optional=True))
        if op == 4:
            if d is None:
                return HeartbeatAck()
            d = _object(d, "heartbeat ack 'd'")
            return HeartbeatAck(
                _field(d, "tag", str, optional=True), _field(d, "latency", int, optional=True, bounds=LATENCY_RANGE)
            )
    except _Bad as exc:
        raise LeapProtocolError(str(exc), op=op, event=event) from None
    raise LeapProtocolError("unknown opcode from server", op=op, close_code=4004)


# -- client -> server -------------------------------------------------------------------


def _channel_id(c: Any) -> str:
    if not isinstance(c, str):
        raise _Bad("channel 'c' must be a string")
    return c


def parse_client_frame(obj: Any) -> ClientFrame:
    """Parse one decoded frame a client sent (what a server does).

    Raises :class:`LeapProtocolError` whose ``close_code`` is 4004 for an unknown
    opcode and 4005 for a malformed payload. An unknown dispatch event parses to
    :class:`UnknownClientEvent`.
    """
    if not isinstance(obj, dict):
        raise LeapProtocolError("frame must be an object")
    op = obj.get("op")
    if not _is_int(op):
        raise LeapProtocolError("frame has no integer 'op'")
    d = obj.get("d")
    event: str | None = None
    try:
        if op == 0:
            d = _object(d, "dispatch 'd'")
            event = d.get("e")
            if not isinstance(event, str):
                event = None
                raise _Bad("dispatch has no string event name 'e'")
            c = d.get("c")
            data = d.get("d")
            if event == "SUBSCRIBE":
                return Subscribe(_channel_id(c))
            if event == "UNSUBSCRIBE":
                return Unsubscribe(_channel_id(c))
            if event == "SET_CHANNEL_STATE":
                return SetChannelState(_channel_id(c), _object(data, "channel state"))
            if event == "MESSAGE":
                data = _object(data, "message data")
                return SendMessage(_channel_id(c), _field(data, "e", str), data.get("d"))
            if event == "PIPE_ROOM_SUBSCRIBE":
                return PipeRoomSubscribe(_field(_object(data, "data"), "join_token", str))
            if event == "PIPE_ROOM_UNSUBSCRIBE":
                return PipeRoomUnsubscribe(_field(_object(data, "data"), "id", str))
            if c is not None and not isinstance(c, str):
                raise _Bad("dispatch channel 'c' must be a string or null")
            return UnknownClientEvent(c, str(event), data)
        if op == 2:
            d = _object(d, "Identify 'd'")
            return Identify(_field(d, "project_id", str), _field(d, "token", str, optional=True))
        if op == 3:
            if d is None:
                return ClientHeartbeat(None)
            return ClientHeartbeat(_field(_object(d, "heartbeat 'd'"), "tag", str, optional=True))
    except _Bad as exc:
        raise LeapProtocolError(str(exc), op=op, event=event) from None
    raise LeapProtocolError("unknown opcode from client", op=op, close_code=4004)
