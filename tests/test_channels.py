"""EventChannel: the queue a client feeds and consumers drain."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from leap_sync.channels import OVERFLOW_POLICIES, EventChannel
from leap_sync.errors import ChannelClosed, ChannelOverflowError, LeapError

WAIT = 5.0  # deadline for cross-thread hand-offs; never reached when things work


def run_in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any], threading.Event]:
    """Run ``target()`` in a thread; its result or exception lands in the dict."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def runner() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=runner, name="test-channel-consumer", daemon=True)
    thread.start()
    return thread, outcome, done


def test_defaults() -> None:
    channel: EventChannel[int] = EventChannel()
    assert channel.maxsize == 0
    assert channel.overflow == "drop_oldest"
    assert channel.dropped == 0
    assert channel.closed is False
    assert channel.qsize() == 0
    assert len(channel) == 0
    assert repr(channel) == "<EventChannel open qsize=0 maxsize=0 dropped=0>"
    assert OVERFLOW_POLICIES == ("drop_oldest", "error")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        EventChannel(-1)
    with pytest.raises(ValueError, match="overflow must be one of"):
        EventChannel(10, "block")
    for bad in (2.5, "3", True, None):  # refused here, never at the first overflow
        with pytest.raises(TypeError, match="maxsize must be an int"):
            EventChannel(bad)  # type: ignore[arg-type]


def test_events_come_out_in_order() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1, 2, 3])
    channel._put_many((4,))
    channel._put_many(iter([5, 6]))
    assert channel.qsize() == 6
    assert [channel.get() for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    assert channel.qsize() == 0


def test_get_timeout_raises_queue_empty() -> None:
    channel: EventChannel[int] = EventChannel()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        channel.get(timeout=0.01)
    assert time.monotonic() - start >= 0.01


def test_get_nowait() -> None:
    channel: EventChannel[int] = EventChannel()
    with pytest.raises(queue.Empty):
        channel.get_nowait()
    channel._put_many([7])
    assert channel.get_nowait() == 7
    with pytest.raises(queue.Empty):
        channel.get(timeout=0)
    # as queue.Queue: a negative timeout is a ValueError; block=False ignores the timeout
    with pytest.raises(ValueError, match="non-negative"):
        channel.get(timeout=-1)
    with pytest.raises(queue.Empty):
        channel.get(False, -1)


def test_the_consumer_api_is_queue_queues() -> None:
    import inspect

    channel: EventChannel[int] = EventChannel()
    reference: queue.Queue[int] = queue.Queue()
    for name in ("get", "get_nowait", "qsize", "empty"):
        ours = inspect.signature(getattr(channel, name)).parameters
        theirs = inspect.signature(getattr(reference, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == [
            (p.name, p.kind, p.default) for p in theirs.values()
        ]
    assert channel.empty() and reference.empty()
    channel._put_many([1, 2])
    reference.put(1)
    reference.put(2)
    assert (channel.qsize(), channel.empty()) == (reference.qsize(), reference.empty()) == (2, False)
    assert channel.get(True, 1.0) == reference.get(True, 1.0) == 1
    assert channel.get(False) == reference.get(False) == 2
    with pytest.raises(queue.Empty):
        channel.get(block=False)
    with pytest.raises(queue.Empty):
        channel.get(block=True, timeout=0.01)


def test_closed_channel_drains_then_raises() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1, 2])
    channel.close()
    assert channel.closed is True
    assert repr(channel) == "<EventChannel closed qsize=2 maxsize=0 dropped=0>"
    assert channel.get() == 1
    assert channel.get(timeout=0.01) == 2
    with pytest.raises(ChannelClosed):
        channel.get()
    with pytest.raises(ChannelClosed):
        channel.get(timeout=0.01)
    with pytest.raises(ChannelClosed):
        channel.get_nowait()


def test_closed_channel_takes_no_more_events() -> None:
    channel: EventChannel[int] = EventChannel()
    channel.close()
    channel._put_many([1])
    assert channel.qsize() == 0


def test_finish_with_error_raises_it_after_draining() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1])
    channel._finish(None)
    channel._finish(ChannelClosed("second finish is ignored"))
    assert channel.get() == 1
    with pytest.raises(ChannelClosed, match="event channel is closed"):
        channel.get()


def test_iteration_ends_on_close() -> None:
    channel: EventChannel[int] = EventChannel()
    channel._put_many([1, 2, 3])
    channel._finish(None)
    assert list(channel) == [1, 2, 3]
    assert list(channel) == []


def test_close_wakes_a_blocked_consumer() -> None:
    channel: EventChannel[int] = EventChannel()
    _, outcome, done = run_in_thread(lambda: list(channel))
    channel._put_many([1, 2])
    channel.close()
    assert done.wait(WAIT)
    assert outcome == {"value": [1, 2]}


def test_blocked_get_receives_an_event_from_another_thread() -> None:
    channel: EventChannel[str] = EventChannel()
    waiting = threading.Event()

    def consume() -> str:
        waiting.set()
        return channel.get(timeout=WAIT)

    _, outcome, done = run_in_thread(consume)
    assert waiting.wait(WAIT)
    channel._put_many(["event"])
    assert done.wait(WAIT)
    assert outcome == {"value": "event"}


