"""Timeouts callers give: infinite or huge ones wait (they never raise OverflowError),
NaN and non-numbers are refused, and options are bounded at construction."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator

import pytest
from clientkit import PROJECT, TOKEN
from hostile import HostileServer, Peer, leap_session

from leap_sync import EventChannel, LeapClient, LeapTimeoutError
from leap_sync.connection.timeouts import MAX_WAIT, check_timeout, poll_ms
from leap_sync.elstat import ElstatClient
from leap_sync.testing import LeapEdgeServer


@pytest.fixture
def server() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as srv:
        srv.add_token(TOKEN, project_id=PROJECT)
        srv.create_channel("room", project_id=PROJECT)
        yield srv


def test_check_timeout() -> None:
    assert check_timeout(None) is None
    assert check_timeout(1.5) == 1.5
    assert check_timeout(-3) == 0.0
    assert check_timeout(math.inf) is None
    assert check_timeout(MAX_WAIT * 2) is None
    assert check_timeout(10**400) is None  # an int no float holds: forever, never OverflowError
    assert check_timeout(-(10**400)) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        check_timeout(math.nan)
    for bad in ("1", True, [1]):
        with pytest.raises(TypeError):
            check_timeout(bad)
    assert poll_ms(None) is None and poll_ms(1e12) == 2**31 - 1 and poll_ms(0.0011) == 2


@pytest.mark.parametrize("huge", [math.inf, 1e12, 1e300, 10**400], ids=["inf", "1e12", "1e300", "int-10**400"])
def test_huge_timeouts_wait_instead_of_overflowing(server: LeapEdgeServer, huge: float) -> None:
    client = LeapClient(PROJECT, TOKEN, url=server.url)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=huge)
    assert client.wait_connected(timeout=huge).cid
    assert client.subscribe("room", timeout=huge).id == "room"
    server.publish("room", "n", 1)
    assert messages.get(timeout=huge).data == 1
    waiting: list[object] = []
    getter = threading.Thread(target=lambda: waiting.append(messages.get(timeout=huge)))
    getter.start()  # blocks (as good as forever) until the next message
    server.publish("room", "n", 2)
    getter.join(5)
    assert [m.data for m in waiting] == [2]  # type: ignore[attr-defined]
    client.close()


def test_nan_and_wrong_types_are_refused(server: LeapEdgeServer) -> None:
    client = LeapClient(PROJECT, TOKEN, url=server.url)
    client.connect(wait=True, timeout=10)
    with pytest.raises(ValueError, match="NaN"):
        client.subscribe("room", timeout=math.nan)
    with pytest.raises(TypeError):
        client.wait_connected(timeout="5")  # type: ignore[arg-type]
    channel: EventChannel[int] = EventChannel()
    with pytest.raises(ValueError):
        channel.get(timeout=math.nan)
    with pytest.raises(queue.Empty):
        channel.get(False, math.nan)  # block=False ignores the timeout, as queue.Queue does
    client.close()


def test_a_negative_subscribe_timeout_does_not_wait() -> None:
    def never_answers(peer: Peer) -> None:
        leap_session(peer)
        peer.drain(10)

    with HostileServer(never_answers) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        client.connect(wait=True, timeout=10)
        started = time.monotonic()
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=-1)
        assert time.monotonic() - started < 1.0
        client.close()


@pytest.mark.parametrize(
    "options",
    [
        {"connect_timeout": 1e7},
        {"close_timeout": 1e10},
        {"send_timeout": math.inf},
        {"connect_timeout": math.nan},
        {"close_timeout": 0},
    ],
)
def test_options_beyond_a_day_are_refused_at_construction(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="seconds"):
        LeapClient(PROJECT, TOKEN, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        ElstatClient("https://status.example.com", **options)


def test_backoff_and_ping_bounds() -> None:
    from leap_sync import Backoff

    for bad in ({"base": math.nan}, {"cap": 1e12}, {"reset_after": -1}):
        with pytest.raises(ValueError):
            Backoff(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ElstatClient("https://status.example.com", ping_interval=math.inf)


def test_wait_connected_times_out_on_time() -> None:
    with HostileServer(lambda peer: (peer.upgrade(), peer.wait(10))) as server:  # no Hello
        client = LeapClient(PROJECT, TOKEN, url=server.url, connect_timeout=30)
        client.connect()
        started = time.monotonic()
        with pytest.raises(LeapTimeoutError):
            client.wait_connected(timeout=0.2)
        assert time.monotonic() - started < 1.0
        client.close()
