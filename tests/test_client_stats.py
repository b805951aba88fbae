"""``client.stats``: the :class:`~leap_sync.Stats` snapshot of a LeapClient and an
ElstatClient (connections, reconnects, time connected, messages and bytes both ways,
the heartbeat round trip, each event channel's depth and drops), the counters on a
fake clock, and reads from many threads at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import websocket

from leap_sync import ChannelStats, ConnectionState, LeapClient, Stats
from leap_sync.connection.stats import Counters
from leap_sync.elstat import ElstatClient
from leap_sync.elstat.protocol import Op, data_frame, reply_frame
from leap_sync.testing import ElstatServer, LeapEdgeServer
from leap_sync.wire.jsontext import encode_json

TIMEOUT = 10.0
TOKEN = "leap_token_stats_0123456789"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counters_on_a_fake_clock() -> None:
    clock = FakeClock()
    counters = Counters(clock)
    assert counters.snapshot(None, {}) == Stats(ConnectionState.IDLE, None, 0.0, 0, 0, 0, 0, 0, 0, None, ())
    counters.state_changed(ConnectionState.CONNECTING)
    counters.state_changed(ConnectionState.AUTHENTICATING)
    counters.state_changed(ConnectionState.CONNECTED)
    clock.now += 5.0
    counters.received([(b"abc", False), (b"\x83h", True)])
    counters.received([(b"x" * 1000, False)])
    for payload in ("", "a" * 125, "b" * 126, "c" * 65535, "d" * 65536):
        counters.sent_frame(len(websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT).format()))
    snap = counters.snapshot(0.012, {})
    assert snap == Stats(ConnectionState.CONNECTED, 5.0, 5.0, 1, 0, 3, 1005, 5, 125 + 126 + 65535 + 65536, 0.012, ())
    counters.state_changed(ConnectionState.ERRORED)
    clock.now += 2.0  # not connected: not counted
    counters.state_changed(ConnectionState.CONNECTING)
    counters.state_changed(ConnectionState.CONNECTED)
    clock.now += 1.5
    snap = counters.snapshot(None, {})
    assert (snap.connected_for, snap.connected_total, snap.connections, snap.reconnects) == (1.5, 6.5, 2, 1)
    counters.state_changed(ConnectionState.CLOSED)
    snap = counters.snapshot(None, {})
    assert (snap.state, snap.connected_for, snap.connected_total) == (ConnectionState.CLOSED, None, 6.5)
    assert snap.as_dict()["state"] == "closed"


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer(heartbeat_interval=30.0) as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        yield server


def test_leap_client_stats_count_messages_connections_and_channels(leap: LeapEdgeServer) -> None:
    with LeapClient("project_x", token=TOKEN, url=leap.url) as client:
        messages = client.message_event_channel(maxsize=2)
        events = client.channel_event_channel()
        before = client.stats
        assert (before.state, before.connections, before.messages_in, before.messages_out) == (
            ConnectionState.IDLE,
            0,
            0,
            0,
        )
        client.connect(wait=True, timeout=TIMEOUT)
        client.subscribe("room", timeout=TIMEOUT)
        for n in range(5):
            leap.publish("room", "chat", {"n": n})
        client.send_message("room", "reply", {"ok": True})
        leap.wait_for(lambda s: s.frames_in == 3)  # Identify, SUBSCRIBE, MESSAGE
        leap.wait_for(lambda s: s.frames_out == 9)  # Hello, INIT, AVAILABLE, 5 MESSAGE and its own
        leap.wait_for(lambda s: client.stats.messages_in == 9)
        stats = client.stats
        assert stats.state is ConnectionState.CONNECTED
        assert (stats.connections, stats.reconnects) == (1, 0)
        assert (stats.messages_in, stats.messages_out) == (9, 3)
        assert stats.connected_for is not None and stats.connected_total == stats.connected_for
        assert stats.channels == (ChannelStats("messages", 2, 2, 4), ChannelStats("channel_events", 0, 0, 0))
        assert [e.data for e in (messages.get_nowait(), messages.get_nowait())] == [{"n": 4}, {"ok": True}]
        assert client.stats.channels[0] == ChannelStats("messages", 0, 2, 4)
        events.close()
        assert [c.kind for c in client.stats.channels] == ["messages"]

        leap.drop()
        leap.wait_for_connections(1)
        client.wait_connected(timeout=TIMEOUT)
        stats = client.stats
        assert (stats.connections, stats.reconnects) == (2, 1)
        assert stats.messages_out == 3 + 1  # Identify again (a token session keeps its subscriptions)
    closed = client.stats
    assert (closed.state, closed.connected_for) == (ConnectionState.CLOSED, None)
    assert closed.connected_total > 0
    assert closed.channels == ()


def test_leap_client_stats_heartbeat_round_trip() -> None:
    with LeapEdgeServer(heartbeat_interval=0.05) as server, LeapClient("project_x", url=server.url) as client:
        client.connect(wait=True, timeout=TIMEOUT)
        server.wait_for(lambda s: client.latency is not None)
        rtt = client.stats.heartbeat_rtt
        assert rtt is not None and 0 <= rtt < TIMEOUT


def test_elstat_client_stats_bytes_are_the_payloads() -> None:
    channels = ["status:api", "latency:api"]
    with ElstatServer(channels=channels) as server, ElstatClient(server.base_url) as client:
        data = client.data_channel()
        client.connect()
        assert client.subscribe(channels, timeout=TIMEOUT) == channels
        server.push_data("status:api", True, timestamp_ms=1531339962000)
        server.push_data("latency:api", 42, timestamp_ms=1531339962001)
        assert [data.get(timeout=TIMEOUT).value for _ in range(2)] == [True, 42]
        stats = client.stats
        sent = [encode_json({"op": 0, "channels": channels})]
        received = [
            reply_frame(Op.SUBSCRIBED, channels),
            data_frame("status:api", 1531339962000, True),
            data_frame("latency:api", 1531339962001, 42),
        ]
        assert (stats.messages_out, stats.bytes_out) == (1, sum(len(t.encode()) for t in sent))
        assert (stats.messages_in, stats.bytes_in) == (3, sum(len(t.encode()) for t in received))
        assert stats.heartbeat_rtt is None
        assert stats.channels == (ChannelStats("data", 0, 0, 0),)


def test_stats_read_from_many_threads_while_streaming(leap: LeapEdgeServer) -> None:
    with LeapClient("project_x", token=TOKEN, url=leap.url) as client:
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=TIMEOUT)
        client.subscribe("room", timeout=TIMEOUT)
        stop = threading.Event()
        seen: list[list[int]] = [[] for _ in range(4)]
        errors: list[BaseException] = []

        def read(into: list[int]) -> None:
            try:
                while not stop.is_set():
                    into.append(client.stats.messages_in)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        readers = [threading.Thread(target=read, args=(s,), name=f"stats-reader-{i}") for i, s in enumerate(seen)]
        for thread in readers:
            thread.start()
        for n in range(500):
            leap.publish("room", "n", n)
        assert [messages.get(timeout=TIMEOUT).data for _ in range(500)] == list(range(500))
        stop.set()
        for thread in readers:
            thread.join(TIMEOUT)
        assert not errors
        for values in seen:
            assert values == sorted(values)  # never goes back
        assert client.stats.messages_in == 3 + 500  # Hello, INIT, AVAILABLE, the stream
