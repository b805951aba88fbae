"""Every reconnect is paced, counted, and goes somewhere sensible (kind 3); each answer
goes to the call that asked for it (kind 5)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, CountingTransport, StateRecorder
from hostile import HostileServer, Peer, leap_session

from leap_sync import Backoff, ChannelUnavailableError, ConnectionState, LeapClient, LeapConnectionError
from leap_sync.connection.handler import Live
from leap_sync.protocol.models import InitEvent
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
CONNECTING = ConnectionState.CONNECTING
ERRORED = ConnectionState.ERRORED


def steady(base: float, cap: float = 10.0, **options: Any) -> Backoff:
    """Deterministic delays: the ceiling of each step (base, 2 base, 4 base...)."""
    return Backoff(base=base, cap=cap, uniform=lambda low, high: high, **options)


class Stamps:
    """When each connection arrived (monotonic), recorded by a script wrapper."""

    def __init__(self, script: Callable[[Peer], None]) -> None:
        self.script = script
        self.times: list[float] = []

    def __call__(self, peer: Peer) -> None:
        self.times.append(time.monotonic())
        self.script(peer)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def _gave_up(recorder: StateRecorder, timeout: float = 20) -> Any:
    infos = recorder.wait_for(
        lambda infos: infos[-1].connection_state is ERRORED and not infos[-1].will_reconnect, timeout
    )
    return infos[-1]


def test_redirects_to_itself_are_paced_and_counted() -> None:
    holder: dict[str, str] = {}

    def redirect_to_self(peer: Peer) -> None:
        leap_session(peer)
        peer.close(4006, holder["url"])
        peer.drain(2)

    stamps = Stamps(redirect_to_self)
    with HostileServer(stamps) as server:
        holder["url"] = server.url
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=steady(0.2, max_attempts=3))
        client.add_state_update_listener(recorder)
        client.connect()
        final = _gave_up(recorder)
        client.close()
        assert "gave up after 3 failed" in str(final.error)
        assert final.error.close_code == 4006
        assert server.accepted == 3  # connect() and two redirects, each an attempt that failed
        gaps = stamps.gaps()
        assert gaps[0] < 0.15  # the first redirect after a healthy start: at once
        assert gaps[1] >= 0.4  # a repeated one: the backoff delay (2 * base after one failure)
        assert [i.connection_state for i in recorder.infos].count(CONNECTED) == 3


def test_short_lived_connections_never_exhaust_max_attempts() -> None:
    def lives_300ms(peer: Peer) -> None:
        leap_session(peer, 30000)
        peer.stop.wait(0.3)
        peer.close(4000, "bye")
        peer.drain(2)

    stamps = Stamps(lives_300ms)
    with HostileServer(stamps) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=steady(0.02, cap=0.16, max_attempts=3))
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_count(CONNECTED, 6, timeout=20)
        client.close()
        assert all(i.will_reconnect for i in infos if i.connection_state is ERRORED)
        # paced: the delay after each drop grows (0.02, 0.04, 0.08, 0.16 s) until the cap
        gaps = [g - 0.3 for g in stamps.gaps()[:5]]
        assert gaps[0] < gaps[2] < gaps[3] + 0.05
        assert min(gaps[1:]) >= 0.03


def test_a_redirect_target_that_does_not_work_sends_the_client_back() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}/ws"

    def redirect_then_behave(peer: Peer) -> None:
        leap_session(peer)
        if peer.number == 1:
            peer.close(4006, dead)
        peer.drain(10)

    with HostileServer(redirect_then_behave) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=steady(0.02))
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_count(CONNECTED, 2, timeout=10)
        client_url = client.url
        client.close()
        errors = [i.error for i in infos if i.connection_state is ERRORED]
        assert errors[0].close_code == 4006  # type: ignore[union-attr]
        assert "TCP connect" in str(errors[1])  # the target refused
        assert server.accepted == 2  # and the next attempt came back here
        assert client_url.startswith(server.url)


def test_a_working_redirect_target_is_kept_across_drops() -> None:
    with LeapEdgeServer() as target:
        target.add_token(TOKEN, project_id=PROJECT)

        def redirect(peer: Peer) -> None:
            leap_session(peer)
            peer.close(4006, target.url + "?region=eu")
            peer.drain(5)

        with HostileServer(redirect) as origin:
            recorder = StateRecorder()
            client = LeapClient(PROJECT, TOKEN, url=origin.url, backoff=steady(0.02))
            client.add_state_update_listener(recorder)
            client.connect()
            recorder.wait_count(CONNECTED, 2)
            target.drop()
            recorder.wait_count(CONNECTED, 3)
            assert origin.accepted == 1
            assert len(target.all_connections) == 2
            assert "region=eu" in client.url
            client.close()


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_on_reconnect(status: int) -> None:
    def script(peer: Peer) -> None:
        if peer.number == 2:
            peer.refuse(status, "Busy", ["Retry-After: 1"])
            return
        leap_session(peer)
        if peer.number == 1:
            peer.close(4000, "go away")
        peer.drain(5)

    stamps = Stamps(script)
    with HostileServer(stamps) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=steady(0.01))
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_count(CONNECTED, 2, timeout=10)
        client.close()
        refused = [i.error for i in infos if i.connection_state is ERRORED][1]
        assert isinstance(refused, LeapConnectionError)
        assert (refused.status_code, refused.retry_after, refused.phase) == (status, 1.0, "upgrade")
        assert stamps.gaps()[1] >= 0.95  # waited what the server asked, not the 10 ms backoff


def test_a_refused_first_connect_reports_retry_after() -> None:
    with HostileServer(lambda peer: peer.refuse(429, "Too Many Requests", ["Retry-After: 7"])) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        with pytest.raises(LeapConnectionError, match="HTTP 429 Too Many Requests") as failed:
            client.connect()
        assert (failed.value.status_code, failed.value.retry_after) == (429, 7.0)
        client.close()


def test_a_server_that_drops_every_connection_at_once_is_retried_at_a_growing_pace() -> None:
    def drop(peer: Peer) -> None:
        peer.read_request()
        peer.reset()

    stamps = Stamps(drop)
    with HostileServer(stamps) as server:
        recorder = StateRecorder()
        client = LeapClient(
            PROJECT, TOKEN, url=server.url, backoff=steady(0.05, cap=0.4), connect_timeout=5, logger=None
        )
        client.add_state_update_listener(recorder)
        with pytest.raises(LeapConnectionError):
            client.connect()  # the first attempt fails: connect() reports it and does not retry
        assert server.accepted == 1
        client.close()


# -- answers go to the calls that asked --------------------------------------------------------


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        server.create_channel("other", project_id=PROJECT)
        yield server


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "tokenless"])
def test_unsubscribe_then_subscribe_at_once_agree_with_the_server(leap: LeapEdgeServer, token: str | None) -> None:
    if token is None:
        leap.create_channel("open", project_id=PROJECT, type="unprotected")
    channel_id = "room" if token else "open"
    client = LeapClient(PROJECT, token, url=leap.url)
    events = client.channel_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe(channel_id, timeout=5)
    for _ in range(20):
        client.unsubscribe(channel_id)
        channel = client.subscribe(channel_id, timeout=5)  # answered by AVAILABLE, not the UNAVAILABLE
        assert channel.id == channel_id
    assert client.subscriptions == (channel_id,)
    [conn] = leap.connections
    leap.wait_for(lambda s: channel_id in s.connections[0].subscriptions)
    assert channel_id in conn.subscriptions or channel_id in leap.connections[0].subscriptions
    # each AVAILABLE answered its subscribe(); each UNAVAILABLE (answering an unsubscribe)
    # is an event, as a push from the server would be
    assert [(e.channel_id, e.graceful) for e in (events.get(timeout=1) for _ in range(20))] == [(channel_id, True)] * 20
    assert events.qsize() == 0
    client.close()


def test_a_refusal_goes_to_its_subscribe_and_not_to_the_next(leap: LeapEdgeServer) -> None:
    leap.add_token("limited", project_id=PROJECT, grants=["room"])
    client = LeapClient(PROJECT, "limited", url=leap.url)
    client.connect(wait=True, timeout=10)
    results: dict[str, Any] = {}

    def call(channel_id: str) -> None:
        try:
            results[channel_id] = client.subscribe(channel_id, timeout=5).id
        except ChannelUnavailableError as exc:
            results[channel_id] = exc.error_code

    threads = [threading.Thread(target=call, args=(c,)) for c in ("other", "room")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"other": "NOT_GRANTED", "room": "room"}
    assert client.subscriptions == ("room",)
    client.close()


def test_many_threads_racing_subscribe_and_unsubscribe_end_in_agreement(leap: LeapEdgeServer) -> None:
    client = LeapClient(PROJECT, TOKEN, url=leap.url)
    client.connect(wait=True, timeout=10)
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(30):
                if (i + n) % 2:
                    client.unsubscribe("room")
                else:
                    client.subscribe("room", timeout=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    client.subscribe("room", timeout=5)  # a final, answered state
    leap.wait_for(lambda s: "room" in s.connections[0].subscriptions)
    assert client.subscriptions == ("room",)
    client.unsubscribe("room")
    client.subscribe("other", timeout=5)  # answered after the unsubscribe's UNAVAILABLE
    assert client.subscriptions == ("other",)
    leap.wait_for(
        lambda s: s.connections[0].subscriptions == ("other",) or "room" not in s.connections[0].subscriptions
    )
    client.close()


def test_a_late_answer_to_a_timed_out_subscribe_updates_subscriptions() -> None:
    gate = threading.Event()

    def slow_answer(peer: Peer) -> None:
        leap_session(peer)
        frame = peer.read_json()
        assert frame["d"]["e"] == "SUBSCRIBE"
        gate.wait(10)
        peer.json(
            {
                "op": 0,
                "d": {
                    "c": "room",
                    "e": "AVAILABLE",
                    "d": {"channel": {"id": "room", "project_id": PROJECT, "state": {}, "type": "private"}},
                },
            }
        )
        peer.drain(5)

    with HostileServer(slow_answer) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=10)
        with pytest.raises(Exception, match="no answer to SUBSCRIBE 'room'"):
            client.subscribe("room", timeout=0.2)
        gate.set()
        event = events.get(timeout=5)  # the answer nobody waits for any more is an event
        assert event.channel_id == "room"
        assert client.subscriptions == ("room",)
        client.close()


@pytest.mark.parametrize("status", [401, 403, 429, 503])
def test_a_refused_upgrade_on_first_connect_raises_with_the_status(status: int) -> None:
    with HostileServer(lambda peer: peer.refuse(status, "No")) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        client.add_state_update_listener(recorder)
        with pytest.raises(LeapConnectionError, match=rf"websocket upgrade refused: HTTP {status} No") as failed:
            client.connect()
        assert (failed.value.phase, failed.value.status_code) == ("upgrade", status)
        assert recorder.states == [CONNECTING, ERRORED]
        assert recorder.infos[-1].will_reconnect is False  # the first attempt reports; connect() may be retried
        client.close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_upgrade_on_reconnect_takes_backoff(status: int) -> None:
    def script(peer: Peer) -> None:
        if peer.number == 2:
            peer.refuse(status, "No")
            return
        leap_session(peer)
        if peer.number == 1:
            peer.close(4000, "bye")
        peer.drain(5)

    with HostileServer(script) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=steady(0.01))
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_count(CONNECTED, 2, timeout=10)
        client.close()
        errors = [i for i in infos if i.connection_state is ERRORED]
        assert [e.will_reconnect for e in errors] == [True, True]
        assert errors[1].error.status_code == status  # type: ignore[union-attr]


def test_an_unsubscribe_the_server_never_answers_does_not_capture_the_next_subscribe() -> None:
    def never_answers_unsubscribe(peer: Peer) -> None:
        leap_session(peer)
        while True:
            frame = peer.read_json(10)
            if frame.get("op") == 0 and frame["d"]["e"] == "SUBSCRIBE":
                channel = {"id": frame["d"]["c"], "project_id": PROJECT, "state": {}, "type": "private"}
                peer.json({"op": 0, "d": {"c": frame["d"]["c"], "e": "AVAILABLE", "d": {"channel": channel}}})

    with HostileServer(never_answers_unsubscribe) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        client.unsubscribe("room")  # no answer will ever come
        assert client.subscribe("room", timeout=5).id == "room"  # the AVAILABLE answers this call
        assert client.subscriptions == ("room",)
        assert events.empty()
        client.close()


def test_a_graceful_unavailable_pushed_while_a_subscribe_waits_is_not_its_answer(leap: LeapEdgeServer) -> None:
    # Two connections of one token share a session: A's unsubscribe reaches B too.
    a = LeapClient(PROJECT, TOKEN, url=leap.url)
    b = LeapClient(PROJECT, TOKEN, url=leap.url)
    for client in (a, b):
        client.connect(wait=True, timeout=10)
    results: list[Any] = []
    for _ in range(50):
        a.subscribe("room", timeout=5)
        racer = threading.Thread(target=lambda: results.append(_try(lambda: b.subscribe("room", timeout=5))))
        racer.start()
        a.unsubscribe("room")
        racer.join(10)
    assert len(results) == 50
    failures = sum(isinstance(r, ChannelUnavailableError) for r in results)
    assert failures == 0  # B's subscribe got its own answer every time
    a.close()
    b.close()


def _try(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return exc


def test_answers_and_pushes_in_one_batch_keep_wire_order() -> None:
    import json

    from leap_sync.wire.wsframes import OP_TEXT, unmasked_frame

    channel = {"id": "room", "project_id": PROJECT, "state": {}, "type": "private"}
    answer = {"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True, "error_code": None}}}
    push = {"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": channel}}}

    def server_script(peer: Peer) -> None:
        leap_session(peer, channels=["room"])
        while True:
            frame = peer.read_json(10)
            if frame.get("op") == 0 and frame["d"]["e"] == "UNSUBSCRIBE":  # answer and push, one write
                peer.send(b"".join(unmasked_frame(OP_TEXT, json.dumps(f).encode()) for f in (answer, push)))

    with HostileServer(server_script) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=10)
        assert client.subscriptions == ("room",)
        client.unsubscribe("room")
        got = [type(events.get(timeout=5)).__name__ for _ in range(2)]
        assert got == ["UnavailableEvent", "AvailableEvent"]
        assert client.subscriptions == ("room",)  # the server's last word: subscribed
        client.close()


def test_close_stops_a_long_resubscription_at_once() -> None:
    """After a reconnect every channel the server did not keep is renewed, frame by
    frame, on the I/O thread: close() in the middle stops it there."""
    client = LeapClient(PROJECT, TOKEN, url="ws://127.0.0.1:9/ws")
    handler = client._handler
    with handler.lock:
        for i in range(10_000):
            handler.subscriptions[f"room-{i}"] = None
    session = handler.new_session()
    session.init = InitEvent(cid="c", connection_count=1, metadata=None, scope="token")
    transport = CountingTransport(client._core.closing, limit=100)
    handler.on_connected(Live(session, transport))  # type: ignore[arg-type]
    assert transport.sent == 100
    client.close()
