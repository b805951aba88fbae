"""LeapClient through the fault proxy: faults in the network, not in the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from faultproxy import DOWN, UP, FaultProxy

from leap_sync import ConnectionState, LeapClient, LeapConnectionError
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED


@pytest.fixture
def network() -> Iterator[tuple[LeapEdgeServer, FaultProxy]]:
    with LeapEdgeServer(heartbeat_interval=0.2) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        with FaultProxy("127.0.0.1", server.port) as proxy:
            yield server, proxy


def connected_client(server: LeapEdgeServer, proxy: FaultProxy) -> tuple[LeapClient, StateRecorder]:
    recorder = StateRecorder()
    client = LeapClient(PROJECT, TOKEN, url=proxy.url_for(server.url), backoff=fast_backoff())
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    return client, recorder


def test_a_half_open_peer_is_detected_and_replaced(network: tuple[LeapEdgeServer, FaultProxy]) -> None:
    server, proxy = network
    client, recorder = connected_client(server, proxy)
    [link] = proxy.links
    proxy.half_open(link=link.id)  # neither side hears the other; nothing is closed
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert "presumed dead" in str(errored.error) and errored.will_reconnect
    assert len(proxy.links) >= 1 and proxy.accepted == 2
    client.close()


@pytest.mark.parametrize("direction", [UP, DOWN])
def test_a_blackholed_direction_ends_in_a_reconnect(network: tuple[LeapEdgeServer, FaultProxy], direction: str) -> None:
    server, proxy = network
    client, recorder = connected_client(server, proxy)
    messages = client.message_event_channel()
    client.subscribe("room", timeout=5)
    [link] = proxy.links
    proxy.blackhole(direction, link=link.id)  # beats or acks vanish
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert isinstance(errored.error, LeapConnectionError) and errored.will_reconnect
    server.wait_for(lambda s: bool(s.subscribers("room")))
    server.publish("room", "after", 1)
    assert messages.get(timeout=5).event_name == "after"  # the new connection works
    client.close()


def test_a_reset_in_the_network_reconnects(network: tuple[LeapEdgeServer, FaultProxy]) -> None:
    server, proxy = network
    client, recorder = connected_client(server, proxy)
    proxy.reset()
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert errored.error.close_code is None  # type: ignore[union-attr]
    client.close()


def test_latency_and_a_narrow_link_break_nothing() -> None:
    # A 1 s interval: the server's beat tolerance (20%) covers the round trip the delay adds.
    with LeapEdgeServer(heartbeat_interval=1.0) as server, FaultProxy("127.0.0.1", server.port) as proxy:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        proxy.set_latency(0.05)
        proxy.set_bandwidth(20_000)
        client, recorder = connected_client(server, proxy)
        messages = client.message_event_channel()
        client.subscribe("room", timeout=5)
        server.publish_many("room", "n", range(200))  # about 15 KB: most of a second through the link
        assert [messages.get(timeout=10).data for _ in range(200)] == list(range(200))
        assert recorder.states == [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, CONNECTED]
        client.close()
