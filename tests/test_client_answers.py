"""A caller that gives up frees its place in answer matching; a call that fails changes
nothing, and a call that succeeded is never undone (issue 16, kinds 4 and 5).

Each test states what every call reported, what ``client.subscriptions`` says and what
the server has (``LeapEdgeServer.connections[...].subscriptions``): the three agree.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder
from hostile import HostileServer, Peer, leap_session

from leap_sync import (
    AvailableEvent,
    Backoff,
    ChannelUnavailableError,
    ConnectionState,
    EventChannel,
    LeapClient,
    LeapConnectionError,
    LeapError,
    LeapTimeoutError,
    UnavailableEvent,
)
from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import Channel, InitEvent
from leap_sync.protocol.session import Answer, ClientSession
from leap_sync.testing import LeapEdgeServer
from leap_sync.testing.leap.handling import ClientFrames

CONNECTED = ConnectionState.CONNECTED


class HoldingServer(LeapEdgeServer):
    """A Leap Edge server that keeps the next ``hold`` SUBSCRIBEs to itself: it neither
    acts on them nor answers, until :meth:`release_held` (the late answer), or never
    (``lose=True``: the request was lost)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold = 0
        self.lose = False
        self.held: list[tuple[Any, str]] = []

    def _subscribe(self, conn: Any, channel_id: str) -> None:
        if self.hold > 0:
            self.hold -= 1
            if not self.lose:
                self.held.append((conn, channel_id))
            return
        super()._subscribe(conn, channel_id)

    def release_held(self) -> None:
        with self._lock:
            held, self.held = self.held, []
            for conn, channel_id in held:
                ClientFrames._subscribe(self, conn, channel_id)
        self.connection_changed()


@pytest.fixture
def server() -> Iterator[HoldingServer]:
    with HoldingServer() as srv:
        srv.add_token(TOKEN, project_id=PROJECT)
        srv.create_channel("room", project_id=PROJECT, type="unprotected")
        srv.create_channel("other", project_id=PROJECT, type="unprotected")
        yield srv


def _server_subscriptions(server: LeapEdgeServer) -> frozenset[str]:
    (conn,) = server.connections
    return conn.subscriptions


@contextlib.contextmanager
def abandoned_subscribe(server: HoldingServer) -> Iterator[tuple[LeapClient, EventChannel[Any]]]:
    """A connected client (and its channel events) whose ``subscribe("room")`` timed out
    (``LeapTimeoutError``) while the server held its answer (``server.hold = 1``)."""
    server.hold = 1
    with LeapClient(PROJECT, TOKEN, url=server.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=0.5)
        yield client, events


def _steady(delay: float) -> Backoff:
    return Backoff(base=delay, cap=delay, uniform=lambda low, high: high)


def test_a_retry_after_a_subscribe_the_server_never_answered_is_answered(server: HoldingServer) -> None:
    server.hold, server.lose = 1, True
    with LeapClient(PROJECT, TOKEN, url=server.url) as client:
        client.connect(wait=True, timeout=5)
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=0.5)
        assert client.subscriptions == ()
        assert _server_subscriptions(server) == frozenset()
        # the retry is answered (before the fix it took the lost request's place and
        # timed out, as did every later retry)
        assert client.subscribe("room", timeout=5).id == "room"
        assert client.subscriptions == ("room",)
        assert _server_subscriptions(server) == {"room"}
        assert client.subscribe("room", timeout=5).id == "room"  # and so is the next one
        assert client.subscribe("other", timeout=5).id == "other"
        assert client.subscriptions == ("room", "other")
        assert _server_subscriptions(server) == {"room", "other"}


def test_a_late_answer_to_an_abandoned_subscribe_is_the_servers_word(server: HoldingServer) -> None:
    with abandoned_subscribe(server) as (client, events):
        assert client.subscriptions == ()
        server.release_held()  # the server subscribes after all, and says so
        event = events.get(timeout=5)
        assert isinstance(event, AvailableEvent) and event.channel_id == "room"
        assert client.subscriptions == ("room",)
        assert _server_subscriptions(server) == {"room"}


def test_a_retry_while_the_abandoned_request_is_still_in_flight(server: HoldingServer) -> None:
    with abandoned_subscribe(server) as (client, events):
        assert client.subscribe("room", timeout=5).id == "room"  # answered at once
        server.release_held()  # then the first request's answer: a push, same word
        event = events.get(timeout=5)
        assert isinstance(event, AvailableEvent) and event.channel_id == "room"
        assert client.subscriptions == ("room",)
        assert _server_subscriptions(server) == {"room"}


