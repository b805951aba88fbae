"""Nothing the server wrote is lost, duplicated or reordered, across reconnects."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from clientkit import TOKEN, StateRecorder

from leap_sync import ConnectionState, LeapClient, MessageEvent
from leap_sync.testing import LeapEdgeServer

MakeClient = Callable[..., LeapClient]


def written_to(server: LeapEdgeServer, channel: str) -> list[int]:
    """Every sequence number the server wrote to any connection, connection by
    connection (one client at a time here), in order."""
    return [seq for conn in server.all_connections for seq in conn.sequences.get(channel, ())]


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "tokenless"])
@pytest.mark.parametrize("fault", ["drop", "close-4000", "close-4005", "mixed"])
def test_sequenced_messages_across_three_reconnects(make_client: MakeClient, token: str | None, fault: str) -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("seq", type="unprotected", sequenced=True)
        recorder = StateRecorder()
        client = make_client(server, token=token)
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        client.subscribe("seq", timeout=5)

        faults = {
            "drop": [lambda: server.drop()] * 3,
            "close-4000": [lambda: server.disconnect(4000)] * 3,
            "close-4005": [lambda: server.disconnect(4005)] * 3,
            "mixed": [lambda: server.drop(), lambda: server.disconnect(4000), lambda: server.disconnect(1011)],
        }[fault]
        published = 0
        for round_, inject in enumerate([*faults, None]):
            # publish a slice, then fault; the client reconnects (and, tokenless,
            # re-subscribes) before the next slice
            server.wait_for(lambda s: bool(s.subscribers("seq")))
            server.publish_many("seq", "n", range(published, published + 250))
            published += 250
            if inject is not None:
                inject()
                recorder.wait_count(ConnectionState.CONNECTED, round_ + 2)
        expected = written_to(server, "seq")
        received: list[MessageEvent] = []
        while len(received) < len(expected):
            received.append(messages.get(timeout=10))
        seqs = [m.seq for m in received]
        assert seqs == expected
        assert seqs == sorted(set(seqs))  # no duplicates, in order
        assert [m.data for m in received] == [s - 1 for s in seqs]  # data i carries seq i + 1
        assert len(server.all_connections) == 4
        assert len(expected) == 1000  # each slice was published while connected
        client.close()
        assert messages.qsize() == 0


def test_two_channels_keep_their_own_order(server: LeapEdgeServer, make_client: MakeClient) -> None:
    server.create_channel("a", sequenced=True)
    server.create_channel("b", sequenced=True)
    client = make_client(server)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("a", timeout=5)
    client.subscribe("b", timeout=5)
    done = threading.Event()

    def publish(channel: str) -> None:
        for i in range(0, 1000, 100):
            server.publish_many(channel, "n", range(i, i + 100))

    threads = [threading.Thread(target=publish, args=(c,)) for c in "ab"]
    for thread in threads:
        thread.start()
    got: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(2000):
        event = messages.get(timeout=10)
        assert event.channel_id is not None and event.seq is not None
        got[event.channel_id].append(event.seq)
    done.set()
    for thread in threads:
        thread.join(10)
    assert got == {"a": list(range(1, 1001)), "b": list(range(1, 1001))}
