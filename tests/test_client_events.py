"""LeapClient against the embedded server: every event kind, in every encoding."""

from __future__ import annotations

import queue
from collections.abc import Callable

import pytest
from clientkit import ENCODINGS, PROJECT, TOKEN, StateRecorder

from leap_sync import (
    AvailableEvent,
    Channel,
    ChannelUnavailableError,
    ConnectionState,
    LeapClient,
    MessageEvent,
    PipeRoomAvailableEvent,
    PipeRoomUnavailableEvent,
    PipeRoomUpdateEvent,
    StateUpdateEvent,
    TokenStateUpdateEvent,
    UnavailableEvent,
    UnknownEvent,
)
from leap_sync.testing import LeapEdgeServer

MakeClient = Callable[..., LeapClient]


@pytest.mark.parametrize(("encoding", "compression"), ENCODINGS)
def test_connect_reaches_connected_with_init(
    server: LeapEdgeServer, make_client: MakeClient, encoding: str, compression: str
) -> None:
    recorder = StateRecorder()
    client = make_client(server, encoding=encoding, compression=compression)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    init = client.init_event
    assert init is not None
    assert init.scope == "token"
    assert init.metadata == {"user": "alice"}
    assert init.connection_count == 1
    assert init.channels == ()
    [conn] = server.connections
    assert (conn.cid, conn.encoding, conn.compression) == (init.cid, encoding, compression)
    assert recorder.states == [
        ConnectionState.CONNECTING,
        ConnectionState.AUTHENTICATING,
        ConnectionState.CONNECTED,
    ]
    assert recorder.threads == {f"leap-sync-callbacks-{client._number}"}  # listeners never run on the I/O thread


@pytest.mark.parametrize(("encoding", "compression"), ENCODINGS)
def test_subscribe_and_receive_every_event(
    server: LeapEdgeServer, make_client: MakeClient, encoding: str, compression: str
) -> None:
    client = make_client(server, encoding=encoding, compression=compression)
    messages = client.message_event_channel()
    events = client.channel_event_channel()
    client.connect(wait=True, timeout=10)

    channel = client.subscribe("room", timeout=5)
    assert channel == Channel("room", PROJECT, {"topic": "start"}, "private", None)
    assert client.subscriptions == ("room",)

    server.publish("room", "chat", {"text": "hi", "n": 1})
    server.publish("room", "list", [1, "two", None])
    server.publish("room", "scalar", "just a string")
    server.publish("room", "nothing", None)
    assert messages.get(timeout=5) == MessageEvent("room", "chat", {"text": "hi", "n": 1})
    assert messages.get(timeout=5) == MessageEvent("room", "list", [1, "two", None])
    assert messages.get(timeout=5) == MessageEvent("room", "scalar", "just a string")
    assert messages.get(timeout=5) == MessageEvent("room", "nothing", None)

    server.send_direct_message(TOKEN, "dm", {"k": "v"})
    direct = messages.get(timeout=5)
    assert direct == MessageEvent(None, "dm", {"k": "v"}, unicast=False, direct=True)
    assert direct.is_direct_message
    cid = server.connections[0].cid
    server.send_direct_message(TOKEN, "only-you", 7, cid=cid)
    assert messages.get(timeout=5) == MessageEvent(None, "only-you", 7, unicast=True, direct=True)

    server.set_channel_state("room", {"topic": "new"})
    assert events.get(timeout=5) == StateUpdateEvent("room", {"topic": "new"})
    server.set_token_state(TOKEN, {"presence": "away"})
    assert events.get(timeout=5) == TokenStateUpdateEvent(None, {"presence": "away"})

    server.send_event("FUTURE_EVENT", {"x": [1, 2]}, channel_id="room")
    assert events.get(timeout=5) == UnknownEvent("room", "FUTURE_EVENT", {"x": [1, 2]}, False)

    room = server.create_pipe_room("stream", join_token="join_abc", room_id="pipe_room_1")
    client.subscribe_pipe_room("join_abc")
    available = events.get(timeout=5)
    assert isinstance(available, PipeRoomAvailableEvent)
    assert (available.channel_id, available.pipe_room, available.connection) == ("pipe_room_1", room, {})
    live = server.update_pipe_room("pipe_room_1", state="live")
    update = events.get(timeout=5)
    assert isinstance(update, PipeRoomUpdateEvent)
    assert update.pipe_room == live
    assert set(update.connection) == {"webrtc", "llhls"}
    client.unsubscribe_pipe_room("pipe_room_1")
    assert events.get(timeout=5) == PipeRoomUnavailableEvent("pipe_room_1", True, None, "join_abc")
    client.subscribe_pipe_room("join_nope")
    assert events.get(timeout=5) == PipeRoomUnavailableEvent(None, False, "UNKNOWN", "join_nope")

    # Client-sent messages and state reach every subscriber, this client included.
    client.send_message("room", "echo", {"from": "me"})
    assert messages.get(timeout=5) == MessageEvent("room", "echo", {"from": "me"})
    client.set_channel_state("room", {"topic": "mine"})
    assert events.get(timeout=5) == StateUpdateEvent("room", {"topic": "mine"})

    client.unsubscribe("room")
    assert events.get(timeout=5) == UnavailableEvent("room", True, None)
    assert client.subscriptions == ()
    with pytest.raises(queue.Empty):
        messages.get(timeout=0.01)


