"""The client's heartbeat schedule (HeartbeatTracker) and the server's drift check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leap_sync.protocol.heartbeat import HeartbeatTracker, Pulse


def test_initial_state() -> None:
    tracker = HeartbeatTracker(30.0, now=100.0)
    assert tracker.interval == 30.0
    assert tracker.next_beat == 130.0
    assert tracker.last_received == 100.0
    assert tracker.latency is None
    assert tracker.beats_sent == 0
    assert tracker.unacked == 0
    assert repr(tracker) == "HeartbeatTracker(interval=30.0, next_beat=130.000, unacked=0, latency=None)"


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        HeartbeatTracker(interval, now=0.0)


def test_wait_until_due_then_beat() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    assert tracker.poll(0.0) is Pulse.WAIT
    assert tracker.poll(9.999) is Pulse.WAIT
    assert tracker.poll(10.0) is Pulse.BEAT
    assert tracker.poll(10.5) is Pulse.BEAT


def test_sent_schedules_on_the_fixed_grid() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.004)  # a little late: the next beat is still due at 20, not 20.004
    assert tracker.next_beat == 20.0
    assert tracker.beats_sent == 1
    assert tracker.unacked == 1
    assert tracker.poll(15.0) is Pulse.WAIT
    tracker.acked(15.0)
    tracker.sent(20.3)
    assert tracker.next_beat == 30.0
    assert tracker.beats_sent == 2


def test_sleeping_late_never_accumulates_drift() -> None:
    tracker = HeartbeatTracker(1.0, now=0.0)
    now = 0.0
    for k in range(1, 1001):
        now = tracker.next_beat + 0.01  # every wake-up is 10 ms late
        assert tracker.poll(now) is Pulse.BEAT
        tracker.sent(now)
        tracker.acked(now + 0.001)
        assert tracker.next_beat == pytest.approx(k + 1.0, abs=1e-9)
    assert tracker.beats_sent == 1000


def test_missed_grid_points_are_skipped_not_bunched() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(35.0)  # slept through the beats due at 10, 20 and 30
    assert tracker.next_beat == 40.0
    assert tracker.poll(35.0) is Pulse.WAIT
    assert tracker.poll(39.9) is Pulse.WAIT


@pytest.mark.parametrize(("start", "interval", "late"), [(0.0, 0.3, 2), (0.0, 0.7, 3), (1.0, 0.1, 9), (1.0, 0.3, 2)])
def test_sending_exactly_on_a_later_grid_point(start: float, interval: float, late: int) -> None:
    # Floating-point division puts these a hair below a whole number of intervals.
    tracker = HeartbeatTracker(interval, now=start)
    now = tracker.next_beat + late * interval
    tracker.sent(now)
    assert tracker.next_beat > now
    assert tracker.next_beat == pytest.approx(now + interval)
    assert tracker.poll(now) is Pulse.WAIT


@settings(max_examples=300, deadline=None)
@given(
    interval=st.floats(min_value=0.001, max_value=120.0),
    start=st.floats(min_value=0.0, max_value=1e7),
    late_beats=st.integers(min_value=0, max_value=1000),
    extra=st.sampled_from([0.0, 1e-9, 0.25, 0.5, 0.999]),
)
def test_after_a_beat_the_next_is_in_the_future_and_on_the_grid(
    interval: float, start: float, late_beats: int, extra: float
) -> None:
    tracker = HeartbeatTracker(interval, now=start)
    now = tracker.next_beat + late_beats * interval + extra * interval
    tracker.sent(now)
    assert tracker.next_beat > now
    assert tracker.poll(now) is Pulse.WAIT
    # At most one interval ahead (plus rounding), and on the grid start + k * interval.
    assert tracker.next_beat - now <= interval * (1 + 1e-6) + 1e-6
    k = (tracker.next_beat - start) / interval
    assert k == pytest.approx(round(k), abs=1e-6 * max(1.0, k))


def test_ack_measures_latency_of_the_oldest_unacked_beat() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.sent(20.0)
    assert tracker.unacked == 2
    tracker.acked(20.5)
    assert tracker.latency == pytest.approx(10.5)
    assert tracker.unacked == 1
    tracker.acked(20.75)
    assert tracker.latency == pytest.approx(0.75)
    assert tracker.unacked == 0
    assert tracker.last_received == 20.75


def test_ack_without_unacked_beat_keeps_latency() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.acked(3.0)
    assert tracker.latency is None
    assert tracker.last_received == 3.0
    tracker.sent(10.0)
    tracker.acked(10.25)
    tracker.acked(11.0)
    assert tracker.latency == 0.25
    assert tracker.unacked == 0


def test_received_updates_liveness_only() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.received(12.0)
    assert tracker.last_received == 12.0
    assert tracker.unacked == 1
    assert tracker.latency is None


# -- zombie rule ---------------------------------------------------------------------------


def test_unacked_beat_and_long_silence_is_a_zombie() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    # Next beat due at 20; nothing received since 0: 20 s > 15 s of silence.
    assert tracker.poll(20.0) is Pulse.ZOMBIE


def test_unacked_beat_under_traffic_is_not_a_zombie() -> None:
    # An ack stuck behind a busy stream: data keeps arriving, so the peer is alive.
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.received(19.0)
    assert tracker.poll(20.0) is Pulse.BEAT
    tracker.sent(20.0)
    tracker.received(29.0)
    assert tracker.poll(30.0) is Pulse.BEAT
    assert tracker.unacked == 2


def test_silence_without_unacked_beat_is_not_a_zombie() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.acked(10.1)
    assert tracker.poll(100.0) is Pulse.BEAT


def test_zombie_silence_threshold_is_strictly_more_than_one_and_a_half_intervals() -> None:
    assert HeartbeatTracker.ZOMBIE_SILENCE == 1.5
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.received(5.0)
    tracker.next_beat = 20.0
    assert tracker.poll(20.0) is Pulse.BEAT  # exactly 15 s of silence
    assert tracker.poll(20.001) is Pulse.ZOMBIE


def test_no_zombie_before_the_next_beat_is_due() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    tracker.sent(10.0)
    tracker.next_beat = 1000.0
    assert tracker.poll(999.0) is Pulse.WAIT


def test_first_beat_is_never_a_zombie() -> None:
    tracker = HeartbeatTracker(10.0, now=0.0)
    assert tracker.poll(1000.0) is Pulse.BEAT
