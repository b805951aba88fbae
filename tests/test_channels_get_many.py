"""EventChannel.get_many: several events at once, waiting like get() for the first."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from leap_sync.channels import EventChannel
from leap_sync.errors import ChannelClosed, ChannelOverflowError

WAIT = 5.0  # deadline for cross-thread hand-offs; never reached when things work


def test_takes_what_is_there_up_to_max_in_order() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many(list(range(10)))
    assert channel.get_many(4) == [0, 1, 2, 3]
    assert channel.get_many(100) == [4, 5, 6, 7, 8, 9]
    assert channel.qsize() == 0


def test_max_one_is_get_in_a_list() -> None:
    channel: EventChannel[str] = EventChannel()
    channel._put_many(["a", "b"])
    assert channel.get_many(1) == ["a"]
    assert channel.get() == "b"


def test_empty_channel_times_out_like_get() -> None:
    channel: EventChannel[int] = EventChannel()
    with pytest.raises(queue.Empty):
        channel.get_many(10, timeout=0.01)
    with pytest.raises(queue.Empty):
        channel.get_many(10, block=False)
    with pytest.raises(ValueError, match="timeout"):
        channel.get_many(10, timeout=-1)


def test_waits_for_the_first_event_then_takes_the_batch() -> None:
    channel: EventChannel[int] = EventChannel()
    started = threading.Event()
    outcome: dict[str, Any] = {}

    def consume() -> None:
        started.set()
        outcome["value"] = channel.get_many(10, timeout=WAIT)

    thread = threading.Thread(target=consume, name="test-get-many", daemon=True)
    thread.start()
    assert started.wait(WAIT)
    channel._put_many([1, 2, 3])  # one batch: the waiter wakes with all of it or a prefix
    thread.join(WAIT)
    assert not thread.is_alive()
    got = outcome["value"]
    assert got == [1, 2, 3][: len(got)] and got
    assert got + [channel.get_nowait() for _ in range(3 - len(got))] == [1, 2, 3]


def test_closed_and_drained_raises_channel_closed_after_the_events() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1, 2])
    channel.close()
    assert channel.get_many(5) == [1, 2]
    with pytest.raises(ChannelClosed):
        channel.get_many(5)
    with pytest.raises(ChannelClosed):
        channel.get_many(5, block=False)


def test_overflow_error_is_raised_after_the_kept_events() -> None:
    channel: EventChannel[int] = EventChannel(3, "error")
    channel._put_many([1, 2, 3, 4])
    assert channel.get_many(10) == [1, 2, 3]
    with pytest.raises(ChannelOverflowError):
        channel.get_many(10)


def test_a_consumer_blocked_in_get_many_is_woken_by_close() -> None:
    channel: EventChannel[int] = EventChannel()
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            outcome["value"] = channel.get_many(10)
        except ChannelClosed as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=consume, name="test-get-many", daemon=True)
    thread.start()
    channel.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert type(outcome.get("error")) is ChannelClosed


@pytest.mark.parametrize("bad", [0, -1])
def test_max_must_be_positive(bad: int) -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1])
    with pytest.raises(ValueError, match="max must be at least 1"):
        channel.get_many(bad)
    assert channel.get_nowait() == 1  # nothing was taken


@pytest.mark.parametrize("bad", [2.0, "3", True, None])
def test_max_must_be_an_int(bad: Any) -> None:
    channel: EventChannel[int] = EventChannel()
    with pytest.raises(TypeError, match="max must be an int"):
        channel.get_many(bad)


def test_several_consumers_take_every_event_once_in_order() -> None:
    channel: EventChannel[int] = EventChannel()
    total = 20_000
    taken: list[list[int]] = [[], [], []]
    errors: list[BaseException] = []

    def consume(out: list[int]) -> None:
        try:
            while True:
                out.extend(channel.get_many(64, timeout=WAIT))
        except ChannelClosed:
            pass
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=consume, args=(out,), name=f"test-get-many-{i}", daemon=True)
        for i, out in enumerate(taken)
    ]
    for thread in threads:
        thread.start()
    for start in range(0, total, 100):
        channel._put_many(list(range(start, start + 100)))
    channel.close()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for out in taken:
        assert out == sorted(out)  # each consumer sees events in order
    assert sorted(event for out in taken for event in out) == list(range(total))


def test_queue_api_is_unchanged() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1, 2, 3])
    assert channel.get() == 1
    assert channel.get_nowait() == 2
    assert channel.get(timeout=0.0) == 3
    assert channel.empty()