@pytest.mark.parametrize(("encoding", "compression"), ENCODINGS)
def test_subscribe_refused(server: LeapEdgeServer, make_client: MakeClient, encoding: str, compression: str) -> None:
    server.add_token("leap_token_limited", project_id=PROJECT, grants=["room"])
    client = make_client(server, token="leap_token_limited", encoding=encoding, compression=compression)
    events = client.channel_event_channel()
    client.connect(wait=True, timeout=10)
    with pytest.raises(ChannelUnavailableError) as refused:
        client.subscribe("secret", timeout=5)
    assert (refused.value.channel_id, refused.value.error_code) == ("secret", "NOT_GRANTED")
    with pytest.raises(ChannelUnavailableError) as unknown:
        client.subscribe("no-such-channel", timeout=5)
    assert unknown.value.error_code == "UNKNOWN"
    assert client.subscribe("room", timeout=5).id == "room"
    # Answers to subscribe() calls do not also reach the channel-event channel.
    with pytest.raises(queue.Empty):
        events.get(timeout=0.05)
    assert client.subscriptions == ("room",)


def test_available_without_a_waiter_goes_to_channel_events(server: LeapEdgeServer, make_client: MakeClient) -> None:
    first = make_client(server)
    second = make_client(server)
    events = second.channel_event_channel()
    first.connect(wait=True, timeout=10)
    second.connect(wait=True, timeout=10)
    assert second.init_event is not None and second.init_event.connection_count == 2
    first.subscribe("room", timeout=5)  # same token: the session's other connection hears of it
    event = events.get(timeout=5)
    assert isinstance(event, AvailableEvent)
    assert event.channel.id == "room"
    assert second.subscriptions == ("room",)


def test_tokenless_client_reaches_only_unprotected_channels(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server, token=None)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    assert client.init_event is not None and client.init_event.scope == "noauth"
    with pytest.raises(ChannelUnavailableError) as refused:
        client.subscribe("room", timeout=5)
    assert refused.value.error_code == "NOT_GRANTED"
    assert client.subscribe("lobby", timeout=5).type == "unprotected"
    server.publish("lobby", "hello", {"to": "all"})
    assert messages.get(timeout=5) == MessageEvent("lobby", "hello", {"to": "all"})


def test_several_channels_each_get_every_event_in_order(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    channels = [client.message_event_channel() for _ in range(3)]
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    server.publish_many("room", "n", range(500))
    for channel in channels:
        assert [channel.get(timeout=5).data for _ in range(500)] == list(range(500))
    channels[0].close()
    server.publish("room", "n", 500)
    assert channels[1].get(timeout=5).data == 500
    assert channels[2].get(timeout=5).data == 500
    assert channels[0].qsize() == 0


def test_wss_end_to_end_with_verification(make_client: MakeClient) -> None:
    import ssl

    import trustme

    from leap_sync import ConnectionState, LeapConnectionError

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with LeapEdgeServer(ssl_context=server_context) as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        assert server.url.startswith("wss://127.0.0.1:")
        untrusting = make_client(server)
        with pytest.raises(LeapConnectionError, match=r"(?i)certificate"):
            untrusting.connect()
        assert untrusting.state.connection_state is ConnectionState.ERRORED
        context = ssl.create_default_context()
        ca.configure_trust(context)
        client = make_client(server, ssl_context=context)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        server.publish_many("room", "n", range(2000))
        assert [messages.get(timeout=10).data for _ in range(2000)] == list(range(2000))


def test_slow_consumers_never_block_the_reader(server: LeapEdgeServer, make_client: MakeClient) -> None:
    from leap_sync import ChannelOverflowError

    client = make_client(server)
    everything = client.message_event_channel()
    newest = client.message_event_channel(maxsize=10, overflow="drop_oldest")
    strict = client.message_event_channel(maxsize=10, overflow="error")
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    server.publish_many("room", "n", range(100))
    assert [everything.get(timeout=5).data for _ in range(100)] == list(range(100))
    assert [newest.get(timeout=5).data for _ in range(10)] == list(range(90, 100))
    assert newest.dropped == 90
    assert [strict.get(timeout=5).data for _ in range(10)] == list(range(10))
    with pytest.raises(ChannelOverflowError):
        strict.get(timeout=5)
    with pytest.raises(ChannelOverflowError):
        list(strict)  # iteration never ends silently after a loss
    server.publish("room", "n", 100)
    assert everything.get(timeout=5).data == 100
    assert newest.get(timeout=5).data == 100
    assert client.state.connection_state is ConnectionState.CONNECTED


def test_close_sends_a_close_frame(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    client.close()
    server.wait_for(lambda s: not s.connections)
    assert [c.close_code for c in server.all_connections] == [1000]


def test_a_hundred_clients_two_threads_each(server: LeapEdgeServer) -> None:
    import threading

    from leap_sync import NopLogger

    clients = [LeapClient(PROJECT, TOKEN, NopLogger(), url=server.url) for _ in range(100)]
    try:
        for client in clients:
            client.connect()
        for client in clients:
            client.wait_connected(timeout=30)
        names = [t.name for t in threading.enumerate() if t.name.startswith(("leap-sync-io-", "leap-sync-callbacks-"))]
        assert len(names) == 200
        assert clients[-1].init_event is not None and clients[-1].init_event.connection_count == 100
        assert server.send_direct_message(TOKEN, "all", 1) == 100
    finally:
        for client in clients:
            client.close()
