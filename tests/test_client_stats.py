"""``client.stats``: the :class:`~leap_sync.Stats` snapshot of a LeapClient and an
ElstatClient (connections, reconnects, time connected, messages and bytes both ways,
the heartbeat round trip, each event channel's depth and drops), the counters on a
fake clock, and reads from many threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

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


class _SignallingLock:
    """A lock that sets ``trying`` when a thread starts to acquire it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trying = threading.Event()

    def __enter__(self) -> None:
        self.trying.set()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _HeldClock:
    """A fake clock whose first read on ``thread_name`` returns the time of the call,
    but only once ``release`` is set (a transition slowed between its clock read and
    its update)."""

    def __init__(self, thread_name: str) -> None:
        self.now = 100.0
        self.thread_name = thread_name
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> float:
        now = self.now
        if threading.current_thread().name == self.thread_name and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(TIMEOUT)
        return now


def test_connected_total_never_goes_back_when_a_transition_races_a_snapshot() -> None:
    # A disconnect reads the clock at 103, a snapshot at 104, then the disconnect is
    # recorded: with the clock read outside the lock, the disconnect closed the
    # interval at 103 after a snapshot had counted it up to 104 (4.0, then 3.0).
    clock = _HeldClock("stats-transition")
    counters = Counters(clock)
    lock = _SignallingLock()
    counters._lock = lock  # type: ignore[assignment]
    counters.state_changed(ConnectionState.CONNECTING)
    counters.state_changed(ConnectionState.CONNECTED)  # at 100
    clock.now = 103.0
    snaps: list[Stats] = []
    transition = threading.Thread(
        target=counters.state_changed, args=(ConnectionState.ERRORED,), name="stats-transition"
    )
    transition.start()
    assert clock.entered.wait(TIMEOUT)
    clock.now = 104.0
    lock.trying.clear()
    reader = threading.Thread(target=lambda: snaps.append(counters.snapshot(None, {})), name="stats-reader")
    reader.start()
    assert lock.trying.wait(TIMEOUT)  # the snapshot is at (or past) the counters' lock
    clock.release.set()
    transition.join(TIMEOUT)
    reader.join(TIMEOUT)
    snaps.append(counters.snapshot(None, {}))
    assert [(s.state, s.connected_for, s.connected_total) for s in snaps] == [
        (ConnectionState.ERRORED, None, 3.0),
        (ConnectionState.ERRORED, None, 3.0),
    ]


class _ChangingChannel:
    """Stands for an event channel; reading its depth lets a transition happen
    (``on_qsize``) in the middle of a snapshot."""

    maxsize = 0
    dropped = 0

    def __init__(self, on_qsize: Callable[[], None]) -> None:
        self.on_qsize = on_qsize

    def qsize(self) -> int:
        self.on_qsize()
        return 0


def test_stats_state_agrees_with_connected_for_when_a_transition_races_the_snapshot() -> None:
    # The state used to be read before the counters: a snapshot said CONNECTING with
    # connected_for 0.0 (or ERRORED with connected_for set) when a transition came between.
    client = LeapClient("project_x", token=TOKEN, url="ws://127.0.0.1:1/ws")
    core = client._core
    core.counters = Counters(FakeClock())
    core.set_state(ConnectionState.CONNECTING)
    channel = _ChangingChannel(lambda: core.set_state(ConnectionState.CONNECTED))
    core.registry.by_kind = lambda: {"data": (channel,)}  # type: ignore[method-assign,assignment]
    snap = client.stats
    assert (snap.state, snap.connected_for, snap.connections) == (ConnectionState.CONNECTED, 0.0, 1)
    channel.on_qsize = lambda: core.set_state(ConnectionState.ERRORED, ValueError("x"), True)
    snap = client.stats
    assert (snap.state, snap.connected_for, snap.connections) == (ConnectionState.ERRORED, None, 1)
    client.close()


def test_stats_while_another_thread_makes_channels() -> None:
    # Regression: a snapshot iterated the registry's dict of kinds while another
    # thread's new channel added a kind to it ("dictionary changed size during
    # iteration"). Here the new kind arrives right inside the snapshot's walk.
    client = LeapClient("project_x", token=TOKEN, url="ws://127.0.0.1:1/ws")
    registry = client._core.registry
    messages = client.message_event_channel()
    made: list[object] = []
    listed = registry.channels

    def channels_then_a_new_kind(kind: str) -> tuple[object, ...]:
        if not made:
            made.append(client.channel_event_channel())
        return listed(kind)

    registry.channels = channels_then_a_new_kind  # type: ignore[method-assign,assignment]
    assert [c.kind for c in client.stats.channels] == ["messages"]  # the kinds of that instant
    assert [c.kind for c in client.stats.channels] == ["messages", "channel_events"]
    del registry.channels
    messages.close()
    client.close()