def test_a_late_subscribe_answer_after_unsubscribe_follows_the_server(server: HoldingServer) -> None:
    with abandoned_subscribe(server) as (client, events):
        client.unsubscribe("room")
        gone = events.get(timeout=5)
        assert isinstance(gone, UnavailableEvent) and gone.graceful
        assert client.subscriptions == ()
        server.release_held()  # the server acts on the held SUBSCRIBE last: subscribed
        late = events.get(timeout=5)
        assert isinstance(late, AvailableEvent)
        assert client.subscriptions == ("room",)
        assert _server_subscriptions(server) == {"room"}


def test_unsubscribe_while_disconnected_changes_nothing(server: HoldingServer) -> None:
    recorder = StateRecorder()
    with LeapClient(PROJECT, url=server.url, backoff=_steady(1.0)) as client:  # tokenless
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=5)
        client.subscribe("room", timeout=5)
        server.disconnect(4000)
        recorder.wait_for(lambda infos: infos[-1].connection_state is not CONNECTED)
        with pytest.raises(LeapConnectionError, match="not connected"):
            client.unsubscribe("room")
        assert client.subscriptions == ("room",)  # before the fix: () and never re-subscribed
        recorder.wait_count(CONNECTED, 2)
        server.wait_for(lambda s: len(s.connections) == 1 and s.connections[0].subscriptions == {"room"})
        server.publish("room", "chat", {"n": 1})
        assert messages.get(timeout=5).data == {"n": 1}
        assert client.subscriptions == ("room",)


def test_subscribe_while_disconnected_changes_nothing(server: HoldingServer) -> None:
    recorder = StateRecorder()
    with LeapClient(PROJECT, url=server.url, backoff=_steady(1.0)) as client:
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=5)
        server.disconnect(4000)
        recorder.wait_for(lambda infos: infos[-1].connection_state is not CONNECTED)
        with pytest.raises(LeapConnectionError, match="not connected"):
            client.subscribe("room", timeout=5)
        assert client.subscriptions == ()
        recorder.wait_count(CONNECTED, 2)
        client.subscribe("other", timeout=5)  # a marker: the connection is serving calls
        assert client.subscriptions == ("other",)
        assert _server_subscriptions(server) == {"other"}


def test_an_unsubscribe_the_server_never_read_is_not_undone_by_the_reconnect(server: HoldingServer) -> None:
    recorder = StateRecorder()
    with LeapClient(PROJECT, TOKEN, url=server.url, backoff=_steady(0.05)) as client:
        client.add_state_update_listener(recorder)
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        client.subscribe("room", timeout=5)
        client.subscribe("other", timeout=5)
        server.silence()  # the server reads nothing more on this connection
        client.unsubscribe("room")  # returns: written to the socket
        assert client.subscriptions == ("other",)
        server.disconnect(4000)
        recorder.wait_count(CONNECTED, 2)
        # the token's session kept "room" (INIT lists it): the client unsubscribes again
        # instead of taking it back (before the fix: subscriptions said "room" again)
        server.wait_for(lambda s: len(s.connections) == 1 and s.connections[0].subscriptions == {"other"})
        gone = events.get(timeout=5)
        assert isinstance(gone, UnavailableEvent) and gone.channel_id == "room" and gone.graceful
        assert client.subscriptions == ("other",)


def test_an_answer_to_the_resubscription_never_undoes_an_unsubscribe_that_returned() -> None:
    """The reconnect re-subscribes "room"; the user's unsubscribe() returns while that
    SUBSCRIBE is unanswered; the server then answers AVAILABLE (to the SUBSCRIBE) and
    UNAVAILABLE (to the UNSUBSCRIBE). Between the two, ``subscriptions`` must not say
    "room" again."""
    resubscribed = threading.Event()
    unsubscribed = threading.Event()
    seen: list[dict[str, Any]] = []

    def first(peer: Peer) -> None:
        leap_session(peer, cid="c1", scope="noauth")
        request = peer.read_json()
        assert request["d"]["e"] == "SUBSCRIBE"
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.stop.wait(0.2)
        peer.close(4000)
        peer.drain(2)

    def second(peer: Peer) -> None:
        leap_session(peer, cid="c2", scope="noauth")  # a tokenless session starts empty
        seen.append(peer.read_json())  # the re-subscription
        resubscribed.set()
        seen.append(peer.read_json())  # the user's UNSUBSCRIBE
        unsubscribed.wait(5)
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.message("marker", "after-available", 1)
        peer.stop.wait(0.5)
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True, "error_code": None}}})
        peer.message("marker", "after-unavailable", 2)
        peer.drain(5)

    with HostileServer([first, second]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, url=hostile.url, backoff=_steady(0.05)) as client:
            client.add_state_update_listener(recorder)
            messages = client.message_event_channel()
            client.connect(wait=True, timeout=5)
            assert client.subscribe("room", timeout=5).id == "room"
            assert resubscribed.wait(10)
            client.unsubscribe("room")
            unsubscribed.set()
            assert client.subscriptions == ()
            assert messages.get(timeout=5).event_name == "after-available"
            assert client.subscriptions == ()  # before the fix: ("room",) until the UNAVAILABLE
            assert messages.get(timeout=5).event_name == "after-unavailable"
            assert client.subscriptions == ()
        assert [(f["d"]["e"], f["d"]["c"]) for f in seen] == [("SUBSCRIBE", "room"), ("UNSUBSCRIBE", "room")]
        assert hostile.errors == []


