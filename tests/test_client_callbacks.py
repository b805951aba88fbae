"""User code can never kill, stall or deadlock a library thread (issue: hostile servers,
kind 2): loggers and listeners that raise, block or call close()."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from conftest import leap_threads
from hostile import HostileServer, Peer, leap_session

from leap_sync import ChannelClosed, ConnectionState, LeapClient
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED
CLOSED = ConnectionState.CLOSED


class RaisingLogger:
    """Raises from the methods named in ``broken``; records every call."""

    def __init__(self, *broken: str, exc: type[BaseException] = RuntimeError) -> None:
        self.broken = set(broken)
        self.exc = exc
        self.calls: list[tuple[str, str]] = []

    def _call(self, level: str, message: str) -> None:
        self.calls.append((level, message))
        if level in self.broken:
            raise self.exc(f"logger {level} is broken")

    def debug(self, message: str, metadata: Any = None) -> None:
        self._call("debug", message)

    def info(self, message: str, metadata: Any = None) -> None:
        self._call("info", message)

    def warn(self, message: str, metadata: Any = None) -> None:
        self._call("warn", message)

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self._call("error", message)


class BlockingLogger(RaisingLogger):
    """Blocks every call until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def _call(self, level: str, message: str) -> None:
        self.entered.set()
        self.release.wait(30)


@pytest.fixture
def silent_server() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer(heartbeat_interval=0.1) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        yield server


def make(server_url: str, logger: Any = None, **options: Any) -> LeapClient:
    options.setdefault("backoff", fast_backoff())
    return LeapClient(PROJECT, TOKEN, logger, url=server_url, **options)


@pytest.mark.parametrize("broken", [("warn",), ("debug", "info", "warn", "error")], ids=["warn", "every-method"])
def test_a_raising_logger_never_stops_zombie_detection(silent_server: LeapEdgeServer, broken: tuple[str, ...]) -> None:
    logger = RaisingLogger(*broken)
    recorder = StateRecorder()
    client = make(silent_server.url, logger)
    client.add_state_update_listener(recorder)
    try:
        client.connect(wait=True, timeout=10)  # returns, although every log call raises
        silent_server.silence()  # the connection goes quiet: a zombie
        infos = recorder.wait_for(lambda infos: [i.connection_state for i in infos].count(CONNECTED) >= 2)
        [errored] = [i for i in infos if i.connection_state is ERRORED]
        assert "presumed dead" in str(errored.error) and errored.will_reconnect
        assert ("warn", "connection presumed dead") in logger.calls
        client.subscribe("room", timeout=5)
    finally:
        client.close()  # and close() does not re-raise what the logger raised
    assert client.state.connection_state is CLOSED


@pytest.mark.parametrize("exc", [RuntimeError, SystemExit, KeyboardInterrupt, GeneratorExit])
def test_close_never_reraises_from_the_logger(silent_server: LeapEdgeServer, exc: type[BaseException]) -> None:
    logger = RaisingLogger("debug", "info", "warn", "error", exc=exc)
    client = make(silent_server.url, logger)
    client.connect(wait=True, timeout=10)
    client.close()
    assert client.state.connection_state is CLOSED
    assert ("debug", "closing") in logger.calls


def test_close_before_connect_with_a_raising_logger_and_listener() -> None:
    client = LeapClient(PROJECT, TOKEN, RaisingLogger("debug", "info", "warn", "error"))
    client.add_state_update_listener(lambda info: 1 / 0)
    client.close()  # CLOSED is reported on this thread: the listener's error is logged, the logger's ignored
    assert client.state.connection_state is CLOSED


