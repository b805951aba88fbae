"""Every frame model both ways: build (frames.py) and parse (parse.py), in JSON and ETF,
with and without zlib, plus hypothesis round trips and the parsers' refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapProtocolError
from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import (
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
from leap_sync.protocol.parse import (
    CAPABILITIES_RANGE,
    CONNECTION_COUNT_RANGE,
    HEARTBEAT_INTERVAL_RANGE,
    LATENCY_RANGE,
    SEQ_RANGE,
    _parse_server_frame_slow,
    parse_channel,
    parse_client_frame,
    parse_pipe_room,
    parse_server_frame,
)

CHANNEL = Channel("room", "project_x", {"topic": "x"}, "private", 3)
CHANNEL_WIRE = {"id": "room", "project_id": "project_x", "state": {"topic": "x"}, "type": "private", "capabilities": 3}
PUBLIC_CHANNEL = Channel("lobby", "project_x", {}, "public")
PUBLIC_CHANNEL_WIRE = {"id": "lobby", "project_id": "project_x", "state": {}, "type": "public"}
ROOM = PipeRoom(
    id="pipe_room_1",
    name="stream",
    created_at="2022-06-01T12:00:00.000Z",
    ingest_protocol="rtmp",
    delivery_protocols=("webrtc", "llhls"),
    join_token="join_1",
    ingest_region="us-east-1",
    state="live",
)
ROOM_WIRE = {
    "id": "pipe_room_1",
    "name": "stream",
    "created_at": "2022-06-01T12:00:00.000Z",
    "ingest_protocol": "rtmp",
    "delivery_protocols": ["webrtc", "llhls"],
    "join_token": "join_1",
    "ingest_region": "us-east-1",
    "state": "live",
}
CONNECTION = {"webrtc": {"edge_endpoint": "https://edge.example", "type": "webrtc", "serving_pop": "iad"}}


def _dispatch(event: str, c: str | None, d: Any, **extra: Any) -> dict[str, Any]:
    return {"op": 0, "d": {"c": c, "e": event, "d": d, **extra}}


SERVER_CASES: list[tuple[str, ServerFrame, dict[str, Any]]] = [
    ("hello", Hello(30000), {"op": 1, "d": {"heartbeat_interval": 30000}}),
    ("heartbeat-request", HeartbeatRequest(), {"op": 3}),
    ("heartbeat-request-tagged", HeartbeatRequest("abc"), {"op": 3, "d": {"tag": "abc"}}),
    ("heartbeat-ack", HeartbeatAck(), {"op": 4}),
    ("heartbeat-ack-tagged", HeartbeatAck("abc", 12), {"op": 4, "d": {"tag": "abc", "latency": 12}}),
    (
        "init",
        InitEvent("cid_1", 2, {"user": "u1"}, "token", (CHANNEL, PUBLIC_CHANNEL)),
        _dispatch(
            "INIT",
            None,
            {
                "cid": "cid_1",
                "connection_count": 2,
                "metadata": {"user": "u1"},
                "scope": "token",
                "channels": [CHANNEL_WIRE, PUBLIC_CHANNEL_WIRE],
            },
        ),
    ),
    (
        "init-noauth",
        InitEvent("cid_2", 1, None, "noauth"),
        _dispatch(
            "INIT", None, {"cid": "cid_2", "connection_count": 1, "metadata": None, "scope": "noauth", "channels": []}
        ),
    ),
    (
        "message",
        MessageEvent("room", "chat", {"text": "hi"}),
        _dispatch("MESSAGE", "room", {"e": "chat", "d": {"text": "hi"}}, u=False),
    ),
    (
        "message-unicast-seq",
        MessageEvent("room", "chat", [1, "two", None], unicast=True, seq=7),
        _dispatch("MESSAGE", "room", {"e": "chat", "d": [1, "two", None], "seq": 7}, u=True),
    ),
    (
        "message-null-data",
        MessageEvent("room", "ping", None),
        _dispatch("MESSAGE", "room", {"e": "ping", "d": None}, u=False),
    ),
    (
        "message-string-data",
        MessageEvent("room", "s", "text"),
        _dispatch("MESSAGE", "room", {"e": "s", "d": "text"}, u=False),
    ),
    (
        "direct-message",
        MessageEvent(None, "dm", {"n": 1}, direct=True),
        _dispatch("DIRECT_MESSAGE", None, {"e": "dm", "d": {"n": 1}}, u=False),
    ),
    ("available", AvailableEvent("room", CHANNEL), _dispatch("AVAILABLE", "room", {"channel": CHANNEL_WIRE})),
    (
        "unavailable-refused",
        UnavailableEvent("room", False, "NOT_GRANTED"),
        _dispatch("UNAVAILABLE", "room", {"graceful": False, "error_code": "NOT_GRANTED"}),
    ),
    (
        "unavailable-graceful",
        UnavailableEvent("room", True),
        _dispatch("UNAVAILABLE", "room", {"graceful": True, "error_code": None}),
    ),
    (
        "state-update",
        StateUpdateEvent("room", {"topic": "y"}),
        _dispatch("STATE_UPDATE", "room", {"state": {"topic": "y"}}),
    ),
    (
        "token-state-update",
        TokenStateUpdateEvent(None, {"role": "admin"}),
        _dispatch("TOKEN_STATE_UPDATE", None, {"state": {"role": "admin"}}),
    ),
    (
        "pipe-room-available",
        PipeRoomAvailableEvent("pipe_room_1", ROOM, CONNECTION),
        _dispatch("PIPE_ROOM_AVAILABLE", "pipe_room_1", {"pipe_room": ROOM_WIRE, "connection": CONNECTION}),
    ),
    (
        "pipe-room-update",
        PipeRoomUpdateEvent("pipe_room_1", ROOM, {}),
        _dispatch("PIPE_ROOM_UPDATE", "pipe_room_1", {"pipe_room": ROOM_WIRE, "connection": {}}),
    ),
    (
        "pipe-room-unavailable",
        PipeRoomUnavailableEvent(None, False, "NOT_GRANTED", "join_1"),
        _dispatch(
            "PIPE_ROOM_UNAVAILABLE", None, {"graceful": False, "error_code": "NOT_GRANTED", "join_token": "join_1"}
        ),
    ),
    (
        "unknown",
        UnknownEvent("room", "SOMETHING_NEW", {"x": [1]}, unicast=True),
        _dispatch("SOMETHING_NEW", "room", {"x": [1]}, u=True),
    ),
]

CLIENT_CASES: list[tuple[str, ClientFrame, dict[str, Any]]] = [
    (
        "identify",
        Identify("project_x", "leap_token_x"),
        {"op": 2, "d": {"project_id": "project_x", "token": "leap_token_x"}},
    ),
    ("identify-tokenless", Identify("project_x"), {"op": 2, "d": {"project_id": "project_x", "token": None}}),
    ("heartbeat", ClientHeartbeat(), {"op": 3}),
    ("heartbeat-tagged", ClientHeartbeat("abc"), {"op": 3, "d": {"tag": "abc"}}),
    ("subscribe", Subscribe("room"), _dispatch("SUBSCRIBE", "room", None)),
    ("unsubscribe", Unsubscribe("room"), _dispatch("UNSUBSCRIBE", "room", None)),
    (
        "set-channel-state",
        SetChannelState("room", {"topic": "x"}),
        _dispatch("SET_CHANNEL_STATE", "room", {"topic": "x"}),
    ),
    (
        "message",
        SendMessage("room", "chat", {"text": "hi"}),
        _dispatch("MESSAGE", "room", {"e": "chat", "d": {"text": "hi"}}),
    ),
    (
        "message-list-data",
        SendMessage("room", "chat", [1, 2]),
        _dispatch("MESSAGE", "room", {"e": "chat", "d": [1, 2]}),
    ),
    (
        "pipe-room-subscribe",
        PipeRoomSubscribe("join_1"),
        _dispatch("PIPE_ROOM_SUBSCRIBE", None, {"join_token": "join_1"}),
    ),
    (
        "pipe-room-unsubscribe",
        PipeRoomUnsubscribe("pipe_room_1"),
        _dispatch("PIPE_ROOM_UNSUBSCRIBE", None, {"id": "pipe_room_1"}),
    ),
    ("unknown", UnknownClientEvent(None, "CUSTOM", [1]), _dispatch("CUSTOM", None, [1])),
]

WIRE_FORMATS = [("json", False), ("json", True), ("etf", False), ("etf", True)]
WIRE_IDS = ["json", "json-zlib", "etf", "etf-zlib"]


def _through_wire(frame: dict[str, Any], encoding: str, compressed: bool) -> Any:
    codec = Codec(encoding)
    if compressed:
        return Codec("json").decode(codec.encode_compressed(frame), True)
    payload, binary = codec.encode(frame)
    if encoding == "etf":
        assert binary is True
        assert isinstance(payload, bytes)
        assert payload[0] == 131
    else:
        assert binary is False
        assert isinstance(payload, str)
    return Codec("json").decode(payload, binary)


# -- every model, both ways ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "model", "wire"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_build_server_frame(name: str, model: ServerFrame, wire: dict[str, Any]) -> None:
    assert frames.server_frame(model) == wire


@pytest.mark.parametrize(("name", "model", "wire"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_parse_server_frame(name: str, model: ServerFrame, wire: dict[str, Any]) -> None:
    before = copy.deepcopy(wire)
    assert parse_server_frame(wire) == model
    assert wire == before  # parsing does not modify the frame


@pytest.mark.parametrize(("encoding", "compressed"), WIRE_FORMATS, ids=WIRE_IDS)
@pytest.mark.parametrize(("name", "model", "wire"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_server_frame_through_the_wire(
    name: str, model: ServerFrame, wire: dict[str, Any], encoding: str, compressed: bool
) -> None:
    decoded = _through_wire(frames.server_frame(model), encoding, compressed)
    assert decoded == wire
    assert parse_server_frame(decoded) == model


@pytest.mark.parametrize(("name", "model", "wire"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_build_client_frame(name: str, model: ClientFrame, wire: dict[str, Any]) -> None:
    assert frames.client_frame(model) == wire


@pytest.mark.parametrize(("name", "model", "wire"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_parse_client_frame(name: str, model: ClientFrame, wire: dict[str, Any]) -> None:
    assert parse_client_frame(wire) == model


@pytest.mark.parametrize(("encoding", "compressed"), WIRE_FORMATS, ids=WIRE_IDS)
@pytest.mark.parametrize(("name", "model", "wire"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client_frame_through_the_wire(
    name: str, model: ClientFrame, wire: dict[str, Any], encoding: str, compressed: bool
) -> None:
    decoded = _through_wire(frames.client_frame(model), encoding, compressed)
    assert decoded == wire
    assert parse_client_frame(decoded) == model


def test_every_model_has_a_case() -> None:
    assert {type(model) for _, model, _ in SERVER_CASES} == {
        Hello,
        HeartbeatRequest,
        HeartbeatAck,
        InitEvent,
        MessageEvent,
        AvailableEvent,
        UnavailableEvent,
        StateUpdateEvent,
        TokenStateUpdateEvent,
        PipeRoomAvailableEvent,
        PipeRoomUpdateEvent,
        PipeRoomUnavailableEvent,
        UnknownEvent,
    }
    assert {type(model) for _, model, _ in CLIENT_CASES} == {
        Identify,
        ClientHeartbeat,
        Subscribe,
        Unsubscribe,
        SetChannelState,
        SendMessage,
        PipeRoomSubscribe,
        PipeRoomUnsubscribe,
        UnknownClientEvent,
    }


def test_builders_of_client_frames() -> None:
    assert frames.identify("p", None) == {"op": 2, "d": {"project_id": "p", "token": None}}
    assert frames.heartbeat() == {"op": 3}
    assert frames.heartbeat("t") == {"op": 3, "d": {"tag": "t"}}
    assert frames.subscribe("a") == {"op": 0, "d": {"c": "a", "e": "SUBSCRIBE", "d": None}}
    assert frames.unsubscribe("a") == {"op": 0, "d": {"c": "a", "e": "UNSUBSCRIBE", "d": None}}
    assert frames.set_channel_state("a", {"k": 1}) == {
        "op": 0,
        "d": {"c": "a", "e": "SET_CHANNEL_STATE", "d": {"k": 1}},
    }
    assert frames.message("a", "ev", 5) == {"op": 0, "d": {"c": "a", "e": "MESSAGE", "d": {"e": "ev", "d": 5}}}
    assert frames.pipe_room_subscribe("j") == {
        "op": 0,
        "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": "j"}},
    }
    assert frames.pipe_room_unsubscribe("r") == {
        "op": 0,
        "d": {"c": None, "e": "PIPE_ROOM_UNSUBSCRIBE", "d": {"id": "r"}},
    }


def test_builders_of_server_frames() -> None:
    assert frames.hello(25000) == {"op": 1, "d": {"heartbeat_interval": 25000}}
    assert frames.heartbeat_request("t") == {"op": 3, "d": {"tag": "t"}}
    assert frames.heartbeat_ack() == {"op": 4}
    assert frames.heartbeat_ack("t", 3) == {"op": 4, "d": {"tag": "t", "latency": 3}}
    assert frames.heartbeat_ack(None, 3) == {"op": 4, "d": {"tag": None, "latency": 3}}
    assert frames.dispatch("X", "c", 1) == {"op": 0, "d": {"c": "c", "e": "X", "d": 1}}
    assert frames.dispatch("X", None, 1, False) == {"op": 0, "d": {"c": None, "e": "X", "d": 1, "u": False}}
    assert frames.message_dispatch("c", "e", 1) == {"op": 0, "d": {"c": "c", "e": "MESSAGE", "d": {"e": "e", "d": 1}}}
    assert frames.message_dispatch("c", "e", 1, direct=True, seq=4, unicast=True) == {
        "op": 0,
        "d": {"c": "c", "e": "DIRECT_MESSAGE", "d": {"e": "e", "d": 1, "seq": 4}, "u": True},
    }
    assert frames.channel_object(PUBLIC_CHANNEL) == PUBLIC_CHANNEL_WIRE
    assert frames.pipe_room_object(ROOM) == ROOM_WIRE


def test_builders_refuse_foreign_models() -> None:
    with pytest.raises(TypeError, match="not a server frame model"):
        frames.server_frame(Subscribe("x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a client frame model"):
        frames.client_frame(Hello(1))  # type: ignore[arg-type]


def test_message_event_properties() -> None:
    assert MessageEvent("c", "e", None).is_direct_message is False
    assert MessageEvent(None, "e", None, direct=True).is_direct_message is True


def test_identify_repr_hides_the_token() -> None:
    assert "leap_token_x" not in repr(Identify("project_x", "leap_token_x"))


# -- what the parsers normalise ------------------------------------------------------------


def test_message_without_u_or_d() -> None:
    frame = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat"}}}
    assert parse_server_frame(frame) == MessageEvent("room", "chat", None, False)


@pytest.mark.parametrize("data", [None, 0, 1.5, "s", [], [1, [2]], {"a": {"b": None}}, True])
def test_message_data_may_be_any_json_value(data: Any) -> None:
    frame = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": data}}}
    assert parse_server_frame(frame) == MessageEvent("room", "chat", data)
    assert parse_client_frame(frame) == SendMessage("room", "chat", data)


def test_message_with_null_channel_and_u_null() -> None:
    frame = {"op": 0, "d": {"c": None, "u": None, "e": "MESSAGE", "d": {"e": "chat", "d": 1}}}
    assert parse_server_frame(frame) == MessageEvent(None, "chat", 1, False)


def test_message_ignores_unknown_fields() -> None:
    frame = {"op": 0, "s": 9, "t": "x", "d": {"c": "room", "e": "MESSAGE", "x": 1, "d": {"e": "chat", "d": 1, "z": 2}}}
    assert parse_server_frame(frame) == MessageEvent("room", "chat", 1)


def test_init_defaults() -> None:
    frame = _dispatch("INIT", None, {"cid": "c", "connection_count": 0, "scope": "project"})
    assert parse_server_frame(frame) == InitEvent("c", 0, None, "project", ())


def test_channel_defaults() -> None:
    assert parse_channel({"id": "a", "project_id": "p", "type": "unprotected"}) == Channel("a", "p", {}, "unprotected")
    assert parse_channel({"id": "a", "project_id": "p", "type": "public", "state": None}).state == {}
    assert parse_channel({"id": "a", "project_id": "p", "type": "public", "state": [1]}).state == [1]


def test_pipe_room_defaults() -> None:
    wire = dict(ROOM_WIRE, delivery_protocols=None)
    assert parse_pipe_room(wire).delivery_protocols == ()
    wire = dict(ROOM_WIRE, delivery_protocols=("webrtc",))
    assert parse_pipe_room(wire).delivery_protocols == ("webrtc",)


def test_pipe_room_connection_defaults_to_empty() -> None:
    frame = _dispatch("PIPE_ROOM_AVAILABLE", None, {"pipe_room": ROOM_WIRE})
    assert parse_server_frame(frame) == PipeRoomAvailableEvent(None, ROOM, {})
    frame = _dispatch("PIPE_ROOM_UPDATE", None, {"pipe_room": ROOM_WIRE, "connection": None})
    assert parse_server_frame(frame) == PipeRoomUpdateEvent(None, ROOM, {})


def test_unavailable_graceful_defaults_to_false() -> None:
    assert parse_server_frame(_dispatch("UNAVAILABLE", "a", {})) == UnavailableEvent("a", False, None)
    assert parse_server_frame(_dispatch("PIPE_ROOM_UNAVAILABLE", None, {})) == PipeRoomUnavailableEvent(None, False)


def test_state_updates_keep_any_state() -> None:
    assert parse_server_frame(_dispatch("STATE_UPDATE", "a", {})) == StateUpdateEvent("a", None)
    assert parse_server_frame(_dispatch("TOKEN_STATE_UPDATE", None, {"state": 5})) == TokenStateUpdateEvent(None, 5)


def test_unknown_event_without_data() -> None:
    assert parse_server_frame({"op": 0, "d": {"e": "NEW"}}) == UnknownEvent(None, "NEW", None, False)
    assert parse_client_frame({"op": 0, "d": {"e": "NEW"}}) == UnknownClientEvent(None, "NEW", None)


def test_heartbeat_frames_with_null_fields() -> None:
    assert parse_server_frame({"op": 3, "d": None}) == HeartbeatRequest(None)
    assert parse_server_frame({"op": 3, "d": {}}) == HeartbeatRequest(None)
    assert parse_server_frame({"op": 4, "d": {"tag": "t"}}) == HeartbeatAck("t", None)
    assert parse_client_frame({"op": 3, "d": {"tag": None}}) == ClientHeartbeat(None)


def test_etf_atoms_as_event_names_and_keys() -> None:
    import erlpack

    frame = {
        erlpack.Atom("op"): 0,
        erlpack.Atom("d"): {
            erlpack.Atom("c"): "room",
            erlpack.Atom("e"): erlpack.Atom("MESSAGE"),
            erlpack.Atom("d"): {erlpack.Atom("e"): erlpack.Atom("chat"), erlpack.Atom("d"): 1},
        },
    }
    decoded = Codec("etf").decode(Codec("etf").encode(frame)[0], True)
    assert parse_server_frame(decoded) == MessageEvent("room", "chat", 1)
    state = {"op": 0, "d": {"c": "room", "e": erlpack.Atom("STATE_UPDATE"), "d": {"state": 1}}}
    assert parse_server_frame(state) == StateUpdateEvent("room", 1)


# -- what the parsers refuse ---------------------------------------------------------------

BAD_SERVER_FRAMES: list[tuple[Any, int | None, str | None]] = [
    # (frame, op in the error, event in the error)
    ([], None, None),
    ("frame", None, None),
    (None, None, None),
    (3, None, None),
    ({}, None, None),
    ({"op": None}, None, None),
    ({"op": "0"}, None, None),
    ({"op": True}, None, None),
    ({"op": 0.0, "d": {"c": "a", "e": "MESSAGE", "d": {"e": "x"}}}, None, None),
    ({"op": 0}, 0, None),
    ({"op": 0, "d": []}, 0, None),
    ({"op": 0, "d": {"c": "a"}}, 0, None),
    ({"op": 0, "d": {"e": 5}}, 0, None),
    ({"op": 0, "d": {"e": "MESSAGE", "c": 5, "d": {"e": "x"}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "u": "yes", "d": {"e": "x"}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "u": 1, "d": {"e": "x"}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": [1]}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": None}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"d": 1}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"e": 1}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"e": "x", "seq": 1.0}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"e": "x", "seq": True}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"e": "x", "seq": "1"}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "DIRECT_MESSAGE", "c": None, "d": "x"}}, 0, "DIRECT_MESSAGE"),
    ({"op": 0, "d": {"e": "INIT", "d": None}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"connection_count": 1, "scope": "token"}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"cid": "c", "connection_count": True, "scope": "token"}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"cid": "c", "connection_count": "1", "scope": "token"}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"cid": "c", "connection_count": 1}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"cid": "c", "connection_count": 1, "scope": "t", "channels": {}}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "INIT", "d": {"cid": "c", "connection_count": 1, "scope": "t", "channels": [1]}}}, 0, "INIT"),
    ({"op": 0, "d": {"e": "AVAILABLE", "c": "a", "d": {}}}, 0, "AVAILABLE"),
    ({"op": 0, "d": {"e": "AVAILABLE", "c": "a", "d": {"channel": {"id": "a", "type": "public"}}}}, 0, "AVAILABLE"),
    (
        {"op": 0, "d": {"e": "AVAILABLE", "c": "a", "d": {"channel": {"id": 1, "project_id": "p", "type": "x"}}}},
        0,
        "AVAILABLE",
    ),
    ({"op": 0, "d": {"e": "AVAILABLE", "c": "a", "d": {"channel": {"id": "a", "project_id": "p"}}}}, 0, "AVAILABLE"),
    (
        {
            "op": 0,
            "d": {
                "e": "AVAILABLE",
                "c": "a",
                "d": {"channel": {"id": "a", "project_id": "p", "type": "x", "capabilities": "1"}},
            },
        },
        0,
        "AVAILABLE",
    ),
    ({"op": 0, "d": {"e": "AVAILABLE", "c": "a", "d": "x"}}, 0, "AVAILABLE"),
    ({"op": 0, "d": {"e": "UNAVAILABLE", "c": "a", "d": None}}, 0, "UNAVAILABLE"),
    ({"op": 0, "d": {"e": "UNAVAILABLE", "c": "a", "d": {"graceful": "no"}}}, 0, "UNAVAILABLE"),
    ({"op": 0, "d": {"e": "UNAVAILABLE", "c": "a", "d": {"graceful": None}}}, 0, "UNAVAILABLE"),
    ({"op": 0, "d": {"e": "UNAVAILABLE", "c": "a", "d": {"graceful": False, "error_code": 1}}}, 0, "UNAVAILABLE"),
    ({"op": 0, "d": {"e": "STATE_UPDATE", "c": "a", "d": [1]}}, 0, "STATE_UPDATE"),
    ({"op": 0, "d": {"e": "TOKEN_STATE_UPDATE", "c": None, "d": None}}, 0, "TOKEN_STATE_UPDATE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_AVAILABLE", "d": {}}}, 0, "PIPE_ROOM_AVAILABLE"),
    (
        {"op": 0, "d": {"e": "PIPE_ROOM_AVAILABLE", "d": {"pipe_room": {**ROOM_WIRE, "name": None}}}},
        0,
        "PIPE_ROOM_AVAILABLE",
    ),
    (
        {"op": 0, "d": {"e": "PIPE_ROOM_AVAILABLE", "d": {"pipe_room": {**ROOM_WIRE, "state": 1}}}},
        0,
        "PIPE_ROOM_AVAILABLE",
    ),
    (
        {"op": 0, "d": {"e": "PIPE_ROOM_UPDATE", "d": {"pipe_room": {**ROOM_WIRE, "delivery_protocols": [1]}}}},
        0,
        "PIPE_ROOM_UPDATE",
    ),
    (
        {"op": 0, "d": {"e": "PIPE_ROOM_UPDATE", "d": {"pipe_room": {**ROOM_WIRE, "delivery_protocols": "webrtc"}}}},
        0,
        "PIPE_ROOM_UPDATE",
    ),
    (
        {"op": 0, "d": {"e": "PIPE_ROOM_UPDATE", "d": {"pipe_room": ROOM_WIRE, "connection": []}}},
        0,
        "PIPE_ROOM_UPDATE",
    ),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UPDATE", "d": {"pipe_room": [ROOM_WIRE]}}}, 0, "PIPE_ROOM_UPDATE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UNAVAILABLE", "d": {"join_token": 5}}}, 0, "PIPE_ROOM_UNAVAILABLE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UNAVAILABLE", "d": {"graceful": 0}}}, 0, "PIPE_ROOM_UNAVAILABLE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UNAVAILABLE", "d": []}}, 0, "PIPE_ROOM_UNAVAILABLE"),
    ({"op": 0, "d": {"e": "UNKNOWN_THING", "c": 1}}, 0, "UNKNOWN_THING"),
    ({"op": 0, "d": {"e": "UNKNOWN_THING", "u": "x"}}, 0, "UNKNOWN_THING"),
    ({"op": 1}, 1, None),
    ({"op": 1, "d": {}}, 1, None),
    ({"op": 1, "d": {"heartbeat_interval": 0}}, 1, None),
    ({"op": 1, "d": {"heartbeat_interval": -5}}, 1, None),
    ({"op": 1, "d": {"heartbeat_interval": 1.5}}, 1, None),
    ({"op": 1, "d": {"heartbeat_interval": "30000"}}, 1, None),
    ({"op": 1, "d": {"heartbeat_interval": True}}, 1, None),
    ({"op": 1, "d": [30000]}, 1, None),
    ({"op": 3, "d": []}, 3, None),
    ({"op": 3, "d": "tag"}, 3, None),
    ({"op": 3, "d": {"tag": 5}}, 3, None),
    ({"op": 4, "d": "x"}, 4, None),
    ({"op": 4, "d": {"tag": 1}}, 4, None),
    ({"op": 4, "d": {"tag": "t", "latency": "12"}}, 4, None),
    ({"op": 4, "d": {"tag": "t", "latency": 1.5}}, 4, None),
]


@pytest.mark.parametrize(("frame", "op", "event"), BAD_SERVER_FRAMES)
def test_malformed_server_frames(frame: Any, op: int | None, event: str | None) -> None:
    with pytest.raises(LeapProtocolError) as info:
        parse_server_frame(frame)
    assert info.value.op == op
    assert info.value.event == event
    assert info.value.close_code == 4005


@pytest.mark.parametrize("op", [2, 5, 6, -1, 255, 2**70])
def test_unknown_opcodes_from_the_server(op: int) -> None:
    with pytest.raises(LeapProtocolError) as info:
        parse_server_frame({"op": op, "d": {}})
    assert info.value.op == op
    assert info.value.close_code == 4004


def test_protocol_error_message_names_op_and_event() -> None:
    with pytest.raises(LeapProtocolError) as info:
        parse_server_frame({"op": 0, "d": {"e": "INIT", "d": {}}})
    assert str(info.value) == "missing field 'cid' (op=0, event=INIT)"
    with pytest.raises(LeapProtocolError) as info:
        parse_server_frame({"op": 9})
    assert str(info.value) == "unknown opcode from server (op=9)"


BAD_CLIENT_FRAMES: list[tuple[Any, int | None, str | None]] = [
    ([], None, None),
    (None, None, None),
    ({}, None, None),
    ({"op": "2"}, None, None),
    ({"op": False}, None, None),
    ({"op": 0}, 0, None),
    ({"op": 0, "d": "x"}, 0, None),
    ({"op": 0, "d": {"c": "a"}}, 0, None),
    ({"op": 0, "d": {"e": None}}, 0, None),
    ({"op": 0, "d": {"e": "SUBSCRIBE"}}, 0, "SUBSCRIBE"),
    ({"op": 0, "d": {"e": "SUBSCRIBE", "c": 1}}, 0, "SUBSCRIBE"),
    ({"op": 0, "d": {"e": "UNSUBSCRIBE", "c": None}}, 0, "UNSUBSCRIBE"),
    ({"op": 0, "d": {"e": "SET_CHANNEL_STATE", "c": "a", "d": [1]}}, 0, "SET_CHANNEL_STATE"),
    ({"op": 0, "d": {"e": "SET_CHANNEL_STATE", "c": "a"}}, 0, "SET_CHANNEL_STATE"),
    ({"op": 0, "d": {"e": "SET_CHANNEL_STATE", "c": None, "d": {}}}, 0, "SET_CHANNEL_STATE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": "x"}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": "a", "d": {"d": 1}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "MESSAGE", "c": None, "d": {"e": "x"}}}, 0, "MESSAGE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_SUBSCRIBE", "d": {}}}, 0, "PIPE_ROOM_SUBSCRIBE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": 1}}}, 0, "PIPE_ROOM_SUBSCRIBE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UNSUBSCRIBE", "d": None}}, 0, "PIPE_ROOM_UNSUBSCRIBE"),
    ({"op": 0, "d": {"e": "PIPE_ROOM_UNSUBSCRIBE", "d": {"id": 1}}}, 0, "PIPE_ROOM_UNSUBSCRIBE"),
    ({"op": 0, "d": {"e": "CUSTOM", "c": 5}}, 0, "CUSTOM"),
    ({"op": 2}, 2, None),
    ({"op": 2, "d": {"token": "t"}}, 2, None),
    ({"op": 2, "d": {"project_id": 1}}, 2, None),
    ({"op": 2, "d": {"project_id": "p", "token": 1}}, 2, None),
    ({"op": 3, "d": 1}, 3, None),
    ({"op": 3, "d": {"tag": []}}, 3, None),
]


@pytest.mark.parametrize(("frame", "op", "event"), BAD_CLIENT_FRAMES)
def test_malformed_client_frames(frame: Any, op: int | None, event: str | None) -> None:
    with pytest.raises(LeapProtocolError) as info:
        parse_client_frame(frame)
    assert info.value.op == op
    assert info.value.event == event
    assert info.value.close_code == 4005


@pytest.mark.parametrize("op", [1, 4, 5, -1, 99])
def test_unknown_opcodes_from_a_client(op: int) -> None:
    with pytest.raises(LeapProtocolError) as info:
        parse_client_frame({"op": op, "d": {"heartbeat_interval": 1}})
    assert info.value.op == op
    assert info.value.close_code == 4004


# -- hypothesis ----------------------------------------------------------------------------

# Values both encodings carry exactly: ETF ints span [-2**63, 2**64 - 1]; NaN is not
# equal to itself and infinities are not JSON.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
names = st.text(max_size=16)
optional_names = st.none() | names
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def within(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    """Integers a server may send in a field (parse.py range-checks every number)."""
    return st.integers(min_value=bounds[0], max_value=bounds[1])


channels = st.builds(
    Channel,
    id=names,
    project_id=names,
    state=json_objects,
    type=st.sampled_from(["private", "public", "unprotected"]),
    capabilities=st.none() | within(CAPABILITIES_RANGE),
)
pipe_rooms = st.builds(
    PipeRoom,
    id=names,
    name=names,
    created_at=names,
    ingest_protocol=names,
    delivery_protocols=st.lists(names, max_size=3).map(tuple),
    join_token=names,
    ingest_region=names,
    state=st.sampled_from(["live", "offline"]),
)
KNOWN_SERVER_EVENTS = {
    "INIT",
    "MESSAGE",
    "DIRECT_MESSAGE",
    "AVAILABLE",
    "UNAVAILABLE",
    "STATE_UPDATE",
    "TOKEN_STATE_UPDATE",
    "PIPE_ROOM_AVAILABLE",
    "PIPE_ROOM_UPDATE",
    "PIPE_ROOM_UNAVAILABLE",
}
KNOWN_CLIENT_EVENTS = {
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "SET_CHANNEL_STATE",
    "MESSAGE",
    "PIPE_ROOM_SUBSCRIBE",
    "PIPE_ROOM_UNSUBSCRIBE",
}

server_models = st.one_of(
    st.builds(Hello, within(HEARTBEAT_INTERVAL_RANGE)),
    st.builds(HeartbeatRequest, optional_names),
    st.builds(HeartbeatAck, optional_names, st.none() | within(LATENCY_RANGE)),
    st.builds(
        InitEvent, names, within(CONNECTION_COUNT_RANGE), json_values, names, st.lists(channels, max_size=3).map(tuple)
    ),
    st.builds(
        MessageEvent,
        optional_names,
        names,
        json_values,
        st.booleans(),
        st.booleans(),
        st.none() | within(SEQ_RANGE),
    ),
    st.builds(AvailableEvent, optional_names, channels),
    st.builds(UnavailableEvent, optional_names, st.booleans(), optional_names),
    st.builds(StateUpdateEvent, optional_names, json_values),
    st.builds(TokenStateUpdateEvent, optional_names, json_values),
    st.builds(PipeRoomAvailableEvent, optional_names, pipe_rooms, json_objects),
    st.builds(PipeRoomUpdateEvent, optional_names, pipe_rooms, json_objects),
    st.builds(PipeRoomUnavailableEvent, optional_names, st.booleans(), optional_names, optional_names),
    st.builds(
        UnknownEvent,
        optional_names,
        names.filter(lambda n: n not in KNOWN_SERVER_EVENTS),
        json_values,
        st.booleans(),
    ),
)
client_models = st.one_of(
    st.builds(Identify, names, optional_names),
    st.builds(ClientHeartbeat, optional_names),
    st.builds(Subscribe, names),
    st.builds(Unsubscribe, names),
    st.builds(SetChannelState, names, json_objects),
    st.builds(SendMessage, names, names, json_values),
    st.builds(PipeRoomSubscribe, names),
    st.builds(PipeRoomUnsubscribe, names),
    st.builds(
        UnknownClientEvent,
        optional_names,
        names.filter(lambda n: n not in KNOWN_CLIENT_EVENTS),
        json_values,
    ),
)

ENCODINGS = ["json", "etf"]
CODECS = {encoding: Codec(encoding) for encoding in ENCODINGS}


@settings(max_examples=300, deadline=None)
@given(model=server_models, encoding=st.sampled_from(ENCODINGS), compressed=st.booleans())
def test_server_model_round_trip(model: ServerFrame, encoding: str, compressed: bool) -> None:
    codec = CODECS[encoding]
    frame = frames.server_frame(model)
    if compressed:
        payload, binary = codec.encode_compressed(frame), True
    else:
        payload, binary = codec.encode(frame)
    assert parse_server_frame(codec.decode(payload, binary)) == model


@settings(max_examples=250, deadline=None)
@given(model=client_models, encoding=st.sampled_from(ENCODINGS), compressed=st.booleans())
def test_client_model_round_trip(model: ClientFrame, encoding: str, compressed: bool) -> None:
    codec = CODECS[encoding]
    frame = frames.client_frame(model)
    if compressed:
        payload, binary = codec.encode_compressed(frame), True
    else:
        payload, binary = codec.encode(frame)
    assert parse_client_frame(codec.decode(payload, binary)) == model


def _outcome(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except LeapProtocolError as exc:
        return ("error", str(exc), exc.op, exc.event, exc.close_code)


maybe_missing = st.just(...) | json_scalars


@settings(max_examples=300, deadline=None)
@given(
    c=st.one_of(st.just(...), st.none(), names, st.integers()),
    u=st.one_of(st.just(...), st.none(), st.booleans(), st.integers(0, 1), st.text(max_size=2)),
    e=st.one_of(st.just(...), names, st.integers(), st.just("chat")),
    seq=st.one_of(st.just(...), st.none(), ints, st.booleans(), st.floats(allow_nan=False)),
    data=st.one_of(st.just(...), json_values),
    inner_is_object=st.booleans(),
)
def test_message_fast_path_agrees_with_the_full_parser(
    c: Any, u: Any, e: Any, seq: Any, data: Any, inner_is_object: bool
) -> None:
    inner: Any = {k: v for k, v in (("e", e), ("d", data), ("seq", seq)) if v is not ...}
    if not inner_is_object:
        inner = list(inner.values())
    d = {k: v for k, v in (("c", c), ("u", u)) if v is not ...}
    d["e"] = "MESSAGE"
    d["d"] = inner
    frame = {"op": 0, "d": d}
    assert _outcome(parse_server_frame, frame) == _outcome(_parse_server_frame_slow, 0, d)


# -- every number from the wire is range-checked --------------------------------------------

_HUGE = 10**400  # an integer of 401 digits: float() of it overflows


def _init_with(count: object) -> dict[str, object]:
    return _dispatch("INIT", None, {"cid": "c", "connection_count": count, "scope": "token", "channels": []})


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"op": 1, "d": {"heartbeat_interval": 10**13}}, "heartbeat_interval"),
        ({"op": 1, "d": {"heartbeat_interval": _HUGE}}, "heartbeat_interval"),
        ({"op": 1, "d": {"heartbeat_interval": 9}}, "heartbeat_interval"),
        ({"op": 1, "d": {"heartbeat_interval": 0}}, "heartbeat_interval"),
        ({"op": 1, "d": {"heartbeat_interval": -30000}}, "heartbeat_interval"),
        ({"op": 4, "d": {"tag": "t", "latency": _HUGE}}, "latency"),
        ({"op": 4, "d": {"tag": "t", "latency": -1}}, "latency"),
        (_init_with(-1), "connection_count"),
        (_init_with(_HUGE), "connection_count"),
        (_dispatch("AVAILABLE", "r", {"channel": {**CHANNEL_WIRE, "capabilities": 2**64}}), "capabilities"),
        (_dispatch("AVAILABLE", "r", {"channel": {**CHANNEL_WIRE, "capabilities": -1}}), "capabilities"),
        (_dispatch("MESSAGE", "r", {"e": "x", "d": 1, "seq": -1}), "seq"),
        (_dispatch("MESSAGE", "r", {"e": "x", "d": 1, "seq": 2**63}), "seq"),
    ],
)
def test_numbers_out_of_range_are_protocol_errors(frame: dict[str, object], field: str) -> None:
    with pytest.raises(LeapProtocolError, match=rf"field '{field}' is out of range") as refused:
        parse_server_frame(frame)
    assert len(str(refused.value)) < 200  # a 401-digit number is not echoed in full


@pytest.mark.parametrize(
    ("bounds", "build"),
    [
        (HEARTBEAT_INTERVAL_RANGE, lambda n: {"op": 1, "d": {"heartbeat_interval": n}}),
        (LATENCY_RANGE, lambda n: {"op": 4, "d": {"tag": "t", "latency": n}}),
        (CONNECTION_COUNT_RANGE, _init_with),
        (SEQ_RANGE, lambda n: _dispatch("MESSAGE", "r", {"e": "x", "d": 1, "seq": n})),
        (CAPABILITIES_RANGE, lambda n: _dispatch("AVAILABLE", "r", {"channel": {**CHANNEL_WIRE, "capabilities": n}})),
    ],
)
def test_numbers_at_their_bounds_are_accepted(bounds: tuple[int, int], build: Any) -> None:
    for value in bounds:
        parse_server_frame(build(value))
    for value in (bounds[0] - 1, bounds[1] + 1):
        with pytest.raises(LeapProtocolError, match="out of range"):
            parse_server_frame(build(value))