def _channel(channel_id: str) -> dict[str, Any]:
    return {"id": channel_id, "project_id": PROJECT, "state": {}, "type": "unprotected"}


@pytest.mark.parametrize("call", ["send_message", "set_channel_state"])
def test_a_refused_message_never_answers_a_later_subscribe(call: str) -> None:
    """MESSAGE (or SET_CHANNEL_STATE) to a channel this client is not subscribed to,
    then SUBSCRIBE; the server refuses the first (UNAVAILABLE UNKNOWN) and grants the
    second (AVAILABLE), in that order, after reading both."""

    def script(peer: Peer) -> None:
        leap_session(peer, cid="c1", scope="noauth")
        assert peer.read_json()["d"]["e"] in ("MESSAGE", "SET_CHANNEL_STATE")
        assert peer.read_json()["d"]["e"] == "SUBSCRIBE"
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": False, "error_code": "UNKNOWN"}}})
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.drain(5)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        if call == "send_message":
            client.send_message("room", "chat", {"n": 1})
        else:
            client.set_channel_state("room", {"topic": "x"})
        # before the fix: ChannelUnavailableError(UNKNOWN), then subscriptions said "room"
        assert client.subscribe("room", timeout=5).id == "room"
        assert client.subscriptions == ("room",)
        refused = events.get(timeout=5)
        assert isinstance(refused, UnavailableEvent) and refused.error_code == "UNKNOWN"
        assert events.qsize() == 0
        assert hostile.errors == []


def test_many_refused_messages_never_answer_a_later_subscribe() -> None:
    """100 MESSAGEs to a channel this client is not subscribed to, then SUBSCRIBE: the
    server refuses the 100 (UNAVAILABLE UNKNOWN) and grants the SUBSCRIBE. Before the
    fix only 64 refusals were expected and the 65th failed the subscribe()."""

    def script(peer: Peer) -> None:
        leap_session(peer, cid="c1", scope="noauth")
        assert [peer.read_json()["d"]["e"] for _ in range(101)] == ["MESSAGE"] * 100 + ["SUBSCRIBE"]
        for _ in range(100):
            peer.json(
                {"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": False, "error_code": "UNKNOWN"}}}
            )
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.drain(5)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        for n in range(100):
            client.send_message("room", "chat", n)
        assert client.subscribe("room", timeout=5).id == "room"
        assert client.subscriptions == ("room",)
        refusals = [events.get(timeout=5) for _ in range(100)]
        assert all(isinstance(e, UnavailableEvent) and e.error_code == "UNKNOWN" for e in refusals)
        assert events.qsize() == 0
        assert hostile.errors == []


def test_the_refusal_of_a_message_sent_while_subscribed_never_answers_a_later_subscribe() -> None:
    """INIT lists "room"; the server drops it (a graceful UNAVAILABLE push, in flight)
    while a MESSAGE and then a SUBSCRIBE are on their way: it answers the push, the
    MESSAGE's refusal (UNKNOWN), then AVAILABLE. Before the fix a MESSAGE sent while
    subscribed expected no refusal, and the refusal failed the subscribe()."""

    def script(peer: Peer) -> None:
        leap_session(peer, channels=["room"], cid="c1", scope="noauth")
        assert [peer.read_json()["d"]["e"] for _ in range(2)] == ["MESSAGE", "SUBSCRIBE"]
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True}}})
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": False, "error_code": "UNKNOWN"}}})
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.drain(5)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        assert client.subscriptions == ("room",)
        client.send_message("room", "chat", 1)
        assert client.subscribe("room", timeout=5).id == "room"
        assert client.subscriptions == ("room",)
        pushed, refused = events.get(timeout=5), events.get(timeout=5)
        assert isinstance(pushed, UnavailableEvent) and pushed.graceful
        assert isinstance(refused, UnavailableEvent) and refused.error_code == "UNKNOWN"
        assert events.qsize() == 0
        assert hostile.errors == []


