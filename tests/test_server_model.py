"""The embedded Leap Edge server's model, driven by raw websocket clients: channels
(private, public, unprotected, with state), grants, tokenless connections, sessions
shared by a token's connections and kept ``session_ttl`` after the last one, INIT,
client events (SUBSCRIBE, UNSUBSCRIBE, SET_CHANNEL_STATE, MESSAGE, pipe rooms), the
control API's events, sequenced channels and introspection.

Where a test proves that something did *not* reach a connection, it sends that
connection a marker event afterwards and asserts the marker is the next frame: the
server writes to one connection in order, so anything sent before would come first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import (
    COMBOS,
    PROJECT,
    TOKEN,
    RawClient,
    _no_server_errors,
    available,
    channel_obj,
    dispatch,
    message,
    sub,
    unavailable,
)

from leap_sync.errors import LeapEncodeError
from leap_sync.testing import LeapEdgeServer

__all__ = ["_no_server_errors"]

Combo = tuple[str, str]
OTHER = "leap_token_other"


@pytest.fixture
def server(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> LeapEdgeServer:
    """Tokens ``TOKEN`` (every channel) and ``OTHER`` (every channel); no channels."""
    srv = leap_edge_server_factory()
    srv.add_token(TOKEN, project_id=PROJECT)
    srv.add_token(OTHER, project_id=PROJECT)
    return srv


@pytest.fixture
def connect(server: LeapEdgeServer) -> Iterator[Callable[..., RawClient]]:
    """``connect(combo, token=TOKEN)``: a raw client past Hello and INIT."""
    opened: list[RawClient] = []

    def make(
        combo: Combo = ("json", "none"), token: str | None = TOKEN, srv: LeapEdgeServer | None = None
    ) -> RawClient:
        target = srv or server
        client = RawClient(target.url, *combo)
        opened.append(client)
        client.expect_hello(round(target.heartbeat_interval * 1000))
        client.identify(token)
        return client

    yield make
    for client in opened:
        client.close()


def mark(server: LeapEdgeServer, client: RawClient, label: str = "MARK") -> None:
    """Assert nothing is pending for ``client``: a marker sent now is its next frame."""
    assert server.send_event(label, None, cid=client.init["cid"]) == 1
    assert client.recv() == dispatch(label, None, None)


def closed_all(server: LeapEdgeServer) -> None:
    server.wait_for(lambda s: not s.connections, timeout=5)


# -- SUBSCRIBE and grants ----------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_subscribe_answers_available_with_the_channel_object(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room", state={"topic": "hello", "n": [1, 2]}, capabilities=3)
    client = connect(combo)
    client.send(sub("room"))
    expected = channel_obj("room", "private", {"topic": "hello", "n": [1, 2]})
    expected["capabilities"] = 3
    assert client.recv() == dispatch("AVAILABLE", "room", {"channel": expected})
    assert server.connections[0].subscriptions == frozenset({"room"})
    assert server.subscribers("room") == [client.init["cid"]]


GRANT_CASES = [
    # (channel type, token grants or "tokenless", expected error code or None)
    ("private", None, None),
    ("private", ["room"], None),
    ("private", ["elsewhere"], "NOT_GRANTED"),
    ("private", "tokenless", "NOT_GRANTED"),
    ("public", [], None),
    ("public", "tokenless", "NOT_GRANTED"),
    ("unprotected", [], None),
    ("unprotected", "tokenless", None),
]


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(
    ("channel_type", "grants", "error_code"),
    GRANT_CASES,
    ids=[
        f"{t}-{g if isinstance(g, str) else 'all' if g is None else ','.join(g) or 'none'}" for t, g, _ in GRANT_CASES
    ],
)
def test_subscribe_follows_channel_type_and_grants(
    server: LeapEdgeServer,
    connect: Callable[..., RawClient],
    combo: Combo,
    channel_type: str,
    grants: Any,
    error_code: str | None,
) -> None:
    server.create_channel("room", type=channel_type)
    if grants == "tokenless":
        token = None
    else:
        token = "leap_token_granted"
        server.add_token(token, grants=grants)
    client = connect(combo, token)
    client.send(sub("room"))
    if error_code is None:
        assert client.recv() == available("room", channel_type)
        assert server.connections[0].subscriptions == frozenset({"room"})
    else:
        assert client.recv() == unavailable("room", error_code)
        assert server.connections[0].subscriptions == frozenset()


@pytest.mark.parametrize("combo", COMBOS)
def test_unknown_channels_and_other_projects_channels_are_unknown(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("theirs", project_id="project_y", type="unprotected")
    client = connect(combo)
    client.send(sub("nowhere"))
    assert client.recv() == unavailable("nowhere", "UNKNOWN")
    client.send(sub("theirs"))
    assert client.recv() == unavailable("theirs", "UNKNOWN")


@pytest.mark.parametrize("combo", COMBOS)
def test_grant_adds_a_channel_to_an_explicit_grant_list(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    server.add_token("leap_token_limited", grants=[])
    client = connect(combo, "leap_token_limited")
    client.send(sub("room"))
    assert client.recv() == unavailable("room", "NOT_GRANTED")
    server.grant("leap_token_limited", "room")
    client.send(sub("room"))
    assert client.recv() == available("room")


@pytest.mark.parametrize("combo", COMBOS)
def test_unsubscribe_answers_graceful_unavailable_and_stops_delivery(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    client = connect(combo)
    client.send(sub("room"))
    assert client.recv() == available("room")
    client.send({"op": 0, "d": {"c": "room", "e": "UNSUBSCRIBE", "d": None}})
    assert client.recv() == unavailable("room", None, graceful=True)
    assert server.connections[0].subscriptions == frozenset()
    assert server.publish("room", "chat", 1) == 0
    mark(server, client)


# -- SET_CHANNEL_STATE and MESSAGE from clients ------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_set_channel_state_reaches_every_subscriber(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room", state={"v": 0})
    sender = connect(combo)
    other = connect(("json", "zlib"), OTHER)
    bystander = connect(combo, OTHER)  # same session as ``other``, but it subscribes later
    for client in (sender, other):
        client.send(sub("room"))
    assert sender.recv() == available("room", state={"v": 0})
    # ``other`` and ``bystander`` share a session: both see the AVAILABLE.
    assert other.recv() == available("room", state={"v": 0})
    assert bystander.recv() == available("room", state={"v": 0})
    sender.send({"op": 0, "d": {"c": "room", "e": "SET_CHANNEL_STATE", "d": {"v": 1, "who": "sender"}}})
    update = dispatch("STATE_UPDATE", "room", {"state": {"v": 1, "who": "sender"}})
    assert sender.recv() == update
    assert other.recv() == update
    assert bystander.recv() == update
    assert server.channel("room").state == {"v": 1, "who": "sender"}
    # A later subscriber sees the new state in AVAILABLE.
    newcomer_token = "leap_token_newcomer"
    server.add_token(newcomer_token)
    newcomer = connect(combo, newcomer_token)
    newcomer.send(sub("room"))
    assert newcomer.recv() == available("room", state={"v": 1, "who": "sender"})


@pytest.mark.parametrize("combo", COMBOS)
def test_set_channel_state_without_subscription_is_unknown(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room", state={"v": 0})
    client = connect(combo)
    client.send({"op": 0, "d": {"c": "room", "e": "SET_CHANNEL_STATE", "d": {"v": 9}}})
    assert client.recv() == unavailable("room", "UNKNOWN")
    assert server.channel("room").state == {"v": 0}


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(
    "data",
    [{"text": "hi", "n": [1, 2.5, None, True]}, "plain", 42, None, [1, "a"], False],
    ids=["object", "string", "int", "null", "list", "bool"],
)
def test_message_from_a_client_reaches_every_subscriber(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo, data: Any
) -> None:
    server.create_channel("room")
    sender = connect(combo)
    listener = connect(("etf", "none") if combo[0] == "json" else ("json", "none"), OTHER)
    outsider_token = "leap_token_outsider"
    server.add_token(outsider_token)
    outsider = connect(combo, outsider_token)
    for client in (sender, listener):
        client.send(sub("room"))
        assert client.recv() == available("room")
    sender.send({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": data}}})
    assert sender.recv() == message("room", "chat", data)
    assert listener.recv() == message("room", "chat", data)
    mark(server, outsider)


@pytest.mark.parametrize("combo", COMBOS)
def test_message_without_subscription_is_unknown(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    listener = connect(combo, OTHER)
    listener.send(sub("room"))
    assert listener.recv() == available("room")
    client = connect(combo)
    client.send({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": 1}}})
    assert client.recv() == unavailable("room", "UNKNOWN")
    mark(server, listener)


# -- control API events ------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_publish_reaches_subscribers_only(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    subscribed = connect(combo)
    subscribed.send(sub("room"))
    assert subscribed.recv() == available("room")
    outsider = connect(combo, OTHER)
    assert server.publish("room", "chat", {"text": "hi"}) == 1
    assert subscribed.recv() == message("room", "chat", {"text": "hi"})
    mark(server, outsider)
    with pytest.raises(KeyError):
        server.publish("missing", "chat", 1)


@pytest.mark.parametrize("combo", COMBOS)
def test_control_set_channel_state_sends_state_update(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    client = connect(combo)
    client.send(sub("room"))
    assert client.recv() == available("room")
    assert server.set_channel_state("room", {"topic": "x"}) == 1
    assert client.recv() == dispatch("STATE_UPDATE", "room", {"state": {"topic": "x"}})
    assert server.channel("room").state == {"topic": "x"}


@pytest.mark.parametrize("combo", COMBOS)
def test_delete_channel_sends_graceful_unavailable(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    client = connect(combo)
    client.send(sub("room"))
    assert client.recv() == available("room")
    server.delete_channel("room")
    assert client.recv() == unavailable("room", None, graceful=True)
    assert server.connections[0].subscriptions == frozenset()
    client.send(sub("room"))
    assert client.recv() == unavailable("room", "UNKNOWN")
    with pytest.raises(KeyError):
        server.channel("room")


@pytest.mark.parametrize("combo", COMBOS)
def test_direct_messages_reach_the_tokens_session_or_one_connection(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    first = connect(combo)
    second = connect(combo)
    outsider = connect(combo, OTHER)
    assert server.send_direct_message(TOKEN, "ping", {"n": 1}) == 2
    broadcast = dispatch("DIRECT_MESSAGE", None, {"e": "ping", "d": {"n": 1}}, u=False)
    assert first.recv() == broadcast
    assert second.recv() == broadcast
    mark(server, outsider)
    assert server.send_direct_message(TOKEN, "only", [1], cid=second.init["cid"]) == 1
    assert second.recv() == dispatch("DIRECT_MESSAGE", None, {"e": "only", "d": [1]}, u=True)
    mark(server, first)
    assert server.send_direct_message("leap_token_nobody", "ping") == 0


@pytest.mark.parametrize("combo", COMBOS)
def test_token_state_update(server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo) -> None:
    client = connect(combo)
    assert server.set_token_state(TOKEN, {"plan": "pro"}) == 1
    assert client.recv() == dispatch("TOKEN_STATE_UPDATE", None, {"state": {"plan": "pro"}})


@pytest.mark.parametrize("combo", COMBOS)
def test_send_event_delivers_any_dispatch_as_is(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    client = connect(combo)
    assert server.send_event("FUTURE_EVENT", {"x": [1]}, channel_id="room") == 1
    assert client.recv() == dispatch("FUTURE_EVENT", "room", {"x": [1]})


# -- INIT and sessions -------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_connections_of_a_token_share_a_session(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    first = connect(combo)
    second = connect(combo)
    other = connect(combo, OTHER)
    assert first.init["connection_count"] == 1
    assert second.init["connection_count"] == 2
    assert other.init["connection_count"] == 1
    assert len({first.init["cid"], second.init["cid"], other.init["cid"]}) == 3
    # A subscription is the session's: both connections get AVAILABLE and messages.
    first.send(sub("room"))
    assert first.recv() == available("room")
    assert second.recv() == available("room")
    assert {c.cid: c.subscriptions for c in server.connections} == {
        first.init["cid"]: frozenset({"room"}),
        second.init["cid"]: frozenset({"room"}),
        other.init["cid"]: frozenset(),
    }
    assert server.publish("room", "chat", 1) == 2
    assert first.recv() == message("room", "chat", 1)
    assert second.recv() == message("room", "chat", 1)
    mark(server, other)
    # A third connection joins the session with both others still there.
    first.close()
    server.wait_for(lambda s: len(s.connections) == 2, timeout=5)
    third = connect(combo)
    assert third.init["connection_count"] == 2
    assert third.init["channels"] == [channel_obj("room")]


@pytest.mark.parametrize("combo", COMBOS)
def test_token_subscriptions_persist_across_reconnects(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room", state={"topic": "kept"})
    server.create_channel("lobby", type="unprotected")
    first = connect(combo)
    for channel, kind in (("room", "private"), ("lobby", "unprotected")):
        first.send(sub(channel))
        assert first.recv()["d"]["e"] == "AVAILABLE", kind
    first.close()
    closed_all(server)
    again = connect(combo)
    assert again.init["connection_count"] == 1
    assert again.init["channels"] == [channel_obj("room", state={"topic": "kept"}), channel_obj("lobby", "unprotected")]
    assert server.connections[0].subscriptions == frozenset({"room", "lobby"})
    assert server.publish("room", "chat", "no resubscribe needed") == 1
    assert again.recv() == message("room", "chat", "no resubscribe needed")


@pytest.mark.parametrize("combo", COMBOS)
def test_a_session_expires_session_ttl_after_its_last_connection(
    leap_edge_server_factory: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = leap_edge_server_factory(session_ttl=0.3)
    server.add_token(TOKEN)
    server.create_channel("room")
    first = connect(combo, srv=server)
    first.send(sub("room"))
    assert first.recv() == available("room")
    first.close()
    closed_all(server)
    closed_at = time.monotonic()
    # Within the TTL the session (and its subscription) is still there.
    within = connect(combo, srv=server)
    assert within.init["channels"] == [channel_obj("room")]
    assert time.monotonic() - closed_at < 0.3, "too slow to observe the TTL window"
    within.close()
    closed_all(server)
    time.sleep(0.45)  # the TTL itself is what is being tested
    after = connect(combo, srv=server)
    assert after.init["channels"] == []
    assert after.init["connection_count"] == 1
    assert server.connections[0].subscriptions == frozenset()


@pytest.mark.parametrize("combo", COMBOS)
def test_tokenless_connections_have_their_own_session(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("lobby", type="unprotected")
    first = connect(combo, None)
    second = connect(combo, None)
    assert first.init["scope"] == second.init["scope"] == "noauth"
    assert first.init["connection_count"] == second.init["connection_count"] == 1
    first.send(sub("lobby"))
    assert first.recv() == available("lobby", "unprotected")
    mark(server, second)  # not shared with the other tokenless connection
    assert server.publish("lobby", "chat", 1) == 1
    assert first.recv() == message("lobby", "chat", 1)
    mark(server, second)
    # Tokenless subscriptions die with the connection.
    first.close()
    server.wait_for(lambda s: len(s.connections) == 1, timeout=5)
    again = connect(combo, None)
    assert again.init["channels"] == []
    assert server.publish("lobby", "chat", 2) == 0


@pytest.mark.parametrize("combo", COMBOS)
def test_init_lists_channels_with_their_current_state(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room", state={"v": 1})
    first = connect(combo)
    first.send(sub("room"))
    assert first.recv() == available("room", state={"v": 1})
    server.set_channel_state("room", {"v": 2})
    assert first.recv() == dispatch("STATE_UPDATE", "room", {"state": {"v": 2}})
    second = connect(combo)
    assert second.init["channels"] == [channel_obj("room", state={"v": 2})]


# -- pipe rooms --------------------------------------------------------------------------


def pipe_room_obj(room: Any, state: str) -> dict[str, Any]:
    return {
        "id": room.id,
        "name": room.name,
        "created_at": room.created_at,
        "ingest_protocol": room.ingest_protocol,
        "delivery_protocols": ["webrtc", "llhls"],
        "join_token": room.join_token,
        "ingest_region": room.ingest_region,
        "state": state,
    }


@pytest.mark.parametrize("combo", COMBOS)
def test_pipe_room_available_update_unavailable(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    room = server.create_pipe_room("stage", room_id="pipe_room_1", join_token="join_abc")
    client = connect(combo)
    client.send({"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": "join_abc"}}})
    assert client.recv() == dispatch(
        "PIPE_ROOM_AVAILABLE", "pipe_room_1", {"pipe_room": pipe_room_obj(room, "offline"), "connection": {}}
    )
    assert server.connections[0].pipe_rooms == frozenset({"pipe_room_1"})
    server.update_pipe_room("pipe_room_1", state="live")
    live = {
        proto: {
            "edge_endpoint": f"https://edge.example.invalid/pipe_room_1/{proto}",
            "type": proto,
            "serving_pop": "local",
        }
        for proto in ("webrtc", "llhls")
    }
    assert client.recv() == dispatch(
        "PIPE_ROOM_UPDATE", "pipe_room_1", {"pipe_room": pipe_room_obj(room, "live"), "connection": live}
    )
    client.send({"op": 0, "d": {"c": None, "e": "PIPE_ROOM_UNSUBSCRIBE", "d": {"id": "pipe_room_1"}}})
    assert client.recv() == dispatch(
        "PIPE_ROOM_UNAVAILABLE", "pipe_room_1", {"graceful": True, "error_code": None, "join_token": "join_abc"}
    )
    assert server.connections[0].pipe_rooms == frozenset()
    # Subscribed again, the room's deletion is announced.
    client.send({"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": "join_abc"}}})
    assert client.recv()["d"]["e"] == "PIPE_ROOM_AVAILABLE"
    server.delete_pipe_room("pipe_room_1")
    assert client.recv() == dispatch(
        "PIPE_ROOM_UNAVAILABLE", "pipe_room_1", {"graceful": True, "error_code": None, "join_token": "join_abc"}
    )


@pytest.mark.parametrize("combo", COMBOS)
def test_pipe_room_unknown_join_token(server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo) -> None:
    server.create_pipe_room("theirs", project_id="project_y", join_token="join_theirs")
    client = connect(combo)
    for join_token in ("join_nope", "join_theirs"):
        client.send({"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": join_token}}})
        assert client.recv() == dispatch(
            "PIPE_ROOM_UNAVAILABLE", None, {"graceful": False, "error_code": "UNKNOWN", "join_token": join_token}
        )


# -- sequenced channels and introspection ------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_sequenced_channel_numbers_messages_and_records_them_per_connection(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("seq", sequenced=True)
    server.create_channel("plain")
    early = connect(combo)
    early.send(sub("seq"))
    assert early.recv() == available("seq")
    assert server.publish("seq", "n", "a") == 1
    late = connect(combo, OTHER)
    late.send(sub("seq"))
    assert late.recv() == available("seq")
    assert server.publish_many("seq", "n", ["b", "c"]) == 2
    expected = [
        dispatch("MESSAGE", "seq", {"e": "n", "d": d, "seq": s}, u=False) for d, s in (("a", 1), ("b", 2), ("c", 3))
    ]
    assert [early.recv() for _ in range(3)] == expected
    assert [late.recv() for _ in range(2)] == expected[1:]
    by_cid = {c.cid: c.sequences for c in server.connections}
    assert by_cid == {early.init["cid"]: {"seq": (1, 2, 3)}, late.init["cid"]: {"seq": (2, 3)}}
    # An unsequenced channel carries no seq and records nothing.
    early.send(sub("plain"))
    assert early.recv() == available("plain")
    server.publish("plain", "n", "x")
    assert early.recv() == message("plain", "n", "x")
    assert server.connections[0].sequences == {"seq": (1, 2, 3)}


@pytest.mark.parametrize("combo", COMBOS)
def test_connection_introspection_and_frame_counters(
    server: LeapEdgeServer, connect: Callable[..., RawClient], combo: Combo
) -> None:
    server.create_channel("room")
    client = connect(combo)  # in: Identify; out: Hello, INIT
    (info,) = server.connections
    assert info.cid == client.init["cid"]
    assert info.token == TOKEN
    assert TOKEN not in repr(info)
    assert (info.encoding, info.compression) == combo
    assert info.identified and info.open and info.close_code is None
    assert info.subscriptions == frozenset()
    assert info.last_heartbeat is None and info.heartbeats == 0
    assert (info.frames_in, info.frames_out) == (1, 2)
    client.send(sub("room"))
    assert client.recv() == available("room")
    server.publish_many("room", "n", [1, 2, 3])
    assert [client.recv() for _ in range(3)] == [message("room", "n", i) for i in (1, 2, 3)]
    (info,) = server.connections
    assert (info.frames_in, info.frames_out) == (2, 6)
    assert info.subscriptions == frozenset({"room"})
    assert (server.frames_in, server.frames_out) == (2, 6)
    client.close()
    closed_all(server)
    (gone,) = server.all_connections
    assert not gone.open and gone.close_code == 1000
    assert (server.frames_in, server.frames_out) == (2, 6)


def test_server_frame_counters_add_up_over_connections(
    server: LeapEdgeServer, connect: Callable[..., RawClient]
) -> None:
    clients = [connect() for _ in range(3)]
    server.wait_for(lambda s: s.frames_out == 6 and s.frames_in == 3, timeout=5)
    assert server.send_event("MARK", None) == 3
    for client in clients:
        assert client.recv() == dispatch("MARK", None, None)
    assert (server.frames_in, server.frames_out) == (3, 9)


# -- values the encodings cannot carry ---------------------------------------------------


def test_control_values_that_cannot_be_encoded_raise_and_change_nothing(
    server: LeapEdgeServer, connect: Callable[..., RawClient]
) -> None:
    server.create_channel("room", state={"v": 0})
    server.create_channel("seq", sequenced=True)
    client = connect()
    for channel in ("room", "seq"):
        client.send(sub(channel))
        assert client.recv()["d"]["e"] == "AVAILABLE"
    nan = float("nan")
    with pytest.raises(LeapEncodeError):
        server.set_channel_state("room", {"v": nan})
    assert server.channel("room").state == {"v": 0}
    with pytest.raises(LeapEncodeError):
        server.publish("seq", "n", nan)
    with pytest.raises(LeapEncodeError):
        server.create_channel("bad", state={"v": nan})
    with pytest.raises(KeyError):
        server.channel("bad")
    with pytest.raises(LeapEncodeError):
        server.add_token("leap_token_bad", metadata={"v": nan})
    with pytest.raises(LeapEncodeError):
        server.send_direct_message(TOKEN, "dm", nan)
    with pytest.raises(LeapEncodeError):
        server.set_token_state(TOKEN, [nan])
    # Nothing reached the client, and no sequence number was spent.
    mark(server, client)
    assert server.publish("seq", "n", "ok") == 1
    assert client.recv() == dispatch("MESSAGE", "seq", {"e": "n", "d": "ok", "seq": 1}, u=False)
    assert server.connections[0].sequences == {"seq": (1,)}
