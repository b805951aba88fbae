"""The server's heartbeat rule (``leap_sync.protocol.server_heartbeat.DriftMonitor``),
without sockets: the Hello grid, missed beats, extra beats (tolerated by default,
refused in strict mode), and nothing enforced before Identify."""

from __future__ import annotations

import math

import pytest

from leap_sync.protocol.heartbeat import HeartbeatTracker, Pulse
from leap_sync.protocol.server_heartbeat import DriftMonitor


def armed(interval: float, tolerance: float, *, start: float = 0.0, strict: bool = False) -> DriftMonitor:
    monitor = DriftMonitor(interval, tolerance, start, strict=strict)
    monitor.identified(start)
    return monitor


def test_nothing_is_due_before_identify() -> None:
    monitor = DriftMonitor(10.0, 1.0, start=0.0)
    assert monitor.deadline == math.inf
    assert monitor.beat(3.0) is True  # judged by nobody
    monitor.identified(4.0)
    assert monitor.deadline == 11.0


def test_identify_inside_a_window_enforces_from_the_next_one() -> None:
    monitor = DriftMonitor(10.0, 1.0, start=0.0)
    monitor.identified(9.5)
    assert monitor.deadline == 21.0
    monitor = DriftMonitor(10.0, 1.0, start=0.0)
    monitor.identified(9.0)  # the instant the window opens: it is still enforced... from 9.0 on
    assert monitor.deadline == 11.0


def test_identified_twice_changes_nothing() -> None:
    monitor = armed(10.0, 1.0)
    monitor.identified(35.0)
    assert monitor.deadline == 11.0


def test_on_schedule() -> None:
    monitor = armed(10.0, 1.0, start=100.0)
    assert monitor.deadline == 111.0
    for k in range(1, 6):
        assert monitor.beat(100.0 + 10.0 * k + 0.5) is True
        assert monitor.last_drift == pytest.approx(0.5)
        assert monitor.deadline == 100.0 + 10.0 * (k + 1) + 1.0
    assert monitor.beats == 5
    assert monitor.last_beat == 150.5


@pytest.mark.parametrize("strict", [False, True])
def test_the_window_is_inclusive(strict: bool) -> None:
    assert armed(10.0, 1.0, strict=strict).beat(11.0) is True
    assert armed(10.0, 1.0, strict=strict).beat(9.0) is True
    assert armed(10.0, 1.0, strict=strict).beat(8.99) is (not strict)


def test_tolerant_extra_beats_are_harmless_and_excuse_nothing() -> None:
    monitor = armed(10.0, 1.0)
    assert monitor.beat(0.1) is True  # right after INIT
    assert monitor.beat(5.0) is True  # between grid points
    assert monitor.deadline == 11.0
    assert monitor.beat(10.0) is True
    assert monitor.beat(10.3) is True  # a second beat in the same window
    assert monitor.beat(15.0) is True  # the JS client's optimistic beat, 5 s late
    assert monitor.deadline == 21.0
    assert monitor.beat(20.0) is True
    assert monitor.deadline == 31.0


def test_a_late_beat_inside_the_tolerance_keeps_the_grid() -> None:
    monitor = armed(10.0, 1.0)
    assert monitor.beat(10.9) is True
    assert monitor.deadline == 21.0  # not 10.9 + 10 + 1


def test_strict_early_late_and_double_beats_are_out_of_sync() -> None:
    monitor = armed(10.0, 1.0, strict=True)
    assert monitor.beat(5.0) is False
    assert monitor.last_drift == -5.0
    monitor = armed(10.0, 1.0, strict=True)
    assert monitor.beat(12.5) is False
    assert monitor.last_drift == 2.5
    monitor = armed(10.0, 1.0, strict=True)
    assert monitor.beat(10.0) is True
    assert monitor.beat(10.5) is False  # judged against beat 2, due at 20
    assert monitor.last_drift == -9.5


@pytest.mark.parametrize("strict", [False, True])
def test_accumulating_sleep_drift_is_caught(strict: bool) -> None:
    # A client sleeping `interval` in a loop with 30 ms of overhead: its 7th beat
    # lands 210 ms late, past the 200 ms tolerance.
    monitor = armed(1.0, 0.2, strict=strict)
    now = 0.0
    for _ in range(6):
        now += 1.03
        assert now <= monitor.deadline
        assert monitor.beat(now) is True
    now += 1.03
    if strict:
        assert monitor.beat(now) is False
    else:
        assert now > monitor.deadline == pytest.approx(7.2)  # the server closes before


def test_a_tolerance_beyond_half_the_interval_accepts_any_beat_within_it() -> None:
    monitor = armed(0.1, 10.0)
    assert monitor.beat(0.05) is True
    assert monitor.deadline > 10.0


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        DriftMonitor(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        DriftMonitor(1.0, 0.0, 0.0)


@pytest.mark.parametrize("strict", [False, True])
def test_the_clients_tracker_schedule_satisfies_the_monitor(strict: bool) -> None:
    tracker = HeartbeatTracker(1.0, now=0.0)
    monitor = armed(1.0, 0.05, strict=strict)
    for _ in range(500):
        now = tracker.next_beat + 0.003  # each wake-up a little late
        assert tracker.poll(now) is Pulse.BEAT
        assert now <= monitor.deadline
        tracker.sent(now)
        tracker.acked(now)
        assert monitor.beat(now) is True