def test_a_message_before_subscribing_against_the_embedded_server(server: HoldingServer) -> None:
    with LeapClient(PROJECT, url=server.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        for _ in range(20):  # the refusal races the SUBSCRIBE: either order must hold
            client.send_message("room", "chat", 1)
            assert client.subscribe("room", timeout=5).id == "room"
            assert client.subscriptions == ("room",)
            assert _server_subscriptions(server) == {"room"}
            refused = events.get(timeout=5)
            assert isinstance(refused, UnavailableEvent) and refused.error_code == "UNKNOWN"
            client.unsubscribe("room")
            gone = events.get(timeout=5)
            assert isinstance(gone, UnavailableEvent) and gone.graceful
            assert client.subscriptions == ()
        server.wait_for(lambda s: s.connections[0].subscriptions == frozenset())


def _answers(session: ClientSession, *events: Any) -> list[int | None]:
    """The request each event answers (``None``: a push)."""
    result = session.receive([Codec("json").encode(frames.server_frame(e)) for e in events], 1.0)
    assert result.error is None
    return [e.request if isinstance(e, Answer) else None for e in result.events]


def test_session_matching_rules() -> None:
    """The sans-I/O rules behind the tests above (ClientSession)."""
    codec = Codec("json")
    session = ClientSession(PROJECT, None, codec)
    session.receive([codec.encode(frames.hello(30000)), codec.encode(frames.server_frame(_INIT))], 0.0)
    available = AvailableEvent("room", Channel("room", PROJECT))
    unknown = UnavailableEvent("room", False, "UNKNOWN")
    graceful = UnavailableEvent("room", True, None)
    # a released SUBSCRIBE is an orphan: the first AVAILABLE goes to the retry, the
    # next one to the orphan (an answer, not a push)
    lost = session.expect_answer("room", True)
    retry = session.expect_answer("room", True)
    assert session.release("room", lost)
    assert not session.release("room", lost)
    assert _answers(session, available, available) == [retry, lost]
    # a refusal while an orphan is outstanding is the orphan's; the retry takes the next
    lost = session.expect_answer("room", True)
    retry = session.expect_answer("room", True)
    assert session.release("room", lost)
    assert _answers(session, UnavailableEvent("room", False, "NOT_GRANTED"), available) == [lost, retry]
    # an orphan's answer with no live SUBSCRIBE behind it is still its answer
    lost = session.expect_answer("room", True)
    session.release("room", lost)
    unsubscribe = session.expect_answer("room", False)
    assert _answers(session, available) == [lost]
    assert _answers(session, graceful) == [unsubscribe]
    # a refusable frame's refusal never answers the SUBSCRIBE behind it
    message = session.expect_refusal("room")
    subscribe = session.expect_answer("room", True)
    assert _answers(session, unknown, available) == [message, subscribe]
    # frames behind a SUBSCRIBE that succeeds are accepted: the next UNKNOWN is the
    # next SUBSCRIBE's
    subscribe = session.expect_answer("room", True)
    session.expect_refusal("room")
    assert _answers(session, available) == [subscribe]
    again = session.expect_answer("room", True)
    assert _answers(session, unknown) == [again]
    # a graceful UNAVAILABLE answers an UNSUBSCRIBE, skipping accepted frames, never
    # when a SUBSCRIBE waits first
    session.expect_refusal("room")
    unsubscribe = session.expect_answer("room", False)
    assert _answers(session, graceful) == [unsubscribe]
    subscribe = session.expect_answer("room", True)
    session.expect_answer("room", False)
    assert _answers(session, graceful) == [None]
    assert _answers(session, available) == [subscribe]
    # consecutive refusable frames are counted, however many: each refusal is one
    # of theirs, never the SUBSCRIBE's behind them
    numbers = {session.expect_refusal("busy") for _ in range(100)}
    subscribe = session.expect_answer("busy", True)
    busy_unknown = UnavailableEvent("busy", False, "UNKNOWN")
    busy_available = AvailableEvent("busy", Channel("busy", PROJECT))
    assert _answers(session, *[busy_unknown] * 100, busy_available) == [*[numbers.pop()] * 100, subscribe]


_INIT = InitEvent("c1", 1, None, "noauth", ())


def test_an_unsubscribe_never_written_changes_nothing() -> None:
    """The connection ends (a peer that stopped reading, ``send_timeout``) while the
    UNSUBSCRIBE waits behind a large message: ``unsubscribe()`` raises, the channel is
    still subscribed, and the next (tokenless) connection re-subscribes it."""
    second_got: list[dict[str, Any]] = []

    def stops_reading(peer: Peer) -> None:
        leap_session(peer, cid="c1", scope="noauth")
        assert peer.read_json()["d"]["e"] == "SUBSCRIBE"
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.wait()  # reads nothing more

    def serves(peer: Peer) -> None:
        leap_session(peer, cid="c2", scope="noauth")
        second_got.append(peer.read_json())
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.drain(5)

    with HostileServer([stops_reading, serves]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, url=hostile.url, send_timeout=1.0, backoff=_steady(0.5)) as client:
            client.add_state_update_listener(recorder)
            events = client.channel_event_channel()
            client.connect(wait=True, timeout=5)
            assert client.subscribe("room", timeout=5).id == "room"
            queued = threading.Event()
            unsubscribed = client._handler.unsubscribed

            def recording(*args: Any) -> Any:
                try:
                    return unsubscribed(*args)
                finally:
                    queued.set()

            client._handler.unsubscribed = recording  # type: ignore[method-assign]
            flooding = threading.Event()
            sending = client._handler.sending

            def recording_send(*args: Any) -> None:
                sending(*args)
                flooding.set()  # the big frame is queued right after, under the same lock

            client._handler.sending = recording_send  # type: ignore[method-assign]
            big: list[BaseException] = []

            def flood() -> None:
                try:
                    client.send_message("room", "big", "x" * (64 << 20))
                except LeapConnectionError as exc:
                    big.append(exc)

            flooder = threading.Thread(target=flood, name="test-flood", daemon=True)
            flooder.start()
            assert flooding.wait(10)
            with pytest.raises(LeapConnectionError):
                client.unsubscribe("room")
            assert queued.is_set()  # it was queued, then never written
            assert client.subscriptions == ("room",)  # before the fix: ()
            flooder.join(10)
            assert len(big) == 1
            recorder.wait_count(CONNECTED, 2)
            assert isinstance(events.get(timeout=5), AvailableEvent)  # the re-subscription's answer
            assert client.subscriptions == ("room",)
        assert [(f["d"]["e"], f["d"]["c"]) for f in second_got] == [("SUBSCRIBE", "room")]
        assert hostile.errors == []


def _frames_of(peer: Peer, count: int) -> list[tuple[str, str]]:
    """The next ``count`` dispatch frames ``peer`` reads: ``(event, channel)``."""
    got = []
    while len(got) < count:
        frame = peer.read_json()
        if frame.get("op") == 0:
            got.append((frame["d"]["e"], frame["d"]["c"]))
    return got


def _calls_behind_a_flood(
    calls: list[str], *, subscribed_first: bool, first_channels: list[str], second_channels: list[str]
) -> tuple[list[str], tuple[str, ...], list[tuple[str, str]], Any]:
    """Connection 1 (INIT listing ``first_channels``; ``subscribed_first``: the client
    subscribes "room" and the server grants it) stops reading; a 64 MiB message fills
    the socket; then each of ``calls`` ("subscribe"/"unsubscribe" of "room") is made
    from its own thread and queued behind it, in order; then the server resets the
    connection: no frame of theirs was written. Connection 2 (INIT listing
    ``second_channels``) reads the first frame the client sends and answers it.
    Returns what each call raised, the subscriptions after that answer, connection 2's
    frames, and the answer event the client delivered."""
    go = threading.Event()
    second_got: list[tuple[str, str]] = []

    def stops_reading(peer: Peer) -> None:
        leap_session(peer, channels=first_channels, cid="c1")
        if subscribed_first:
            assert _frames_of(peer, 1) == [("SUBSCRIBE", "room")]
            peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        go.wait(20)  # reads nothing more
        peer.reset()

    def serves(peer: Peer) -> None:
        leap_session(peer, channels=second_channels, cid="c2")
        second_got.extend(_frames_of(peer, 1))
        if second_got == [("SUBSCRIBE", "room")]:
            peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        else:
            peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True}}})
        peer.drain(5)

    with HostileServer([stops_reading, serves]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, TOKEN, url=hostile.url, send_timeout=30.0, backoff=_steady(0.2)) as client:
            client.add_state_update_listener(recorder)
            events = client.channel_event_channel()
            client.connect(wait=True, timeout=5)
            if subscribed_first:
                assert client.subscribe("room", timeout=5).id == "room"
            registered = threading.Semaphore(0)
            handler = client._handler
            subscribing, unsubscribed, sending = handler.subscribing, handler.unsubscribed, handler.sending

            def on_subscribing(*args: Any) -> Any:
                try:
                    return subscribing(*args)
                finally:
                    registered.release()

            def on_unsubscribed(*args: Any) -> Any:
                try:
                    return unsubscribed(*args)
                finally:
                    registered.release()

            def on_sending(*args: Any) -> None:
                sending(*args)
                registered.release()  # the big frame is queued right after, under the same lock

            handler.subscribing = on_subscribing  # type: ignore[method-assign]
            handler.unsubscribed = on_unsubscribed  # type: ignore[method-assign]
            handler.sending = on_sending  # type: ignore[method-assign]
            outcomes: list[str] = ["?"] * len(calls)

            def flood() -> None:
                with contextlib.suppress(LeapConnectionError):
                    client.send_message("room", "big", "x" * (64 << 20))

            def call(index: int, name: str) -> None:
                try:
                    if name == "subscribe":
                        client.subscribe("room", timeout=20)
                    else:
                        client.unsubscribe("room")
                    outcomes[index] = "returned"
                except LeapError as exc:
                    outcomes[index] = type(exc).__name__

            threads = [threading.Thread(target=flood, name="test-flood", daemon=True)]
            threads += [threading.Thread(target=call, args=(i, n), name=f"test-{n}") for i, n in enumerate(calls)]
            for thread in threads:
                thread.start()
                assert registered.acquire(timeout=10)  # queued, in this order
            go.set()
            for thread in threads:
                thread.join(30)
            recorder.wait_count(CONNECTED, 2)
            answer = events.get(timeout=5)
            subscriptions = client.subscriptions
        assert hostile.errors == []
    return outcomes, subscriptions, second_got, answer