def test_a_blocking_logger_stalls_nothing_but_itself(silent_server: LeapEdgeServer) -> None:
    logger = BlockingLogger()
    recorder = StateRecorder()
    client = make(silent_server.url, logger, close_timeout=0.5)
    client.add_state_update_listener(recorder)
    messages = client.message_event_channel()
    try:
        client.connect()
        assert logger.entered.wait(5)  # the callbacks thread is now stuck in the logger
        assert client.wait_connected(timeout=10).cid
        channel = client.subscribe("room", timeout=5)
        assert channel.id == "room"
        silent_server.publish("room", "n", 1)
        assert messages.get(timeout=5).data == 1
        cid = silent_server.connections[0].cid
        # heartbeats go on (the server closes 4007 for a missed one)
        silent_server.wait_for(lambda s: any(c.cid == cid and c.heartbeats >= 10 for c in s.connections))
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 3.0  # the I/O thread is joined; the stuck one waited 0.5 s
        assert client.state.connection_state is CLOSED
        with pytest.raises(ChannelClosed):
            messages.get(timeout=1)
        assert not [t for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"]
    finally:
        logger.release.set()
    client._core.log.join(5)
    assert recorder.states[-1] is CLOSED  # the listener still got every state, in order, once released


def test_a_blocking_listener_delays_only_later_callbacks(silent_server: LeapEdgeServer) -> None:
    release = threading.Event()
    recorder = StateRecorder()

    def stuck(info: Any) -> None:
        if info.connection_state is CONNECTED:
            release.wait(30)

    client = make(silent_server.url, close_timeout=0.5)
    client.add_state_update_listener(stuck)
    client.add_state_update_listener(recorder)
    messages = client.message_event_channel()
    try:
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        silent_server.publish_many("room", "n", range(100))
        assert [messages.get(timeout=5).data for _ in range(100)] == list(range(100))
        assert CONNECTED not in recorder.states  # the second listener waits behind the first
    finally:
        release.set()
    recorder.wait_count(CONNECTED, 1)
    client.close()
    assert recorder.states[-1] is CLOSED


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt, RuntimeError])
def test_a_listener_raising_anything_never_kills_the_callbacks_thread(
    silent_server: LeapEdgeServer, exc: type[BaseException]
) -> None:
    recorder = StateRecorder()

    def broken(info: Any) -> None:
        raise exc("listener bug")

    client = make(silent_server.url)
    client.add_state_update_listener(broken)
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    silent_server.drop()
    recorder.wait_count(CONNECTED, 2)  # every transition still reached the next listener
    client.close()
    assert recorder.states[-1] is CLOSED


