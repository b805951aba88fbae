"""LeapClient lifecycle: connect/close from every thread, threads, errors, logging."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, in_thread
from conftest import leap_threads

from leap_sync import (
    Backoff,
    ChannelClosed,
    ConnectionState,
    FmtLogger,
    LeapClient,
    LeapClosedError,
    LeapConnectionError,
    LeapEncodeError,
    LeapError,
    LeapTimeoutError,
    NopLogger,
    StdlibLogger,
)
from leap_sync.testing import LeapEdgeServer

MakeClient = Callable[..., LeapClient]


def client_threads() -> list[threading.Thread]:
    return [t for t in leap_threads() if t.name.startswith(("leap-sync-io-", "leap-sync-callbacks-"))]


CONNECTED = ConnectionState.CONNECTED
CLOSED = ConnectionState.CLOSED


def test_construction_starts_nothing(server: LeapEdgeServer) -> None:
    before = leap_threads()
    client = LeapClient(PROJECT, TOKEN, url=server.url)
    client.message_event_channel()
    client.add_state_update_listener(lambda info: None)
    assert leap_threads() == before
    assert client.state.connection_state is ConnectionState.IDLE
    assert server.connections == []
    client.close()
    assert client.state.connection_state is CLOSED


def test_threads_are_named_and_joined_by_close(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    n = client._number
    names = {t.name: t for t in client_threads() if t.name.endswith(f"-{n}")}
    assert set(names) == {f"leap-sync-io-{n}", f"leap-sync-callbacks-{n}"}
    assert all(t.daemon for t in names.values())
    client.close()
    assert not any(t.is_alive() for t in names.values())
    assert client.state.connection_state is CLOSED
    client.close()  # idempotent
    assert client.state.connection_state is CLOSED


def test_close_ends_channels_after_their_events(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    messages = client.message_event_channel()
    probe = client.message_event_channel()  # fed right after `messages`, batch by batch
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    server.publish_many("room", "n", range(3))
    assert [probe.get(timeout=5).data for _ in range(3)] == [0, 1, 2]
    assert messages.qsize() == 3
    client.close()
    assert [e.data for e in messages] == [0, 1, 2]  # drained after close, then the end
    with pytest.raises(ChannelClosed):
        messages.get(timeout=1)
    late = client.message_event_channel()
    with pytest.raises(ChannelClosed):
        late.get(timeout=1)


def test_close_racing_a_reconnect_closes_the_new_connection(
    server: LeapEdgeServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold the I/O thread after a reconnect's upgrade, just before its connection
    # becomes visible to close(), and close() from another thread right then.
    import leap_sync.leap as client_module  # where the client makes its sessions

    in_gap = threading.Event()
    release = threading.Event()
    sessions: list[object] = []
    real_session = client_module.ClientSession

    def held_session(*args: object, **kwargs: object) -> object:
        sessions.append(1)
        if len(sessions) == 2:
            in_gap.set()
            release.wait(10)
        return real_session(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client_module, "ClientSession", held_session)
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    server.drop()
    assert in_gap.wait(10)
    closer = threading.Thread(target=client.close)
    closer.start()
    assert client._core.closing.wait(10)
    release.set()
    closer.join(20)
    assert not closer.is_alive()
    assert client.state.connection_state is CLOSED
    assert client_threads() == []  # closed for real, not left reading
    server.wait_for(lambda s: not s.connections)
    assert len(server.all_connections) == 2


def test_close_does_not_wait_long_for_a_peer_that_never_echoes(make_client: MakeClient) -> None:
    import json
    import time

    from rawws import RawServer, server_frame

    with RawServer() as raw:  # a Leap server that never reads what the client sends
        client = LeapClient(PROJECT, TOKEN, url=raw.url, close_timeout=5.0)
        client.connect()
        conn = raw.accept()
        hello = {"op": 1, "d": {"heartbeat_interval": 30000}}
        init = {
            "op": 0,
            "d": {"c": None, "e": "INIT", "d": {"cid": "c1", "connection_count": 1, "scope": "token", "channels": []}},
        }
        conn.send(server_frame(1, json.dumps(hello).encode()) + server_frame(1, json.dumps(init).encode()))
        client.wait_connected(timeout=10)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 3.0  # about a second, not close_timeout
        assert client.state.connection_state is CLOSED
        conn.close()


def test_connect_timeout_bounds_a_trickling_handshake() -> None:
    import socket

    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def trickle() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                for byte in b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: " + b"x" * 1000:
                    if stop.wait(0.1):
                        return
                    try:
                        conn.send(bytes([byte]))
                    except OSError:
                        return

        server = threading.Thread(target=trickle)
        server.start()
        client = LeapClient(PROJECT, TOKEN, url=f"ws://127.0.0.1:{listener.getsockname()[1]}/ws", connect_timeout=0.5)
        try:
            with pytest.raises(LeapConnectionError, match=r"no websocket upgrade within 0\.5 s"):
                client.connect()
        finally:
            stop.set()
            client.close()
            server.join(10)


def test_close_from_a_state_listener(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server)

    def close_when_connected(info: object) -> None:
        if client.state.connection_state is CONNECTED:
            client.close()

    client.add_state_update_listener(close_when_connected)
    client.add_state_update_listener(recorder)
    client.connect()
    infos = recorder.wait_for(lambda infos: infos[-1].connection_state is CLOSED)
    assert [i.connection_state for i in infos][-2:] == [CONNECTED, CLOSED]
    # the conftest fixture checks both threads end


def test_close_from_a_consumer_thread(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    seen: list[object] = []
    finished = threading.Event()

    def consume() -> None:
        for event in messages:
            seen.append(event.data)
            client.close()
        finished.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    server.publish("room", "stop", "now")
    assert finished.wait(10)
    consumer.join(5)
    assert seen == ["now"]
    assert client.state.connection_state is CLOSED


def test_close_during_backoff_interrupts_the_wait(server: LeapEdgeServer, make_client: MakeClient) -> None:
    recorder = StateRecorder()
    client = make_client(server, backoff=Backoff(base=3600, cap=3600, uniform=lambda low, high: high))
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    server.drop()
    recorder.wait_for(lambda infos: infos[-1].connection_state is ConnectionState.ERRORED)
    client.close()  # would hang for an hour if the wait were not interruptible
    assert client.state.connection_state is CLOSED
    assert recorder.states[-1] is CLOSED


def test_close_during_connecting_to_a_black_hole(make_client: MakeClient) -> None:
    import socket

    with socket.socket() as listener:  # accepts TCP, never answers the upgrade
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"
        client = LeapClient(PROJECT, TOKEN, url=url, connect_timeout=30)
        connector, outcome = in_thread(client.connect)
        conn, _ = listener.accept()
        with conn:
            client.close()
            connector.join(10)
        assert not connector.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], LeapError)
        assert client.state.connection_state is CLOSED


def test_200_connect_close_cycles(server: LeapEdgeServer) -> None:
    for _ in range(200):
        client = LeapClient(PROJECT, TOKEN, url=server.url, logger=NopLogger())
        client.connect(wait=True, timeout=10)
        client.close()
        assert client.state.connection_state is CLOSED
    assert client_threads() == []


def test_first_connect_failure_raises_and_allows_retry(make_client: MakeClient) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LeapClient(PROJECT, TOKEN, url=f"ws://127.0.0.1:{port}/ws", logger=NopLogger())
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    messages = client.message_event_channel()
    with pytest.raises(LeapConnectionError):
        client.connect()
    assert recorder.states == [ConnectionState.CONNECTING, ConnectionState.ERRORED]
    assert recorder.infos[-1].will_reconnect is False
    with pytest.raises(LeapConnectionError):
        client.wait_connected(timeout=1)
    assert not messages.closed  # a failed first attempt is not the end
    with LeapEdgeServer(port=port) as server:
        server.add_token(TOKEN)
        client.connect(wait=True, timeout=10)
        assert client.state.connection_state is CONNECTED
        client.close()
    assert messages.closed


def test_connect_twice_and_after_close(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    with pytest.raises(LeapError, match="already"):
        client.connect()
    client.close()
    with pytest.raises(LeapClosedError):
        client.connect()


def test_sending_while_not_connected(server: LeapEdgeServer, make_client: MakeClient) -> None:
    client = make_client(server)
    with pytest.raises(LeapConnectionError, match="not connected"):
        client.send_message("room", "x", 1)
    with pytest.raises(LeapConnectionError, match="not connected"):
        client.subscribe("room", timeout=1)
    client.connect()
    # wait=True waits for the connection first
    assert client.subscribe("room", timeout=10, wait=True).id == "room"
    client.send_message("room", "x", 1, wait=True, timeout=5)
    client.close()
    with pytest.raises(LeapClosedError):
        client.send_message("room", "x", 1)


def test_bad_arguments_are_refused(server: LeapEdgeServer, make_client: MakeClient) -> None:
    with pytest.raises(ValueError):
        LeapClient("")
    with pytest.raises(ValueError):
        LeapClient(PROJECT, "")
    with pytest.raises(ValueError):
        LeapClient(PROJECT, encoding="xml")
    with pytest.raises(ValueError):
        LeapClient(PROJECT, compression="gzip")
    with pytest.raises(ValueError):
        LeapClient(PROJECT, url="http://example.com/ws")
    with pytest.raises(TypeError):
        LeapClient(PROJECT, url=5)  # type: ignore[arg-type]
    client = make_client(server)
    client.connect(wait=True, timeout=10)
    with pytest.raises(ValueError):
        client.subscribe("")
    with pytest.raises(TypeError):
        client.set_channel_state("room", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(LeapEncodeError):
        client.send_message("room", "x", {1, 2, 3})
    with pytest.raises(LeapEncodeError):
        client.send_message("room", "x", float("nan"))
    assert client.state.connection_state is CONNECTED  # nothing broke


def test_subscribe_timeout(make_client: MakeClient) -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        client = make_client(server)
        client.connect(wait=True, timeout=10)
        server.silence()
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=0.2)
        assert client._waiters == {}


def test_disconnect_fails_a_pending_subscribe_at_once(make_client: MakeClient) -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        client = make_client(server)
        client.connect(wait=True, timeout=10)
        server.silence()
        errors: list[BaseException] = []
        waiting = threading.Thread(target=lambda: _capture(errors, lambda: client.subscribe("room", timeout=60)))
        waiting.start()
        server.wait_for(lambda s: s.connections[0].frames_in >= 2)
        server.drop()
        waiting.join(10)
        assert not waiting.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], LeapConnectionError)


def _capture(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_listener_exceptions_are_logged_not_fatal(
    server: LeapEdgeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = StateRecorder()
    client = make_client(server)

    def broken(info: object) -> None:
        raise RuntimeError("listener bug")

    remove = client.add_state_update_listener(broken)
    client.add_state_update_listener(recorder)
    with caplog.at_level(logging.ERROR, logger="leap_sync"):
        client.connect(wait=True, timeout=10)
        recorder.wait_count(CONNECTED, 1)  # listeners run in order: the broken one is done
    assert "listener bug" in caplog.text
    remove()
    caplog.clear()
    server.drop()
    recorder.wait_count(CONNECTED, 2)
    assert "listener bug" not in caplog.text


def test_token_never_logged_or_shown(
    server: LeapEdgeServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = StateRecorder()
    with caplog.at_level(logging.DEBUG, logger="leap_sync"):
        client = make_client(server)
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        server.publish("room", "chat", {"text": "hi"})
        messages.get(timeout=5)
        server.disconnect(4000, f"echoing {TOKEN} back")  # a hostile close reason
        recorder.wait_count(CONNECTED, 2)
        bad = make_client(server, token=TOKEN + "_wrong")
        bad.connect()
        bad.close()
        client.close()
    text = caplog.text
    assert "identify" in text and "<redacted>" in text
    assert "connecting" in text and "init" in text and "subscribe" in text
    assert "reconnecting" in text and "4000" in text
    assert TOKEN not in text
    assert TOKEN not in repr(client)
    for info in recorder.infos:
        assert TOKEN not in str(info.error) and TOKEN not in repr(info)
        if isinstance(info.error, LeapConnectionError):
            assert TOKEN not in (info.error.close_reason or "")


def test_fmt_logger_levels(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOP_LOGGING_LEVEL", "warn")
    logger = FmtLogger()
    logger.info("quiet", {"a": 1})
    logger.warn("loud", {"a": 1})
    logger.error("broken", ValueError("why"), None)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].endswith("WARN  leap: loud a=1")
    assert err[1].endswith("ERROR leap: broken error=why")
    monkeypatch.setenv("HOP_LOGGING_LEVEL", "debug")
    FmtLogger().debug("shown")
    assert capsys.readouterr().err.endswith("DEBUG leap: shown\n")
    monkeypatch.delenv("HOP_LOGGING_LEVEL")
    assert FmtLogger().level == "info"


def test_stdlib_logger_forwards(caplog: pytest.LogCaptureFixture) -> None:
    logger = StdlibLogger(logging.getLogger("custom"))
    with caplog.at_level(logging.DEBUG, logger="custom"):
        logger.debug("d", {"k": 1})
        logger.warn("w")
        logger.error("e", KeyError("x"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "d k=1"),
        ("WARNING", "w"),
        ("ERROR", "e error='x'"),
    ]


def test_context_manager_closes(server: LeapEdgeServer) -> None:
    with LeapClient(PROJECT, TOKEN, url=server.url) as client:
        client.connect(wait=True, timeout=10)
        assert client.state.connection_state is CONNECTED
    assert client.state.connection_state is CLOSED


def test_max_attempts_gives_up(make_client: MakeClient) -> None:
    recorder = StateRecorder()
    server = LeapEdgeServer().start()
    try:
        server.add_token(TOKEN)
        client = make_client(server, backoff=Backoff(base=0.01, cap=0.01, max_attempts=3, uniform=lambda lo, hi: hi))
        messages = client.message_event_channel()
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
    finally:
        server.close()
    infos = recorder.wait_for(
        lambda infos: not infos[-1].will_reconnect and infos[-1].connection_state.value == "errored"
    )
    assert "gave up after 3" in str(infos[-1].error)
    assert [i.connection_state for i in infos].count(ConnectionState.CONNECTING) == 4  # first + 3 retries
    with pytest.raises(ChannelClosed):
        messages.get(timeout=5)


def test_close_is_prompt_while_the_thread_tries_to_answer_a_close_on_a_full_socket() -> None:
    import socket
    import time

    from hostile import HostileServer, Peer, leap_session

    go = threading.Event()

    def never_reads(peer: Peer) -> None:
        leap_session(peer)
        go.wait(20)  # the client's socket is full by now
        peer.close(1001, "going away")  # the client must answer, and cannot write
        peer.wait(20)

    with HostileServer(never_reads) as server:
        server._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client = LeapClient(PROJECT, TOKEN, url=server.url, close_timeout=0.3, send_timeout=30)
        client.connect(wait=True, timeout=10)
        sender = threading.Thread(target=lambda: _capture([], lambda: client.send_message("r", "e", "x" * 8_000_000)))
        sender.start()
        live = client._core.live
        assert live is not None
        deadline = time.monotonic() + 10
        while live.transport._writer.send_deadline() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the big frame is being written
        go.set()
        while not live.transport._writer.close_queued and time.monotonic() < deadline:
            time.sleep(0.01)  # the close frame arrived: the thread now tries to answer it
        assert live.transport._writer.close_queued
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 1.0
        assert client_threads() == []
        sender.join(10)