def test_a_failed_subscribe_never_cancels_an_unsubscribe_that_returned() -> None:
    """unsubscribe("room") returns (the server never reads it), then subscribe("room")
    fails (never written); connection 2's INIT still lists "room": the client
    unsubscribes it again. Before the fix the failed subscribe() had cancelled the
    unsubscribe: "room" kept, no UNSUBSCRIBE."""
    go = threading.Event()
    second_got: list[tuple[str, str]] = []

    def stops_reading(peer: Peer) -> None:
        leap_session(peer, channels=["room"], cid="c1")
        go.wait(20)  # reads nothing more: the UNSUBSCRIBE stays unread
        peer.reset()

    def serves(peer: Peer) -> None:
        leap_session(peer, channels=["room"], cid="c2")
        second_got.extend(_frames_of(peer, 1))
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True}}})
        peer.drain(5)

    with HostileServer([stops_reading, serves]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, TOKEN, url=hostile.url, send_timeout=30.0, backoff=_steady(0.2)) as client:
            client.add_state_update_listener(recorder)
            events = client.channel_event_channel()
            client.connect(wait=True, timeout=5)
            client.unsubscribe("room")
            assert client.subscriptions == ()
            queued = threading.Semaphore(0)
            handler = client._handler
            subscribing, sending = handler.subscribing, handler.sending

            def on_subscribing(*args: Any) -> Any:
                try:
                    return subscribing(*args)
                finally:
                    queued.release()

            def on_sending(*args: Any) -> None:
                sending(*args)
                queued.release()

            handler.subscribing = on_subscribing  # type: ignore[method-assign]
            handler.sending = on_sending  # type: ignore[method-assign]
            raised: list[BaseException] = []

            def flood() -> None:
                with contextlib.suppress(LeapConnectionError):
                    client.send_message("room", "big", "x" * (64 << 20))

            def subscribe() -> None:
                try:
                    client.subscribe("room", timeout=20)
                except LeapError as exc:
                    raised.append(exc)

            threads = [threading.Thread(target=f, name="test-call", daemon=True) for f in (flood, subscribe)]
            for thread in threads:
                thread.start()
                assert queued.acquire(timeout=10)
            go.set()
            for thread in threads:
                thread.join(30)
            assert [type(e) for e in raised] == [LeapConnectionError]
            recorder.wait_count(CONNECTED, 2)
            gone = events.get(timeout=5)
            assert isinstance(gone, UnavailableEvent) and gone.graceful
            assert client.subscriptions == ()  # before the fix: ("room",)
        assert second_got == [("UNSUBSCRIBE", "room")]  # before the fix: nothing was sent
        assert hostile.errors == []