class ErrorRecorder(RaisingLogger):
    """Records the errors given to ``error()``."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException | None] = []

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self.errors.append(err)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise AttributeError("no text")

    __repr__ = __str__


def test_an_exception_that_cannot_be_shown_never_kills_the_callbacks_thread(silent_server: LeapEdgeServer) -> None:
    """A listener raising an exception whose ``str``/``repr`` raise: with a token the
    report is redacted, which reads its text; the record shows a placeholder."""
    recorder = StateRecorder()
    logger = ErrorRecorder()
    hooked: list[Any] = []
    previous, threading.excepthook = threading.excepthook, hooked.append

    def broken(info: Any) -> None:
        raise _Unprintable()

    try:
        client = make(silent_server.url, logger)
        client.add_state_update_listener(broken)
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        silent_server.drop()
        recorder.wait_count(CONNECTED, 2)
        assert client.wait_connected(timeout=5).cid  # at once: the thread that reports it lives
        client.close()
    finally:
        threading.excepthook = previous
    assert hooked == [] and recorder.states[-1] is CLOSED
    shown = [str(err) for err in logger.errors if err is not None]
    assert shown and set(shown) == {"_Unprintable: <unprintable>"}


def test_listeners_may_call_blocking_client_methods(silent_server: LeapEdgeServer) -> None:
    results: list[Any] = []
    done = threading.Event()

    def on_state(info: Any) -> None:
        if info.connection_state is CONNECTED and not done.is_set():
            results.append(client.wait_connected(timeout=5).cid)
            results.append(client.subscribe("room", timeout=5).id)  # waits for the I/O thread: no deadlock
            done.set()

    client = make(silent_server.url)
    client.add_state_update_listener(on_state)
    client.connect()
    assert done.wait(10)
    assert results[1] == "room" and results[0]
    client.close()


# -- close() from every library thread, against a peer that never answers -----------------------


def never_reads(peer: Peer) -> None:
    leap_session(peer)
    peer.wait()  # never reads again: our close frame is never answered


def _closed_promptly(client: LeapClient, closed: threading.Event, started: list[float]) -> None:
    assert closed.wait(10)
    assert time.monotonic() - started[0] < 3.0
    assert client.state.connection_state is CLOSED
    io = [t for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"]
    assert not io or not io[0].is_alive()


def test_close_from_a_listener_against_a_peer_that_never_echoes() -> None:
    with HostileServer(never_reads) as server:
        client = make(server.url)
        closed = threading.Event()
        started: list[float] = []
        io_alive_after: list[bool] = []

        def on_state(info: Any) -> None:
            if info.connection_state is CONNECTED:
                started.append(time.monotonic())
                client.close()
                io_alive_after.extend(
                    t.is_alive() for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"
                )
                closed.set()

        client.add_state_update_listener(on_state)
        messages = client.message_event_channel()
        client.connect()
        _closed_promptly(client, closed, started)
        assert io_alive_after == [] or io_alive_after == [False]  # joined before close() returned
        with pytest.raises(ChannelClosed):
            messages.get(timeout=1)


def test_close_from_the_logger_against_a_peer_that_never_echoes() -> None:
    closed = threading.Event()
    started: list[float] = []

    class ClosingLogger(RaisingLogger):
        def _call(self, level: str, message: str) -> None:
            if message == "state" and not started and client.state.connection_state is CONNECTED:
                started.append(time.monotonic())
                client.close()
                closed.set()

    with HostileServer(never_reads) as server:
        client = make(server.url, ClosingLogger())
        client.connect()
        _closed_promptly(client, closed, started)


def test_close_from_a_consumer_against_a_peer_that_never_echoes() -> None:
    def talks_then_stops(peer: Peer) -> None:
        leap_session(peer)
        peer.message("room", "stop", 1)
        peer.wait()

    with HostileServer(talks_then_stops) as server:
        client = make(server.url)
        messages = client.message_event_channel()
        closed = threading.Event()
        started: list[float] = []

        def consume() -> None:
            for _event in messages:
                started.append(time.monotonic())
                client.close()
                closed.set()

        consumer = threading.Thread(target=consume)
        consumer.start()
        client.connect()
        _closed_promptly(client, closed, started)
        consumer.join(5)
        assert not consumer.is_alive()


def test_close_from_every_thread_at_once(silent_server: LeapEdgeServer) -> None:
    client = make(silent_server.url)
    closers: list[Callable[[], None]] = []
    client.add_state_update_listener(lambda info: client.close() if info.connection_state is CONNECTED else None)
    client.connect()
    barrier = threading.Barrier(8)

    def close_now() -> None:
        barrier.wait(5)
        client.close()

    threads = [threading.Thread(target=close_now) for _ in range(8)]
    closers.extend(t.start for t in threads)
    for start in closers:
        start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert client.state.connection_state is CLOSED


def test_a_blocking_listener_never_stretches_a_callers_timeout(silent_server: LeapEdgeServer) -> None:
    release = threading.Event()
    client = make(silent_server.url, close_timeout=5)
    client.add_state_update_listener(lambda info: release.wait(30))
    try:
        started = time.monotonic()
        client.connect(wait=True, timeout=1.0)  # connected: only the listeners lag
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        client.wait_connected(timeout=0.3)
        assert time.monotonic() - started < 0.8
    finally:
        release.set()
    client.close()


def test_a_blocking_listener_never_delays_a_send_that_waits_for_the_connection(silent_server: LeapEdgeServer) -> None:
    release = threading.Event()
    client = make(silent_server.url, close_timeout=5)
    client.add_state_update_listener(lambda info: release.wait(30) if info.connection_state is CONNECTED else None)
    try:
        client.connect(wait=True, timeout=1.0)
        started = time.monotonic()
        assert client.subscribe("room", timeout=3, wait=True).id == "room"
        assert time.monotonic() - started < 1.0  # connected already: nothing to wait for
    finally:
        release.set()
    client.close()


@pytest.mark.parametrize("connected", [False, True])
def test_many_threads_closing_at_once_restart_the_callbacks_thread_once(
    silent_server: LeapEdgeServer, connected: bool
) -> None:
    for _ in range(20):
        client = make(silent_server.url)
        recorder = StateRecorder()
        client.add_state_update_listener(recorder)
        if connected:
            client.connect(wait=True, timeout=10)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        threads = [threading.Thread(target=_close_at_once, args=(client, barrier, errors)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert client.state.connection_state is CLOSED
        recorder.wait_for(lambda infos: bool(infos) and infos[-1].connection_state is CLOSED)
        assert recorder.states.count(CLOSED) == 1


def _close_at_once(client: LeapClient, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    barrier.wait(5)
    try:
        client.close()
    except BaseException as exc:
        errors.append(exc)
