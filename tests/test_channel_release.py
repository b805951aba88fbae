"""Channels nobody holds are released (issue 16, kind 9).

The client holds its event channels weakly: a channel the application dropped without
``close()`` stops being fed and is freed, while one a consumer is reading (blocked in
``get()`` or in a ``for`` loop) is held by that consumer and keeps its events. LeapClient
and ElstatClient alike.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, fast_backoff

from leap_sync import EventChannel, LeapClient, MessageEvent
from leap_sync.elstat import ElstatClient
from leap_sync.leap import CHANNEL_EVENTS, MESSAGES
from leap_sync.testing import ElstatServer, LeapEdgeServer

MakeClient = Callable[..., LeapClient]


@pytest.fixture
def connected(server: LeapEdgeServer, make_client: MakeClient) -> LeapClient:
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    return client


def take(channel: EventChannel[MessageEvent], count: int) -> list[Any]:
    return [channel.get(timeout=10).data for _ in range(count)]


def test_a_dropped_channel_is_freed_and_no_longer_fed(server: LeapEdgeServer, connected: LeapClient) -> None:
    kept = connected.message_event_channel()
    dropped = connected.message_event_channel()
    server.publish_many("room", "n", range(3))
    assert take(kept, 3) == [0, 1, 2]
    assert dropped.qsize() == 3  # fed while held
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None
    server.publish_many("room", "n", range(3, 6))
    assert take(kept, 3) == [3, 4, 5]  # the client keeps receiving
    assert connected._core.channels(MESSAGES) == (kept,)
    assert connected._core.registry.references(MESSAGES) == 1  # its reference was pruned too


def test_memory_stays_flat_over_many_messages_after_a_channel_is_dropped(
    server: LeapEdgeServer, connected: LeapClient
) -> None:
    kept = connected.message_event_channel()
    connected.message_event_channel()  # dropped at once, never closed
    server.publish_many("room", "warmup", range(1000))
    assert take(kept, 1000)[-1] == 999
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        server.publish_many("room", "n", ({"text": "x" * 100, "n": i} for i in range(20_000)))
        assert [d["n"] for d in take(kept, 20_000)] == list(range(20_000))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2 * 2**20, f"memory grew by {grown / 2**20:.1f} MiB"  # held by a dropped channel: ~13 MiB


def test_a_consumer_iterating_holds_its_channel(server: LeapEdgeServer, connected: LeapClient) -> None:
    received: list[Any] = []
    started = threading.Event()

    def consume() -> None:  # the only reference is this thread's loop
        channel = connected.message_event_channel()
        started.set()
        for event in channel:
            received.append(event.data)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert started.wait(10)
    gc.collect()
    probe = connected.message_event_channel()
    server.publish_many("room", "n", range(50))
    assert take(probe, 50)[-1] == 49
    gc.collect()
    assert len(connected._core.channels(MESSAGES)) == 2  # the consumer's and the probe
    connected.close()  # ends the loop after its events
    consumer.join(10)
    assert not consumer.is_alive()
    assert received == list(range(50))


def test_a_consumer_blocked_in_get_holds_its_channel(server: LeapEdgeServer, connected: LeapClient) -> None:
    got: list[Any] = []
    ready = threading.Event()

    def consume() -> None:
        get = connected.message_event_channel().get  # the bound method is the only reference
        ready.set()
        got.append(get(timeout=30).data)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert ready.wait(10)
    gc.collect()
    server.publish("room", "n", "hello")
    consumer.join(10)
    assert got == ["hello"]


def test_a_request_handler_that_returns_without_closing_leaks_nothing(
    server: LeapEdgeServer, connected: LeapClient
) -> None:
    def handler(n: int) -> Any:  # as a Flask view might: wait for one event, forget the channel
        channel = connected.message_event_channel()
        channel_events = connected.channel_event_channel()
        server.publish("room", "n", n)
        assert channel_events.empty()
        return channel.get(timeout=10).data

    assert [handler(n) for n in range(100)] == list(range(100))
    gc.collect()
    assert connected._core.channels(MESSAGES) == ()
    assert connected._core.channels(CHANNEL_EVENTS) == ()
    connected.message_event_channel()  # the next change prunes whatever a busy lock left
    assert connected._core.registry.references(CHANNEL_EVENTS) == 0


def test_a_closed_channel_is_detached_and_a_held_one_still_ends_at_close(
    server: LeapEdgeServer, make_client: MakeClient
) -> None:
    client = make_client(server)
    held = client.message_event_channel()
    closed = client.message_event_channel()
    closed.close()
    assert client._core.channels(MESSAGES) == (held,)
    client.connect(wait=True, timeout=10)
    client.close()
    assert held.closed


@pytest.fixture
def elstat() -> Iterator[ElstatServer]:
    with ElstatServer(channels=("status:api",)) as server:
        yield server


def test_elstat_dropped_data_and_incident_channels_are_freed(elstat: ElstatServer) -> None:
    client = ElstatClient(elstat.base_url, backoff=fast_backoff())
    try:
        kept = client.data_channel()
        incidents = client.incident_channel()
        data = weakref.ref(client.data_channel())
        incident = weakref.ref(client.incident_channel())
        gc.collect()
        assert data() is None and incident() is None
        client.connect(wait=True, timeout=10)
        assert client.subscribe("status:api", timeout=5) == ["status:api"]
        elstat.push_data("status:api", True)
        elstat.push_incident("new", {"id": "i1", "title": "down"})
        assert kept.get(timeout=10).value is True
        assert incidents.get(timeout=10).incident.id == "i1"
        assert client._core.channels("data") == (kept,)
        assert client._core.channels("incidents") == (incidents,)
    finally:
        client.close()


def test_channels_dropped_before_connect_are_freed(server: LeapEdgeServer) -> None:
    client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
    refs = [weakref.ref(client.message_event_channel()) for _ in range(10)]
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert client._core.channels(MESSAGES) == ()
    client.close()
