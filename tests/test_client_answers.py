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
from hostile import HostileServer, Peer, init_frame

from leap_sync import (
    AvailableEvent,
    Backoff,
    ConnectionState,
    EventChannel,
    LeapClient,
    LeapConnectionError,
    LeapTimeoutError,
    UnavailableEvent,
)
from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import Channel, InitEvent
from leap_sync.protocol.session import MAX_REFUSALS, Answer, ClientSession
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
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        peer.json(init_frame("c1", scope="noauth"))
        request = peer.read_json()
        assert request["d"]["e"] == "SUBSCRIBE"
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.stop.wait(0.2)
        peer.close(4000)
        peer.drain(2)

    def second(peer: Peer) -> None:
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        peer.json(init_frame("c2", scope="noauth"))  # a tokenless session starts empty
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
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        peer.json(init_frame("c1", scope="noauth"))
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
    # a released SUBSCRIBE frees its place: the next answer goes to the retry
    lost = session.expect_answer("room", True)
    retry = session.expect_answer("room", True)
    assert session.release("room", lost)
    assert not session.release("room", lost)
    assert _answers(session, available, available) == [retry, None]
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
    # refusable frames waiting for a refusal are bounded per channel
    numbers = [session.expect_refusal("busy") for _ in range(MAX_REFUSALS + 1)]
    assert None not in numbers[:-1] and numbers[-1] is None


_INIT = InitEvent("c1", 1, None, "noauth", ())


def test_an_unsubscribe_never_written_changes_nothing() -> None:
    """The connection ends (a peer that stopped reading, ``send_timeout``) while the
    UNSUBSCRIBE waits behind a large message: ``unsubscribe()`` raises, the channel is
    still subscribed, and the next (tokenless) connection re-subscribes it."""
    second_got: list[dict[str, Any]] = []

    def stops_reading(peer: Peer) -> None:
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        peer.json(init_frame("c1", scope="noauth"))
        assert peer.read_json()["d"]["e"] == "SUBSCRIBE"
        peer.json({"op": 0, "d": {"c": "room", "e": "AVAILABLE", "d": {"channel": _channel("room")}}})
        peer.wait()  # reads nothing more

    def serves(peer: Peer) -> None:
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        peer.json(init_frame("c2", scope="noauth"))
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
