"""No blocking wait under a lock the awaited thread needs; every timeout is the caller's.

Issue 16, kind 6. Each test is one input that failed before the fix: a ``connect()``
retried from a listener or a watchdog waited ``close_timeout`` under the client's lock;
``connect(timeout=...)`` was bounded by ``connect_timeout`` instead; ``close()`` during
the Hello wait ran a close handshake on a connection that never reached CONNECTED; and
``close()`` interrupting a DNS lookup returned while the callbacks thread still ran.

Durations are bounded only as deadlines (a call must return before one, far from what
the old code took), never as a measure of speed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff, in_thread
from hostile import HostileServer, Peer, leap_session

from leap_sync import (
    ConnectionState,
    LeapClient,
    LeapClosedError,
    LeapConnectionError,
    LeapError,
    LeapTimeoutError,
    StateInfo,
)
from leap_sync.elstat import ElstatClient
from leap_sync.wire.wsframes import OP_CLOSE

ERRORED = ConnectionState.ERRORED
CLOSED = ConnectionState.CLOSED
RETRIES = 30
CLOSE_TIMEOUT = 20.0  # what the old code waited per unlucky retry: far above every deadline below
DEADLINE = 5.0  # generous, for a loaded machine; still a quarter of CLOSE_TIMEOUT


@pytest.fixture
def refused_url() -> str:
    """A loopback port nobody listens on: every TCP connect is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