def test_many_consumers_each_event_once() -> None:
    channel: EventChannel[int] = EventChannel()
    results: list[list[int]] = []
    threads = []
    for _ in range(4):
        got: list[int] = []
        results.append(got)
        threads.append(run_in_thread(lambda got=got: got.extend(channel)))
    for start in range(0, 10_000, 100):
        channel._put_many(list(range(start, start + 100)))
    channel.close()
    for _, outcome, done in threads:
        assert done.wait(WAIT)
        assert outcome == {"value": None}
    assert sorted(x for got in results for x in got) == list(range(10_000))
    for got in results:
        assert got == sorted(got)


def test_producer_and_consumer_threads_keep_order() -> None:
    channel: EventChannel[int] = EventChannel()
    _, outcome, done = run_in_thread(lambda: list(channel))
    for i in range(0, 5000, 50):
        channel._put_many(range(i, i + 50))
    channel._finish(None)
    assert done.wait(WAIT)
    assert outcome == {"value": list(range(5000))}


# -- overflow ------------------------------------------------------------------------------


def test_drop_oldest_counts_dropped() -> None:
    channel: EventChannel[int] = EventChannel(3)
    channel._put_many([1, 2])
    channel._put_many([3, 4])
    assert channel.dropped == 1
    channel._put_many([5, 6, 7, 8, 9])
    assert channel.dropped == 6
    assert channel.qsize() == 3
    assert channel.closed is False
    assert [channel.get_nowait() for _ in range(3)] == [7, 8, 9]
    assert repr(channel) == "<EventChannel open qsize=0 maxsize=3 dropped=6>"


def test_drop_oldest_within_bounds_drops_nothing() -> None:
    channel: EventChannel[int] = EventChannel(3, "drop_oldest")
    channel._put_many([1, 2, 3])
    assert channel.dropped == 0
    assert channel.get() == 1
    channel._put_many([4])
    assert channel.dropped == 0
    assert list(channel._items) == [2, 3, 4]


def test_error_policy_keeps_what_fits_then_raises() -> None:
    channel: EventChannel[int] = EventChannel(3, "error")
    channel._put_many([1, 2])
    channel._put_many([3, 4, 5])
    assert channel.closed is True
    assert channel.dropped == 0
    assert [channel.get(), channel.get(), channel.get()] == [1, 2, 3]
    with pytest.raises(ChannelOverflowError, match="maxsize of 3"):
        channel.get()
    with pytest.raises(ChannelOverflowError):
        channel.get(timeout=0.01)


def test_error_policy_overflow_is_a_channel_closed_and_a_leap_error() -> None:
    assert issubclass(ChannelOverflowError, ChannelClosed)
    assert issubclass(ChannelOverflowError, LeapError)


def test_error_policy_iteration_raises_after_the_events() -> None:
    channel: EventChannel[int] = EventChannel(2, "error")
    channel._put_many([1, 2, 3])
    got: list[int] = []
    with pytest.raises(ChannelOverflowError):
        for event in channel:
            got.append(event)
    assert got == [1, 2]


def test_error_policy_takes_nothing_after_overflow() -> None:
    channel: EventChannel[int] = EventChannel(2, "error")
    channel._put_many([1, 2, 3])
    channel.get()
    channel._put_many([4])
    assert list(channel._items) == [2]


def test_close_after_overflow_keeps_the_overflow_error() -> None:
    channel: EventChannel[int] = EventChannel(1, "error")
    channel._put_many([1, 2])
    channel.close()
    assert channel.get() == 1
    with pytest.raises(ChannelOverflowError):
        channel.get()


def test_error_policy_within_bounds_stays_open() -> None:
    channel: EventChannel[int] = EventChannel(3, "error")
    channel._put_many([1, 2, 3])
    assert channel.closed is False
    assert channel.get() == 1
    channel._put_many([4])
    assert channel.closed is False
    assert [channel.get(), channel.get(), channel.get()] == [2, 3, 4]


def test_overflow_wakes_a_blocked_consumer_with_the_error() -> None:
    channel: EventChannel[int] = EventChannel(1, "error")
    _, outcome, done = run_in_thread(lambda: [channel.get(timeout=WAIT), channel.get(timeout=WAIT)])
    channel._put_many([1, 2])
    assert done.wait(WAIT)
    assert isinstance(outcome.get("error"), ChannelOverflowError)


# -- close ---------------------------------------------------------------------------------


def test_close_detaches_through_the_callback_once() -> None:
    calls: list[EventChannel[int]] = []
    channel: EventChannel[int] = EventChannel(on_close=calls.append)
    channel.close()
    channel.close()
    assert calls == [channel]
    assert channel.closed is True


def test_finish_does_not_call_the_callback() -> None:
    calls: list[EventChannel[int]] = []
    channel: EventChannel[int] = EventChannel(on_close=calls.append)
    channel._finish(None)
    assert calls == []
    channel.close()
    assert calls == [channel]


def test_close_from_another_thread_while_a_consumer_waits() -> None:
    channel: EventChannel[int] = EventChannel()
    waiting = threading.Event()

    def consume() -> int:
        waiting.set()
        return channel.get(timeout=WAIT)

    _, outcome, done = run_in_thread(consume)
    assert waiting.wait(WAIT)
    closer = threading.Thread(target=channel.close, name="test-channel-closer")
    closer.start()
    closer.join(WAIT)
    assert done.wait(WAIT)
    assert isinstance(outcome.get("error"), ChannelClosed)
    assert not isinstance(outcome.get("error"), ChannelOverflowError)
