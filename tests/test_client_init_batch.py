"""INIT sets a connection up in wire order: what follows INIT in the same read (one TCP
segment) finds the subscriptions INIT gave, exactly as when it arrives in a later read.

The server sends INIT, then a channel event (and a MESSAGE marking the end) either in
one ``sendall`` or in separate ones; the outcome must not depend on how TCP cut the
stream. What the client sent in between is read up to the SUBSCRIBE of a later
``subscribe()`` call (frames go out in order, so any spurious re-subscription of the
connection's set-up comes before it).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN
from hostile import HostileServer, Peer, init_frame

from leap_sync import AvailableEvent, Backoff, LeapClient, UnavailableEvent
from leap_sync.wire.wsframes import OP_TEXT, unmasked_frame


def _frame(obj: Any) -> bytes:
    return unmasked_frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode())


def _channel(channel_id: str) -> dict[str, Any]:
    return {"id": channel_id, "project_id": PROJECT, "state": {}, "type": "private"}


def _available(channel_id: str) -> dict[str, Any]:
    return {"op": 0, "d": {"c": channel_id, "e": "AVAILABLE", "d": {"channel": _channel(channel_id)}}}


def _unavailable(channel_id: str, graceful: bool) -> dict[str, Any]:
    return {"op": 0, "d": {"c": channel_id, "e": "UNAVAILABLE", "d": {"graceful": graceful, "error_code": "GONE"}}}


DONE = {"op": 0, "d": {"c": "marker", "e": "MESSAGE", "d": {"e": "done", "d": None}}}


def _run(channels: list[str], push: dict[str, Any], together: bool) -> tuple[list[Any], tuple[str, ...], list[str]]:
    """(frames the client sent before SUBSCRIBE "later", its subscriptions once the
    batch was handled, the channel events delivered before "later"'s answer)."""
    before: list[Any] = []
    served = threading.Event()

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        frames = [_frame(init_frame("c1", channels)), _frame(push), _frame(DONE)]
        if together:
            peer.send(b"".join(frames))
        else:
            for data in frames:
                peer.send(data)
        while True:
            sent = peer.read_json(timeout=10)
            if sent.get("op") == 0 and sent["d"] == {"c": "later", "e": "SUBSCRIBE", "d": None}:
                break
            if sent.get("op") != 3:  # heartbeats are not the point
                before.append(sent)
        peer.send(_frame(_available("later")))
        served.set()
        peer.wait(10)

    with HostileServer([script]) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=Backoff(base=0.05, cap=0.1))
        messages = client.message_event_channel()
        events = client.channel_event_channel()
        try:
            client.connect(wait=True, timeout=10)
            assert messages.get(timeout=10).event_name == "done"  # the batch was handled
            subscriptions = client.subscriptions
            client.subscribe("later", timeout=10)
            assert served.wait(10)
        finally:
            client.close()
        assert server.errors == []
    delivered = []
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, (AvailableEvent, UnavailableEvent)):
            delivered.append(f"{type(event).__name__}:{event.channel_id}")
    return before, subscriptions, delivered


@pytest.mark.parametrize("together", [True, False], ids=["one read", "separate sends"])
def test_an_available_push_behind_init_is_kept_and_not_resubscribed(together: bool) -> None:
    before, subscriptions, delivered = _run([], _available("zz"), together)
    assert before == []  # no SUBSCRIBE "zz": the server said it is available
    assert subscriptions == ("zz",)
    assert delivered == ["AvailableEvent:zz"]


@pytest.mark.parametrize("graceful", [True, False])
@pytest.mark.parametrize("together", [True, False], ids=["one read", "separate sends"])
def test_an_unavailable_push_behind_init_takes_the_channel_init_listed(together: bool, graceful: bool) -> None:
    before, subscriptions, delivered = _run(["room"], _unavailable("room", graceful), together)
    assert before == []
    assert subscriptions == ()  # the server's last word on "room"
    assert delivered == ["UnavailableEvent:room"]


@pytest.mark.parametrize("together", [True, False], ids=["one read", "separate sends"])
def test_an_unavailable_push_behind_init_for_another_channel_leaves_inits(together: bool) -> None:
    before, subscriptions, delivered = _run(["room"], _unavailable("elsewhere", False), together)
    assert before == []
    assert subscriptions == ("room",)
    assert delivered == ["UnavailableEvent:elsewhere"]