@pytest.mark.parametrize("calls", [["unsubscribe", "subscribe"], ["unsubscribe", "unsubscribe"]])
def test_calls_that_all_fail_change_nothing(calls: list[str]) -> None:
    """ "room" subscribed (a tokenless session); two calls of it ("unsubscribe" then
    "subscribe", or two "unsubscribe") are queued behind a message that fills the
    socket and the connection ends before either is written: both raise, "room" stays
    subscribed and is re-subscribed on connection 2. Before the fix "room" was lost."""
    outcomes, subscriptions, second_got, answer = _calls_behind_a_flood(
        calls, subscribed_first=True, first_channels=[], second_channels=[]
    )
    assert outcomes == ["LeapConnectionError", "LeapConnectionError"]
    assert second_got == [("SUBSCRIBE", "room")]
    assert isinstance(answer, AvailableEvent)
    assert subscriptions == ("room",)


def test_an_available_push_after_an_unanswered_unsubscribe_is_the_servers_word() -> None:
    """unsubscribe("room"): the server reads it and never answers (allowed); then it
    pushes AVAILABLE "room" (a connection of the same session subscribed it): the
    client lists "room", and after a reconnect whose INIT lists it, keeps it (no
    UNSUBSCRIBE: the next frame is the next call's). Before the fix the push was
    ignored and connection 2 was sent UNSUBSCRIBE "room"."""
    go = threading.Event()
    first_got: list[tuple[str, str]] = []
    second_got: list[tuple[str, str]] = []

    def unanswered(peer: Peer) -> None:
        leap_session(peer, channels=["room"], cid="c1")
        first_got.extend(_frames_of(peer, 1))
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        go.wait(20)
        peer.reset()

    def serves(peer: Peer) -> None:
        leap_session(peer, channels=["room"], cid="c2")
        second_got.extend(_frames_of(peer, 1))
        peer.json({"op": 0, "d": {"c": "other", "e": "AVAILABLE", "d": {"channel": _channel("other")}}})
        peer.drain(5)

    with HostileServer([unanswered, serves]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, TOKEN, url=hostile.url, backoff=_steady(0.2)) as client:
            client.add_state_update_listener(recorder)
            events = client.channel_event_channel()
            client.connect(wait=True, timeout=5)
            client.unsubscribe("room")
            pushed = events.get(timeout=5)
            assert isinstance(pushed, AvailableEvent) and pushed.channel_id == "room"
            assert client.subscriptions == ("room",)  # before the fix: ()
            go.set()
            recorder.wait_count(CONNECTED, 2)
            assert client.subscribe("other", timeout=5).id == "other"
            assert client.subscriptions == ("room", "other")
        assert first_got == [("UNSUBSCRIBE", "room")]
        assert second_got == [("SUBSCRIBE", "other")]  # before the fix: UNSUBSCRIBE "room" first
        assert hostile.errors == []


