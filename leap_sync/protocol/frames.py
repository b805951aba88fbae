"""Builders for every Leap Edge frame, as plain objects ready for a :class:`Codec`.

Client frames: :func:`identify`, :func:`heartbeat`, :func:`subscribe`,
:func:`unsubscribe`, :func:`set_channel_state`, :func:`message`,
:func:`pipe_room_subscribe`, :func:`pipe_room_unsubscribe` (and :func:`client_frame`
for a parsed client model).

Server frames: :func:`hello`, :func:`heartbeat_request`, :func:`heartbeat_ack`,
:func:`dispatch`, and :func:`server_frame`, which builds the frame for any event model
(the inverse of :func:`~leap_sync.protocol.parse.parse_server_frame`).
"""

from __future__ import annotations

from typing import Any

from .models import (
    AvailableEvent,
    Channel,
    ClientFrame,
    ClientHeartbeat,
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
from .opcodes import Opcode

Frame = dict[str, Any]

_DISPATCH = int(Opcode.DISPATCH)
_HEARTBEAT = int(Opcode.HEARTBEAT)

# -- client frames ------------------------------------------------------------------------


def identify(project_id: str, token: str | None) -> Frame:
    """Op 2. ``token=None`` identifies a tokenless connection (sent as ``null``)."""
    return {"op": int(Opcode.IDENTIFY), "d": {"project_id": project_id, "token": token}}


def heartbeat(tag: str | None = None) -> Frame:
    """Op 3: ``{"op":3}``, or ``{"op":3,"d":{"tag":tag}}`` answering a tagged request."""
    if tag is None:
        return {"op": _HEARTBEAT}
    return {"op": _HEARTBEAT, "d": {"tag": tag}}


def _client_dispatch(event: str, channel_id: str | None, data: Any) -> Frame:
    return {"op": _DISPATCH, "d": {"c": channel_id, "e": event, "d": data}}


def subscribe(channel_id: str) -> Frame:
    return _client_dispatch("SUBSCRIBE", channel_id, None)


def unsubscribe(channel_id: str) -> Frame:
    return _client_dispatch("UNSUBSCRIBE", channel_id, None)


def set_channel_state(channel_id: str, state: Any) -> Frame:
    return _client_dispatch("SET_CHANNEL_STATE", channel_id, state)


def message(channel_id: str, event_name: str, data: Any) -> Frame:
    return _client_dispatch("MESSAGE", channel_id, {"e": event_name, "d": data})


def pipe_room_subscribe(join_token: str) -> Frame:
    return _client_dispatch("PIPE_ROOM_SUBSCRIBE", None, {"join_token": join_token})


def pipe_room_unsubscribe(room_id: str) -> Frame:
    return _client_dispatch("PIPE_ROOM_UNSUBSCRIBE", None, {"id": room_id})


def client_frame(model: ClientFrame) -> Frame:
    """The frame for a client model (inverse of ``parse_client_frame``)."""
    if isinstance(model, Identify):
        return identify(model.project_id, model.token)
    if isinstance(model, ClientHeartbeat):
        return heartbeat(model.tag)
    if isinstance(model, Subscribe):
        return subscribe(model.channel_id)
    if isinstance(model, Unsubscribe):
        return unsubscribe(model.channel_id)
    if isinstance(model, SetChannelState):
        return set_channel_state(model.channel_id, model.state)
    if isinstance(model, SendMessage):
        return message(model.channel_id, model.event_name, model.data)
    if isinstance(model, PipeRoomSubscribe):
        return pipe_room_subscribe(model.join_token)
    if isinstance(model, PipeRoomUnsubscribe):
        return pipe_room_unsubscribe(model.room_id)
    if isinstance(model, UnknownClientEvent):
        return _client_dispatch(model.event_name, model.channel_id, model.data)
    raise TypeError(f"not a client frame model: {model!r}")


# -- server frames ------------------------------------------------------------------------


def hello(heartbeat_interval_ms: int) -> Frame:
    """Op 1 with the heartbeat interval in milliseconds."""
    return {"op": int(Opcode.HELLO), "d": {"heartbeat_interval": heartbeat_interval_ms}}


def heartbeat_request(tag: str | None) -> Frame:
    """Op 3 from the server: the client must answer at once with the same tag."""
    return heartbeat(tag)


def heartbeat_ack(tag: str | None = None, latency: int | None = None) -> Frame:
    """Op 4: ``{"op":4}``, or with ``tag`` and ``latency`` (ms) for a tagged beat."""
    if tag is None and latency is None:
        return {"op": int(Opcode.HEARTBEAT_ACK)}
    return {"op": int(Opcode.HEARTBEAT_ACK), "d": {"tag": tag, "latency": latency}}


def dispatch(event: str, channel_id: str | None, data: Any, unicast: bool | None = None) -> Frame:
    """Op 0 from the server. ``u`` is included only when ``unicast`` is given."""
    d: dict[str, Any] = {"c": channel_id, "e": event, "d": data}
    if unicast is not None:
        d["u"] = unicast
    return {"op": _DISPATCH, "d": d}


def channel_object(channel: Channel) -> dict[str, Any]:
    """The wire form of a :class:`Channel`."""
    obj: dict[str, Any] = {
        "id": channel.id,
        "project_id": channel.project_id,
        "state": channel.state,
        "type": channel.type,
    }
    if channel.capabilities is not None:
        obj["capabilities"] = channel.capabilities
    return obj


def pipe_room_object(room: PipeRoom) -> dict[str, Any]:
    """The wire form of a :class:`PipeRoom`."""
    return {
        "id": room.id,
        "name": room.name,
        "created_at": room.created_at,
        "ingest_protocol": room.ingest_protocol,
        "delivery_protocols": list(room.delivery_protocols),
        "join_token": room.join_token,
        "ingest_region": room.ingest_region,
        "state": room.state,
    }


def message_dispatch(
    channel_id: str | None,
    event_name: str,
    data: Any,
    *,
    unicast: bool | None = None,
    direct: bool = False,
    seq: int | None = None,
) -> Frame:
    """``MESSAGE`` (or ``DIRECT_MESSAGE`` with ``direct=True``), optionally carrying a
    sequence number."""
    inner: dict[str, Any] = {"e": event_name, "d": data}
    if seq is not None:
        inner["seq"] = seq
    return dispatch("DIRECT_MESSAGE" if direct else "MESSAGE", channel_id, inner, unicast)


def server_frame(model: ServerFrame) -> Frame:
    """The frame for any server model (inverse of ``parse_server_frame``)."""
    cls = type(model)
    if cls is MessageEvent:
        assert isinstance(model, MessageEvent)
        return message_dispatch(
            model.channel_id,
            model.event_name,
            model.data,
            unicast=model.unicast,
            direct=model.direct,
            seq=model.seq,
        )
    if isinstance(model, Hello):
        return hello(model.heartbeat_interval)
    if isinstance(model, HeartbeatRequest):
        return heartbeat_request(model.tag)
    if isinstance(model, HeartbeatAck):
        return heartbeat_ack(model.tag, model.latency)
    if isinstance(model, InitEvent):
        return dispatch(
            "INIT",
            None,
            {
                "cid": model.cid,
                "connection_count": model.connection_count,
                "metadata": model.metadata,
                "scope": model.scope,
                "channels": [channel_object(c) for c in model.channels],
            },
        )
    if isinstance(model, AvailableEvent):
        return dispatch("AVAILABLE", model.channel_id, {"channel": channel_object(model.channel)})
    if isinstance(model, UnavailableEvent):
        return dispatch(
            "UNAVAILABLE",
            model.channel_id,
            {"graceful": model.graceful, "error_code": model.error_code},
        )
    if isinstance(model, StateUpdateEvent):
        return dispatch("STATE_UPDATE", model.channel_id, {"state": model.state})
    if isinstance(model, TokenStateUpdateEvent):
        return dispatch("TOKEN_STATE_UPDATE", model.channel_id, {"state": model.state})
    if isinstance(model, (PipeRoomAvailableEvent, PipeRoomUpdateEvent)):
        name = "PIPE_ROOM_AVAILABLE" if isinstance(model, PipeRoomAvailableEvent) else "PIPE_ROOM_UPDATE"
        return dispatch(
            name,
            model.channel_id,
            {"pipe_room": pipe_room_object(model.pipe_room), "connection": model.connection},
        )
    if isinstance(model, PipeRoomUnavailableEvent):
        return dispatch(
            "PIPE_ROOM_UNAVAILABLE",
            model.channel_id,
            {
                "graceful": model.graceful,
                "error_code": model.error_code,
                "join_token": model.join_token,
            },
        )
    if isinstance(model, UnknownEvent):
        return dispatch(model.event_name, model.channel_id, model.data, model.unicast)
    raise TypeError(f"not a server frame model: {model!r}")
