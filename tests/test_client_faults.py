"""LeapClient under faults: every close code, TCP drops, zombies, unacked heartbeats."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable

import pytest
from clientkit import TOKEN, StateRecorder, fast_backoff

from leap_sync import (
    ChannelClosed,
    ConnectionState,
    LeapAuthorizationError,
    LeapClient,
    LeapConnectionError,
    MessageEvent,
)
from leap_sync.protocol.models import ClientFrame, ClientHeartbeat
from leap_sync.testing import LeapEdgeServer

MakeClient = Callable[..., LeapClient]
CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED


@pytest.mark.parametrize("code", [4000, 4002, 4003, 4004, 4005, 4007, 1000, 1001, 1011])
def test_reconnecting_close_codes(server: LeapEdgeServer, make_client: MakeClient, code: int) -> None:
    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    first_cid = server.connections[0].cid
    server.disconnect(code, "bye")
    infos = recorder.wait_count(CONNECTED, 2)
    errored = [i for i in infos if i.connection_state is ERRORED]
    assert len(errored) == 1
    assert errored[0].will_reconnect is True
    assert isinstance(errored[0].error, LeapConnectionError)
    assert (errored[0].error.close_code, errored[0].error.close_reason) == (code, "bye")
    assert [i.connection_state for i in infos[3:]] == [
        ERRORED,
        ConnectionState.CONNECTING,
        ConnectionState.AUTHENTICATING,
        CONNECTED,
    ]
    [conn] = server.wait_for_connections(1)
    assert conn.cid != first_cid


def test_invalid_auth_is_fatal(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server, token="leap_token_wrong_7d1e")
    messages = client.message_event_channel()
    client.add_state_update_listener(recorder)
    client.connect()  # the upgrade succeeds; authentication fails asynchronously
    infos = recorder.wait_for(lambda infos: any(i.connection_state is ERRORED for i in infos))
    final = infos[-1]
    assert final.connection_state is ERRORED
    assert final.will_reconnect is False
    assert isinstance(final.error, LeapAuthorizationError)
    assert final.error.close_code == 4001
    with pytest.raises(ChannelClosed):
        messages.get(timeout=5)
    with pytest.raises(LeapAuthorizationError):
        client.wait_connected(timeout=5)
    assert len(server.all_connections) == 1  # never retried
    assert "leap_token_wrong_7d1e" not in str(final.error)
    client.close()
    assert client.state.connection_state is ConnectionState.CLOSED


def test_4001_after_connected_is_fatal_and_fails_waiters(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    events = client.channel_event_channel()
    client.connect(wait=True, timeout=10)
    server.disconnect(4001, "token revoked")
    infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
    assert infos[-1].will_reconnect is False
    assert isinstance(infos[-1].error, LeapAuthorizationError)
    with pytest.raises(ChannelClosed):
        events.get(timeout=5)
    assert list(events) == []
    assert len(server.all_connections) == 1


@pytest.mark.parametrize(("encoding", "compression"), [("json", "zlib"), ("etf", "none")])
def test_4006_redirect_keeps_query(
    server: LeapEdgeServer, make_client: MakeClient, encoding: str, compression: str
) -> None:
    with LeapEdgeServer() as other:
        other.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server, encoding=encoding, compression=compression)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        server.disconnect(4006, other.url + "?region=eu")
        [conn] = other.wait_for_connections(1)
        recorder.wait_count(CONNECTED, 2)
        assert (conn.encoding, conn.compression) == (encoding, compression)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(client.url).query))
        assert query == {"region": "eu", "encoding": encoding, "compression": compression}
        assert client.url.startswith(other.url)
        assert server.connections == []


@pytest.mark.parametrize(
    "reason",
    ["not a url", "wss://127.0.0.1\x00x:443/ws", "ws://bad host/ws", "ws://h\x07/ws"],
    ids=["text", "nul", "space", "bell"],
)
def test_4006_with_garbage_reason_reconnects_to_same_endpoint(
    server: LeapEdgeServer, make_client: MakeClient, reason: str
) -> None:
    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    url = client.url
    server.disconnect(4006, reason)
    recorder.wait_count(CONNECTED, 2)
    assert client.url == url


def test_tcp_drop_reconnects(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    assert server.drop() == 1
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert errored.will_reconnect is True
    assert isinstance(errored.error, LeapConnectionError)
    assert errored.error.close_code is None


def test_silent_server_is_detected_as_zombie(make_client: MakeClient) -> None:
    with LeapEdgeServer(heartbeat_interval=0.1) as server:
        server.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        [silent] = server.connections
        server.silence()
        infos = recorder.wait_count(CONNECTED, 2)
        [errored] = [i for i in infos if i.connection_state is ERRORED]
        assert "presumed dead" in str(errored.error)
        server.wait_for(lambda s: not any(c.cid == silent.cid for c in s.connections))
        [closed] = [c for c in server.all_connections if c.cid == silent.cid]
        assert closed.close_code == 4000  # the client closed it with 4000


def test_server_that_stops_acking_is_left_and_rejoined(make_client: MakeClient) -> None:
    with LeapEdgeServer(heartbeat_interval=0.1) as server:
        server.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        server.pause_acks(True)
        recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
        server.pause_acks(False)
        infos = recorder.wait_for(lambda infos: infos[-1].connection_state is CONNECTED)
        assert infos[-1].connection_state is CONNECTED
        # and it stays: ten acknowledged beats on the new connection
        cid = server.wait_for_connections(1)[0].cid
        server.wait_for(lambda s: any(c.cid == cid and c.heartbeats >= 10 for c in s.connections))
        assert client.state.connection_state is CONNECTED
        assert client.latency is not None and client.latency >= 0


def test_busy_stream_does_not_trip_zombie_detection(make_client: MakeClient) -> None:
    # Acks queue behind 50,000 messages streamed in one burst; beats every 100 ms.
    with LeapEdgeServer(heartbeat_interval=0.1, heartbeat_tolerance=10.0) as server:
        server.add_token(TOKEN)
        server.create_channel("firehose")
        recorder = StateRecorder()
        client = make_client(server)
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        client.subscribe("firehose", timeout=5)
        payload = {"text": "x" * 150}
        server.publish_many("firehose", "m", ({"n": i, **payload} for i in range(50_000)))
        received = [messages.get(timeout=30).data["n"] for _ in range(50_000)]
        assert received == list(range(50_000))
        assert recorder.states == [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, CONNECTED]
        assert len(server.all_connections) == 1


def test_tagged_heartbeat_request_is_answered(make_client: MakeClient) -> None:
    tags: list[str | None] = []
    seen = threading.Event()

    def on_frame(cid: str, frame: ClientFrame) -> None:
        if isinstance(frame, ClientHeartbeat) and frame.tag is not None:
            tags.append(frame.tag)
            seen.set()

    with LeapEdgeServer(heartbeat_request_timeout=2.0, on_frame=on_frame) as server:
        server.add_token(TOKEN)
        client = make_client(server)
        client.connect(wait=True, timeout=10)
        assert len(server.request_heartbeat("tag-123")) == 1
        assert seen.wait(5)
        assert tags == ["tag-123"]
        session = client._core.live.session if client._core.live else None
        server.wait_for(lambda s: session is not None and session.tagged_latency is not None)
        assert client.state.connection_state is CONNECTED
        assert len(server.all_connections) == 1


def test_fast_heartbeats_never_draw_4007(make_client: MakeClient) -> None:
    # 50 ms beats for 5 s (100 beats) against a 40 ms drift tolerance.
    with LeapEdgeServer(heartbeat_interval=0.05, heartbeat_tolerance=0.04) as server:
        server.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        cid = server.connections[0].cid
        server.wait_for(lambda s: any(c.cid == cid and c.heartbeats >= 100 for c in s.all_connections), timeout=20)
        [conn] = server.connections
        assert conn.cid == cid and conn.open
        assert recorder.states == [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, CONNECTED]


def test_messages_before_a_close_frame_are_delivered(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    server.publish_many("room", "n", range(100))
    server.disconnect(4000)
    assert [messages.get(timeout=5) for _ in range(100)] == [MessageEvent("room", "n", i) for i in range(100)]


def test_garbage_frame_reconnects(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    server.send_raw("{not json")
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert "protocol error" in str(errored.error)
    server.send_raw_bytes(b"\x8f\x00")  # unknown websocket opcode
    infos = recorder.wait_count(CONNECTED, 3)


def test_zlib_bomb_is_refused_and_reconnects(make_client: MakeClient) -> None:
    import zlib

    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server, compression="zlib", max_message_size=1024 * 1024)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        bomb = zlib.compress(b'{"op":0,"d":{"e":"MESSAGE","c":"r","d":{"e":"x","d":"' + b"A" * 50_000_000 + b'"}}}', 9)
        assert len(bomb) < 100_000
        server.send_raw(bomb)
        infos = recorder.wait_count(CONNECTED, 2)
        [errored] = [i for i in infos if i.connection_state is ERRORED]
        assert "limit" in str(errored.error)


def test_oversized_frame_is_refused(make_client: MakeClient) -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        recorder = StateRecorder()
        client = make_client(server, max_message_size=1000)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        server.send_raw_bytes(b"\x81\x7f" + (2**40).to_bytes(8, "big"))  # announces 1 TiB
        infos = recorder.wait_count(CONNECTED, 2)
        [errored] = [i for i in infos if i.connection_state is ERRORED]
        assert "limit" in str(errored.error)


def test_no_hello_is_an_error_and_retried(make_client: MakeClient) -> None:
    from rawws import RawServer

    with RawServer() as raw:  # upgrades, then says nothing at all
        recorder = StateRecorder()
        client = LeapClient("project_x", TOKEN, url=raw.url, connect_timeout=0.3, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect()  # the upgrade succeeds
        first = raw.accept()
        infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
        assert infos[-1].will_reconnect is True
        assert str(infos[-1].error) == "no Hello within 0.3 s"
        assert first.read_frame() == (8, (4000).to_bytes(2, "big"))  # closed by the client, 4000
        second = raw.accept()  # and it tried again
        client.close()
        first.close()
        second.close()
    # the second attempt may or may not have finished its upgrade when close() came,
    # but closing it is not an error
    states = recorder.states
    assert states[:4] == [
        ConnectionState.CONNECTING,
        ConnectionState.AUTHENTICATING,
        ERRORED,
        ConnectionState.CONNECTING,
    ]
    assert states[4:] in ([ConnectionState.AUTHENTICATING, ConnectionState.CLOSED], [ConnectionState.CLOSED])


def test_messages_before_a_framing_error_are_delivered(server: LeapEdgeServer, make_client: MakeClient) -> None:
    import json

    from rawws import server_frame

    recorder = StateRecorder()
    client = make_client(server)
    client.add_state_update_listener(recorder)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    frames = b"".join(
        server_frame(1, json.dumps({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "n", "d": i}}}).encode())
        for i in range(50)
    )
    server.send_raw_bytes(frames + b"\x8f\x00")  # 50 good frames and an unknown opcode, one write
    assert [messages.get(timeout=5).data for _ in range(50)] == list(range(50))
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert "unknown websocket opcode" in str(errored.error)