def _refusal(channel_id: str, code: str) -> dict[str, Any]:
    return {"op": 0, "d": {"c": channel_id, "e": "UNAVAILABLE", "d": {"graceful": False, "error_code": code}}}


def _available(channel_id: str) -> dict[str, Any]:
    return {"op": 0, "d": {"c": channel_id, "e": "AVAILABLE", "d": {"channel": _channel(channel_id)}}}


def test_a_retry_is_not_handed_the_abandoned_requests_late_refusal() -> None:
    """subscribe("room") times out; the retry's SUBSCRIBE follows; the server answers
    both, in order: NOT_GRANTED (the first), AVAILABLE (the retry). The retry returns
    the channel (before the fix it raised NOT_GRANTED while the channel ended
    subscribed)."""

    def script(peer: Peer) -> None:
        leap_serve(peer)
        assert _frames_of(peer, 2) == [("SUBSCRIBE", "room"), ("SUBSCRIBE", "room")]
        peer.json(_refusal("room", "NOT_GRANTED"))
        peer.json(_available("room"))
        peer.drain(5)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=0.5)
        assert client.subscribe("room", timeout=5).id == "room"
        refused = events.get(timeout=5)  # the abandoned request's answer, nobody's call
        assert isinstance(refused, UnavailableEvent) and refused.error_code == "NOT_GRANTED"
        assert client.subscriptions == ("room",)
        assert hostile.errors == []


def test_a_retry_whose_abandoned_request_is_never_answered_reports_the_refusal() -> None:
    """subscribe("room") times out (the server never answers it); the retry's SUBSCRIBE
    is refused NOT_GRANTED: the refusal is taken for the abandoned request's, the
    retry waits on for another answer, and at its timeout raises that refusal."""

    def script(peer: Peer) -> None:
        leap_serve(peer)
        assert _frames_of(peer, 2) == [("SUBSCRIBE", "room"), ("SUBSCRIBE", "room")]
        peer.json(_refusal("room", "NOT_GRANTED"))
        peer.drain(5)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        client.connect(wait=True, timeout=5)
        with pytest.raises(LeapTimeoutError):
            client.subscribe("room", timeout=0.5)
        with pytest.raises(ChannelUnavailableError) as refused:
            client.subscribe("room", timeout=1.0)
        assert refused.value.error_code == "NOT_GRANTED" and not refused.value.graceful
        assert client.subscriptions == ()
        assert hostile.errors == []