def within(deadline: float, call: Callable[[], Any]) -> Any:
    """Run ``call`` on a helper thread; fail unless it returns before ``deadline`` s.
    Returns its result, or the exception it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # the caller decides what was expected
            outcome.append(exc)

    helper = threading.Thread(target=run, daemon=True)
    helper.start()
    helper.join(deadline)
    assert not helper.is_alive(), f"{call} did not return within {deadline} s"
    return outcome[0]


def hammer_responsiveness(client: LeapClient, done: threading.Event) -> int:
    """While ``done`` is not set: ``subscriptions`` and ``subscribe()`` must each
    return before the deadline (never behind a connect() holding the lock)."""
    rounds = 0
    while not done.is_set():
        assert within(DEADLINE, lambda: client.subscriptions) == ()
        error = within(DEADLINE, lambda: client.subscribe("room", timeout=0.2))
        assert isinstance(error, (LeapConnectionError, LeapTimeoutError)), error
        rounds += 1
    return rounds


def test_connect_retried_from_a_listener_after_a_refused_attempt_never_waits_close_timeout(refused_url: str) -> None:
    client = LeapClient(PROJECT, TOKEN, url=refused_url, close_timeout=CLOSE_TIMEOUT, backoff=fast_backoff())
    durations: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def retry(info: StateInfo) -> None:
        if info.connection_state is not ERRORED or info.will_reconnect or done.is_set():
            return
        if len(durations) == RETRIES:
            done.set()
            return
        started = time.monotonic()
        try:
            client.connect()
        except LeapError as exc:
            errors.append(exc)
        durations.append(time.monotonic() - started)

    client.add_state_update_listener(retry)
    with pytest.raises(LeapConnectionError):
        client.connect()
    rounds = hammer_responsiveness(client, done)
    assert done.wait(RETRIES * DEADLINE)
    assert len(durations) == RETRIES
    assert max(durations) < DEADLINE  # never the close_timeout join of the old code
    assert all(type(e) is LeapConnectionError and e.phase == "tcp" for e in errors), errors  # type: ignore[attr-defined]
    assert len(errors) == RETRIES
    assert rounds >= 1
    within(DEADLINE, client.close)
    assert client.state.connection_state is CLOSED


def test_connect_retried_by_a_watchdog_after_a_refused_attempt_never_waits_close_timeout() -> None:
    # Each round: the application's connect() is refused (503); a watchdog thread blocked
    # in wait_connected() wakes at that ERRORED and calls connect() at once, while the
    # refused attempt's thread is still on its way out.
    requested, armed, round_done = threading.Event(), threading.Event(), threading.Event()

    def refuse(peer: Peer) -> None:
        peer.read_request()
        if peer.number % 2:  # the application's attempt: refused once the watchdog waits
            requested.set()
            armed.wait(DEADLINE)
            armed.clear()
        peer.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    with HostileServer(refuse) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, close_timeout=CLOSE_TIMEOUT, backoff=fast_backoff())
        durations: list[float] = []
        outcomes: list[BaseException | None] = []
        done = threading.Event()

        def watchdog() -> None:
            for _ in range(RETRIES):
                if not requested.wait(DEADLINE):
                    return
                requested.clear()
                armed.set()
                with pytest.raises(LeapConnectionError):
                    client.wait_connected(timeout=DEADLINE)  # the client gave up: reconnect it
                started = time.monotonic()
                try:
                    client.connect()
                    outcomes.append(None)
                except LeapError as exc:
                    outcomes.append(exc)
                durations.append(time.monotonic() - started)
                round_done.set()
            done.set()

        dog = threading.Thread(target=watchdog, name="watchdog", daemon=True)
        dog.start()
        refused: list[BaseException] = []
        for _ in range(RETRIES):
            round_done.clear()
            with pytest.raises(LeapConnectionError) as failed:
                client.connect()
            refused.append(failed.value)
            assert round_done.wait(DEADLINE)
            assert within(DEADLINE, lambda: client.subscriptions) == ()
        dog.join(DEADLINE)
        assert done.is_set()
        assert len(durations) == RETRIES and max(durations) < DEADLINE  # never close_timeout
        assert all(type(e) is LeapConnectionError and e.status_code == 503 for e in outcomes), outcomes  # type: ignore[union-attr]
        assert all(e.status_code == 503 for e in refused)  # type: ignore[attr-defined]
        within(DEADLINE, client.close)
        assert client.state.connection_state is CLOSED


def _silent_upgrade(peer: Peer) -> None:
    peer.read_request()
    peer.wait()  # never answers the upgrade


def test_connect_wait_timeout_is_the_callers_not_connect_timeout() -> None:
    with HostileServer(_silent_upgrade) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, connect_timeout=4, backoff=fast_backoff())
        try:
            started = time.monotonic()
            with pytest.raises(
                LeapTimeoutError, match=r"not connected within 1 s \(the attempt was in its upgrade phase\)"
            ):
                client.connect(wait=True, timeout=1)
            assert time.monotonic() - started < 3.5  # a deadline: before connect_timeout's 4 s
            assert (client.state.connection_state, client.state.will_reconnect) == (ERRORED, False)
            assert isinstance(client.state.error, LeapTimeoutError)
            # A call that failed frees its place: connect() may be called again at once.
            with pytest.raises(LeapTimeoutError):
                client.connect(timeout=0.3)
        finally:
            client.close()
        assert client.state.connection_state is CLOSED


def test_elstat_connect_timeout_is_the_callers() -> None:
    with HostileServer(_silent_upgrade) as server:
        client = ElstatClient(server.url, connect_timeout=4, backoff=fast_backoff())
        try:
            started = time.monotonic()
            with pytest.raises(LeapTimeoutError):
                client.connect(wait=True, timeout=1)
            assert time.monotonic() - started < 3.5
            assert (client.state.connection_state, client.state.will_reconnect) == (ERRORED, False)
        finally:
            client.close()


def test_a_caller_timeout_longer_than_connect_timeout_still_reports_the_attempts_error() -> None:
    with HostileServer(_silent_upgrade) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, connect_timeout=0.5, backoff=fast_backoff())
        try:
            with pytest.raises(LeapConnectionError) as failed:
                client.connect(wait=True, timeout=10)
            assert failed.value.phase == "upgrade"
        finally:
            client.close()


class _Reconnecting:
    """First connection: a full Leap session, then closed 4000 (the client reconnects).
    Second: upgraded, then no Hello; ``reads`` says whether the peer reads what the
    client sends (its frames are kept)."""

    def __init__(self, reads: bool) -> None:
        self.reads = reads
        self.upgraded = threading.Event()
        self.ended = threading.Event()
        self.frames: list[tuple[int, bytes]] = []

    def first(self, peer: Peer) -> None:
        leap_session(peer)
        peer.close(4000, "go away")
        peer.drain(5)

    def second(self, peer: Peer) -> None:
        peer.upgrade()
        self.upgraded.set()
        if self.reads:
            peer.drain(10)  # until the client's EOF
            self.frames = list(peer.frames)
            self.ended.set()
        else:
            peer.wait()


@pytest.mark.parametrize("reads", [False, True], ids=["never-reads", "reads"])
def test_close_while_a_reconnect_waits_for_hello_sends_no_close_frame(reads: bool) -> None:
    script = _Reconnecting(reads)
    with HostileServer([script.first, script.second]) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, connect_timeout=30, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        assert script.upgraded.wait(10)
        recorder.wait_count(ConnectionState.AUTHENTICATING, 2)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 0.8  # a deadline well under the second a close handshake waited
        assert client.state.connection_state is CLOSED
        if reads:
            assert script.ended.wait(10)
            assert [op for op, _ in script.frames if op == OP_CLOSE] == []  # never a close handshake


_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """``slow.test`` blocks inside the resolver until released; (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.test":
            entered.set()
            release.wait(30)
            return _real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield entered, release
    release.set()


def test_close_interrupting_dns_leaves_no_callbacks_thread(
    blocked: tuple[threading.Event, threading.Event],
) -> None:
    entered, release = blocked
    client = LeapClient(PROJECT, TOKEN, url="ws://slow.test:9/ws", connect_timeout=30, close_timeout=5)
    heard: list[ConnectionState] = []

    def slow_listener(info: StateInfo) -> None:  # bounded work on CLOSED: close() waits for it
        if info.connection_state is CLOSED:
            time.sleep(0.2)
        heard.append(info.connection_state)

    client.add_state_update_listener(slow_listener)
    connector, outcome = in_thread(client.connect, daemon=True)
    assert entered.wait(10)
    n = client._number
    client.close()
    names = {t.name: t for t in threading.enumerate() if t.name.endswith(f"-{n}")}
    assert f"leap-sync-callbacks-{n}" not in names  # ended before close() returned
    assert heard[-1] is CLOSED
    io = names[f"leap-sync-io-{n}"]  # the one documented exception: inside getaddrinfo
    assert io.is_alive()
    connector.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], LeapClosedError)
    release.set()
    io.join(10)
    assert not io.is_alive()
    assert heard.count(CLOSED) == 1
