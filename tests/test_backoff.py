"""Reconnect backoff: full jitter, cap, reset and the attempt limit."""

from __future__ import annotations

import pytest

from leap_sync.backoff import Backoff


class RecordingUniform:
    """A ``uniform`` that records its bounds and returns the upper one."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def __call__(self, low: float, high: float) -> float:
        self.calls.append((low, high))
        return high


def test_defaults() -> None:
    backoff = Backoff()
    assert backoff.base == 0.5
    assert backoff.cap == 30.0
    assert backoff.reset_after == 30.0
    assert backoff.max_attempts is None
    assert backoff.failures == 0
    assert backoff.exhausted is False
    assert (
        repr(backoff)
        == "Backoff(base=0.5, cap=30.0, reset_after=30.0, max_attempts=None, failures=0, failed_attempts=0)"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1.0}, {"cap": -0.1}, {"reset_after": -5.0}, {"max_attempts": 0}, {"max_attempts": -3}],
)
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": "1"},
        {"cap": None},
        {"reset_after": True},
        {"max_attempts": 2.5},
        {"max_attempts": "3"},
        {"uniform": 5},
    ],
)
def test_arguments_of_the_wrong_type(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_full_jitter_bounds_double_up_to_the_cap() -> None:
    uniform = RecordingUniform()
    backoff = Backoff(0.5, 10.0, uniform=uniform)
    delays = [backoff.next_delay() for _ in range(8)]
    assert uniform.calls == [
        (0.0, 0.5),
        (0.0, 1.0),
        (0.0, 2.0),
        (0.0, 4.0),
        (0.0, 8.0),
        (0.0, 10.0),
        (0.0, 10.0),
        (0.0, 10.0),
    ]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.failures == 8


def test_delay_is_what_uniform_returns() -> None:
    backoff = Backoff(1.0, 100.0, uniform=lambda low, high: high / 4)
    assert [backoff.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]


def test_delay_is_a_float() -> None:
    backoff = Backoff(1.0, 8.0, uniform=lambda low, high: int(high))
    delay = backoff.next_delay()
    assert delay == 1.0
    assert type(delay) is float


def test_many_failures_do_not_overflow() -> None:
    uniform = RecordingUniform()
    backoff = Backoff(0.5, 30.0, uniform=uniform)
    for _ in range(5000):
        backoff.next_delay()
    assert uniform.calls[-1] == (0.0, 30.0)
    assert backoff.failures == 5000


def test_real_randomness_stays_within_bounds() -> None:
    backoff = Backoff(0.1, 1.0)
    for n in range(200):
        ceiling = min(1.0, 0.1 * 2**n)
        assert 0.0 <= backoff.next_delay() <= ceiling


def test_zero_base_means_immediate_retries() -> None:
    uniform = RecordingUniform()
    backoff = Backoff(0.0, 30.0, uniform=uniform)
    assert [backoff.next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert uniform.calls == [(0.0, 0.0)] * 3


def test_reset_starts_over() -> None:
    uniform = RecordingUniform()
    backoff = Backoff(1.0, 60.0, uniform=uniform)
    backoff.next_delay()
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0
    assert uniform.calls[-1] == (0.0, 1.0)


def test_unlimited_attempts_are_never_exhausted() -> None:
    backoff = Backoff(uniform=lambda low, high: 0.0)
    for _ in range(1000):
        backoff.next_delay()
        backoff.attempt_failed()
    assert backoff.exhausted is False


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_exhausted_after_max_attempts_failed_reconnects(max_attempts: int) -> None:
    # Losing the connection is not an attempt; each failed reconnect attempt counts one.
    # With max_attempts=N the client makes N attempts, then is exhausted.
    backoff = Backoff(max_attempts=max_attempts, uniform=lambda low, high: 0.0)
    backoff.next_delay()  # the connection was lost
    for _attempt in range(max_attempts):
        assert backoff.exhausted is False  # the client may try again
        backoff.next_delay()
        backoff.attempt_failed()  # ...and that attempt failed
    assert backoff.failed_attempts == max_attempts
    assert backoff.exhausted is True


def test_delays_alone_never_exhaust() -> None:
    # Connections that connect and drop at once grow the delay, not the attempt count.
    backoff = Backoff(max_attempts=1, uniform=lambda low, high: high)
    for _ in range(10):
        backoff.next_delay()
        backoff.attempt_succeeded()
    assert backoff.exhausted is False
    assert backoff.failures == 10


def test_an_attempt_that_connects_clears_exhaustion_but_not_the_delay() -> None:
    backoff = Backoff(base=1.0, cap=100.0, max_attempts=2, uniform=lambda low, high: high)
    for _ in range(2):
        backoff.next_delay()
        backoff.attempt_failed()
    assert backoff.exhausted is True
    backoff.attempt_succeeded()
    assert backoff.exhausted is False
    assert backoff.next_delay() == 4.0  # the delay keeps growing until a healthy connection


def test_reset_clears_exhaustion() -> None:
    backoff = Backoff(max_attempts=1, uniform=lambda low, high: 0.0)
    backoff.next_delay()
    backoff.attempt_failed()
    assert backoff.exhausted is True
    backoff.reset()
    assert backoff.exhausted is False
    assert backoff.failures == 0


def test_for_client_copies_the_policy_with_counts_at_zero() -> None:
    def uniform(low: float, high: float) -> float:
        return high

    policy = Backoff(0.5, 4.0, reset_after=7.0, max_attempts=3, uniform=uniform)
    policy.next_delay()
    policy.attempt_failed()
    mine = policy.for_client()
    assert (mine.base, mine.cap, mine.reset_after, mine.max_attempts) == (0.5, 4.0, 7.0, 3)
    assert (mine.failures, mine.failed_attempts) == (0, 0)
    assert mine.next_delay() == 0.5  # the same random source
    assert (policy.failures, policy.failed_attempts) == (1, 1)  # untouched by the copy


def test_one_backoff_shared_by_two_clients_counts_for_each() -> None:
    """Each of two clients given one Backoff(max_attempts=4) makes 4 reconnect
    attempts of its own before it gives up (sharing the count, they gave up after 2
    and 3)."""
    from clientkit import PROJECT, TOKEN, StateRecorder

    from leap_sync import ConnectionState, LeapClient
    from leap_sync.testing import LeapEdgeServer

    shared = Backoff(base=0.01, cap=0.01, max_attempts=4, uniform=lambda low, high: high)
    recorders = [StateRecorder(), StateRecorder()]
    clients: list[LeapClient] = []
    server = LeapEdgeServer().start()
    try:
        server.add_token(TOKEN)
        for recorder in recorders:
            client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=shared)
            clients.append(client)
            client.add_state_update_listener(recorder)
            client.connect(wait=True, timeout=10)
    finally:
        server.close()
    try:
        for recorder in recorders:
            infos = recorder.wait_for(
                lambda infos: not infos[-1].will_reconnect and infos[-1].connection_state.value == "errored"
            )
            assert "gave up after 4" in str(infos[-1].error)
            assert [i.connection_state for i in infos].count(ConnectionState.CONNECTING) == 5  # first + 4 retries
        assert (shared.failures, shared.failed_attempts) == (0, 0)
    finally:
        for client in clients:
            client.close()