def test_a_late_answer_to_an_abandoned_subscribe_never_undoes_a_later_unsubscribe() -> None:
    """subscribe("room") times out; unsubscribe("room") returns; the server then answers
    the SUBSCRIBE (AVAILABLE: it was read before the UNSUBSCRIBE, which the server acts
    on after it and, as it may, never answers) and drops the connection. The late
    AVAILABLE is the abandoned request's answer, not a push: ``subscriptions`` stays
    empty and connection 2 is not sent SUBSCRIBE "room" (before the fix it was: the
    returned unsubscribe() was undone)."""
    go = threading.Event()
    second_got: list[tuple[str, str]] = []

    def first(peer: Peer) -> None:
        leap_serve(peer)
        assert _frames_of(peer, 2) == [("SUBSCRIBE", "room"), ("UNSUBSCRIBE", "room")]
        peer.json(_available("room"))
        peer.message("marker", "after-available", 1)
        go.wait(20)
        peer.reset()

    def second(peer: Peer) -> None:
        leap_serve(peer)
        second_got.extend(_frames_of(peer, 1))
        peer.json(_available("other"))
        peer.drain(5)

    with HostileServer([first, second]) as hostile:
        recorder = StateRecorder()
        with LeapClient(PROJECT, url=hostile.url, backoff=_steady(0.2)) as client:
            client.add_state_update_listener(recorder)
            messages = client.message_event_channel()
            client.connect(wait=True, timeout=5)
            with pytest.raises(LeapTimeoutError):
                client.subscribe("room", timeout=0.5)
            client.unsubscribe("room")
            assert messages.get(timeout=5).event_name == "after-available"
            assert client.subscriptions == ()  # before the fix: ("room",)
            go.set()
            recorder.wait_count(CONNECTED, 2)
            assert client.subscribe("other", timeout=5).id == "other"
            assert client.subscriptions == ("other",)
        assert second_got == [("SUBSCRIBE", "other")]  # before the fix: SUBSCRIBE "room" first
        assert hostile.errors == []


def leap_serve(peer: Peer) -> None:
    """Upgrade, Hello, Identify, an empty tokenless INIT."""
    leap_session(peer, cid="c1", scope="noauth")


def _next_dispatch(peer: Peer, beats: list[int]) -> tuple[str, str]:
    """The next dispatch frame ``(event, channel)``, acknowledging heartbeats on the
    way (counted in ``beats``)."""
    while True:
        frame = peer.read_json()
        if frame.get("op") == 3:
            peer.json({"op": 4})
            beats.append(1)
        elif frame.get("op") == 0:
            return frame["d"]["e"], frame["d"]["c"]


def test_a_heartbeat_acknowledged_after_a_message_fences_its_refusal() -> None:
    """subscribe("room") (granted), send_message("room") (accepted: no answer), then the
    server acknowledges a heartbeat written after the message, and the channel goes
    away; subscribe("room") is refused UNAVAILABLE UNKNOWN. The message can no longer
    be refused (a refusal would have come before the acknowledgement): the refusal is
    the call's, raised at once (before the fix the message still counted as in flight
    and took the refusal: the call waited its whole timeout)."""
    beats: list[int] = []
    acked = threading.Event()

    def script(peer: Peer) -> None:
        leap_session(peer, 200, cid="c1", scope="noauth")
        assert _next_dispatch(peer, beats) == ("SUBSCRIBE", "room")
        peer.json(_available("room"))
        assert _next_dispatch(peer, beats) == ("MESSAGE", "room")
        del beats[:]
        while not beats:  # a heartbeat written after the message, acknowledged
            frame = peer.read_json()
            if frame.get("op") == 3:
                peer.json({"op": 4})
                beats.append(1)
        peer.json({"op": 0, "d": {"c": "room", "e": "UNAVAILABLE", "d": {"graceful": True, "error_code": None}}})
        acked.set()
        assert _next_dispatch(peer, beats) == ("SUBSCRIBE", "room")
        peer.json(_refusal("room", "UNKNOWN"))
        with contextlib.suppress(Exception):  # keep acknowledging until the client leaves
            while not peer.stop.is_set():
                _next_dispatch(peer, beats)

    with HostileServer(script) as hostile, LeapClient(PROJECT, url=hostile.url) as client:
        events = client.channel_event_channel()
        client.connect(wait=True, timeout=5)
        assert client.subscribe("room", timeout=5).id == "room"
        client.send_message("room", "chat", {"n": 1})
        assert acked.wait(10)
        gone = events.get(timeout=5)  # (after the acknowledgement, in wire order)
        assert isinstance(gone, UnavailableEvent) and gone.graceful
        with pytest.raises(ChannelUnavailableError) as refused:
            client.subscribe("room", timeout=3)
        assert refused.value.error_code == "UNKNOWN"
        assert events.qsize() == 0  # before the fix: the refusal went there, as the message's
        assert client.subscriptions == ()
        assert hostile.errors == []


def test_an_answer_to_a_later_request_of_another_channel_fences_a_message() -> None:
    """The sans-I/O rule: an answer to a request queued after a refusable frame, on any
    channel, settles that frame (accepted)."""
    codec = Codec("json")
    session = ClientSession(PROJECT, None, codec)
    session.receive([codec.encode(frames.hello(30000)), codec.encode(frames.server_frame(_INIT))], 0.0)
    session.expect_refusal("room")
    other = session.expect_answer("other", True)
    subscribe = session.expect_answer("room", True)
    assert _answers(session, AvailableEvent("other", Channel("other", PROJECT))) == [other]
    assert _answers(session, UnavailableEvent("room", False, "UNKNOWN")) == [subscribe]
