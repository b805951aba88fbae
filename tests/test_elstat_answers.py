"""ElstatClient: a caller that gives up frees its place in reply matching, two calls
naming one channel each get the right answer whatever order the server answers in, and
a call that fails changes nothing (issue 16, kinds 4 and 5).

Each test states what every call returned or raised, what ``client.subscriptions``
says and what the server has (``ElstatServer.connections[...].subscriptions``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from clientkit import StateRecorder

from leap_sync import Backoff, ConnectionState, LeapConnectionError, LeapTimeoutError
from leap_sync.elstat import ElstatClient, Op
from leap_sync.elstat.protocol import Reply
from leap_sync.elstat.session import ElstatSession
from leap_sync.testing import ElstatServer

CONNECTED = ConnectionState.CONNECTED
A, B, C = "status:a", "status:b", "status:c"


class HoldingElstat(ElstatServer):
    """An Elstat server that keeps the next ``hold`` requests to itself (neither acts
    on them nor answers) until :meth:`release_held`, or never (``lose=True``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold = 0
        self.lose = False
        self.held: list[tuple[Any, Any]] = []
        self.requests = 0

    def connection_request(self, conn: Any, request: Any) -> None:
        with self._lock:
            self.requests += 1
            if self.hold > 0:
                self.hold -= 1
                if not self.lose:
                    self.held.append((conn, request))
                held = True
            else:
                held = False
        if held:
            self.connection_changed()
            return
        super().connection_request(conn, request)

    def release_held(self, *, newest_first: bool = False) -> None:
        with self._lock:
            held, self.held = self.held, []
        for conn, request in reversed(held) if newest_first else held:
            super().connection_request(conn, request)


@pytest.fixture
def elstat() -> Iterator[HoldingElstat]:
    with HoldingElstat(channels=(A, B, C)) as server:
        yield server


@pytest.fixture
def client(elstat: HoldingElstat) -> Iterator[ElstatClient]:
    client = ElstatClient(elstat.base_url, backoff=Backoff(base=0.05, cap=0.05, uniform=lambda low, high: high))
    yield client
    client.close()


def _server_subscriptions(server: ElstatServer) -> frozenset[str]:
    (conn,) = server.connections
    return conn.subscriptions


class Call(threading.Thread):
    """A subscribe() on its own thread: ``result`` or ``error`` once joined."""

    def __init__(self, client: ElstatClient, channels: list[str], timeout: float) -> None:
        super().__init__(name="test-elstat-call", daemon=True)
        self.client, self.channels, self.timeout = client, channels, timeout
        self.result: list[str] | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.client.subscribe(self.channels, timeout=self.timeout)
        except BaseException as exc:
            self.error = exc


def test_a_retry_after_a_subscribe_the_server_never_answered_is_answered(
    elstat: HoldingElstat, client: ElstatClient
) -> None:
    elstat.hold, elstat.lose = 1, True
    client.connect(wait=True, timeout=5)
    with pytest.raises(LeapTimeoutError):
        client.subscribe([A], timeout=0.5)
    assert client.subscriptions == ()
    assert client.subscribe([A], timeout=5) == [A]  # before the fix: a timeout, every time
    assert client.subscriptions == (A,)
    assert _server_subscriptions(elstat) == {A}
    assert client.subscribe([A, B], timeout=5) == [A, B]
    assert client.subscriptions == (A, B)
    assert _server_subscriptions(elstat) == {A, B}


def test_two_calls_naming_one_channel_share_its_request(elstat: HoldingElstat, client: ElstatClient) -> None:
    client.connect(wait=True, timeout=5)
    elstat.hold = 1
    first = Call(client, [A, B], 5)
    elstat.wait_for(lambda s: s.requests == 1)
    second = Call(client, [A], 5)  # A is in flight: shared, not sent again
    third = Call(client, [A, C], 5)  # A shared, C sent and answered at once
    elstat.wait_for(lambda s: s.requests == 2)
    elstat.release_held()
    for call in (first, second, third):
        call.join(10)
    assert (first.result, second.result, third.result) == ([A, B], [A], [A, C])
    assert (first.error, second.error, third.error) == (None, None, None)
    assert elstat.requests == 2  # [A, B] and [C]
    assert set(client.subscriptions) == {A, B, C}
    assert _server_subscriptions(elstat) == {A, B, C}


def test_replies_answered_out_of_order_go_to_their_calls(elstat: HoldingElstat, client: ElstatClient) -> None:
    client.connect(wait=True, timeout=5)
    elstat.hold = 1
    first = Call(client, [A, B], 5)
    elstat.wait_for(lambda s: s.requests == 1)
    assert client.subscribe([C, "status:gone"], timeout=5) == [C]  # answered before the first
    elstat.release_held()
    first.join(10)
    assert first.result == [A, B]
    assert set(client.subscriptions) == {A, B, C}
    assert _server_subscriptions(elstat) == {A, B, C}


def test_a_call_sharing_a_request_outlives_the_caller_that_sent_it(elstat: HoldingElstat, client: ElstatClient) -> None:
    client.connect(wait=True, timeout=5)
    elstat.hold = 1
    first = Call(client, [A], 0.3)
    elstat.wait_for(lambda s: s.requests == 1)
    second = Call(client, [A], 10)
    first.join(5)
    assert isinstance(first.error, LeapTimeoutError)
    assert elstat.requests == 1  # the second shares the first's request, still awaited
    elstat.release_held()
    second.join(10)
    assert second.result == [A]
    assert client.subscriptions == (A,)
    assert _server_subscriptions(elstat) == {A}


def test_a_late_reply_to_an_abandoned_request_is_the_servers_word(elstat: HoldingElstat, client: ElstatClient) -> None:
    client.connect(wait=True, timeout=5)
    elstat.hold = 1
    with pytest.raises(LeapTimeoutError):
        client.subscribe([A, B], timeout=0.3)
    assert client.subscribe([A], timeout=5) == [A]  # takes A over from the abandoned request
    assert client.subscriptions == (A,)
    elstat.release_held()  # the abandoned request's reply, [A, B]: the server subscribed both
    elstat.wait_for(lambda s: set(client.subscriptions) == {A, B})
    assert _server_subscriptions(elstat) == {A, B}


def test_unsubscribe_while_disconnected_changes_nothing(elstat: HoldingElstat) -> None:
    recorder = StateRecorder()
    with ElstatClient(elstat.base_url, backoff=Backoff(base=1.0, cap=1.0, uniform=lambda low, high: high)) as client:
        client.add_state_update_listener(recorder)
        data = client.data_channel()
        client.connect(wait=True, timeout=5)
        assert client.subscribe([A], timeout=5) == [A]
        elstat.disconnect(1011)
        recorder.wait_for(lambda infos: infos[-1].connection_state is not CONNECTED)
        with pytest.raises(LeapConnectionError, match="not connected"):
            client.unsubscribe([A])
        recorder.wait_count(CONNECTED, 2)
        elstat.wait_for(lambda s: len(s.connections) == 1 and s.connections[0].subscriptions == {A})
        elstat.push_data(A, True)
        assert data.get(timeout=5).channel == A
        assert client.subscriptions == (A,)


def test_session_shares_and_takes_over() -> None:
    """The sans-I/O rules behind the tests above."""
    session = ElstatSession(20.0, 20.0)
    first = session.expect_reply(Op.SUBSCRIBE, [A, B])
    assert session.sharing(Op.SUBSCRIBE, A) == first
    assert session.sharing(Op.UNSUBSCRIBE, A) is None
    unsub = session.expect_reply(Op.UNSUBSCRIBE, [A])
    assert session.sharing(Op.SUBSCRIBE, A) is None  # an UNSUBSCRIBE came after: send again
    assert session.sharing(Op.SUBSCRIBE, B) == first
    assert session.abandon(first)
    assert session.sharing(Op.SUBSCRIBE, B) is None
    retry = session.expect_reply(Op.SUBSCRIBE, [B])  # takes B over from the abandoned request
    result = session.receive(
        [('{"op":1,"channels":["status:b"]}', False), ('{"op":1,"channels":["status:a"]}', False)], 0.0
    )
    assert [(number, reply.channels, claimed) for number, reply, claimed in result.replies] == [
        (retry, (B,), frozenset({B})),
        (first, (A,), frozenset({A})),
    ]
    result = session.receive([('{"op":2,"channels":[]}', False), ('{"op":1,"channels":[]}', False)], 0.0)
    assert [(number, claimed) for number, _, claimed in result.replies] == [(unsub, {A}), (None, frozenset())]
    assert isinstance(result.replies[0][1], Reply)


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe"])
def test_a_call_the_connection_fails_changes_nothing(elstat: HoldingElstat, op: str) -> None:
    """The connection drops while the server holds the request: the call raises, and
    the next connection has exactly what stood before the call."""
    recorder = StateRecorder()
    with ElstatClient(elstat.base_url, backoff=Backoff(base=0.05, cap=0.05, uniform=lambda low, high: high)) as client:
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=5)
        assert client.subscribe([B], timeout=5) == [B]
        elstat.hold = 1
        call = getattr(client, op)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call([A] if op == "subscribe" else [B], timeout=10)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=run, name="test-elstat-call", daemon=True)
        thread.start()
        elstat.wait_for(lambda s: s.requests == 2)
        elstat.drop()
        thread.join(10)
        assert len(failed) == 1 and isinstance(failed[0], LeapConnectionError)
        recorder.wait_count(CONNECTED, 2)
        # before the fix: the reconnect subscribed A (a failed subscribe) or left B out
        # (a failed unsubscribe)
        elstat.wait_for(lambda s: len(s.connections) == 1 and s.connections[0].subscriptions == {B})
        elstat.wait_for(lambda s: client.subscriptions == (B,))


def test_two_calls_the_connection_fails_change_nothing(elstat: HoldingElstat) -> None:
    """subscribe([A]) then unsubscribe([A]) (A not wanted before), both held by the
    server when the connection drops: both raise LeapConnectionError, and the next
    connection is subscribed to nothing. Before the fix the unsubscribe's undo put
    back the subscribe's wish: A re-subscribed and listed."""
    recorder = StateRecorder()
    with ElstatClient(elstat.base_url, backoff=Backoff(base=0.05, cap=0.05, uniform=lambda low, high: high)) as client:
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=5)
        elstat.hold = 2
        failed: dict[str, BaseException] = {}

        def run(op: str) -> None:
            try:
                getattr(client, op)([A], timeout=10)
            except BaseException as exc:
                failed[op] = exc

        threads = []
        for count, op in enumerate(["subscribe", "unsubscribe"], 1):
            threads.append(threading.Thread(target=run, args=(op,), name="test-elstat-call", daemon=True))
            threads[-1].start()
            elstat.wait_for(lambda s, count=count: s.requests == count)  # type: ignore[misc]
        elstat.drop()
        for thread in threads:
            thread.join(10)
        assert {op: type(exc) for op, exc in failed.items()} == {
            "subscribe": LeapConnectionError,
            "unsubscribe": LeapConnectionError,
        }
        recorder.wait_count(CONNECTED, 2)
        assert client.subscribe([B], timeout=5) == [B]  # the next request: nothing came before it
        assert elstat.requests == 3  # before the fix: 4 (SUBSCRIBE [A] re-sent first)
        assert _server_subscriptions(elstat) == {B}
        assert client.subscriptions == (B,)  # before the fix: (A, B)


def test_an_empty_reply_answered_out_of_order_goes_to_a_request_it_can_answer(elstat: HoldingElstat) -> None:
    """subscribe([A]) then subscribe(["status:gone"]), both held; the server answers
    the second first (SUBSCRIBED []: nothing confirmed), then the first (SUBSCRIBED
    [A]). The empty reply is held until the wire tells whose it is: the first call
    returns [A], the second [], and A is listed. Before the fix the empty reply went
    to the oldest call: it returned [] while A was listed, and the second timed out."""
    with ElstatClient(elstat.base_url) as client:
        client.connect(wait=True, timeout=5)
        elstat.hold = 2
        first = Call(client, [A], 5)
        elstat.wait_for(lambda s: s.requests == 1)
        second = Call(client, ["status:gone"], 5)
        elstat.wait_for(lambda s: s.requests == 2)
        elstat.release_held(newest_first=True)
        first.join(10)
        second.join(10)
        assert (first.result, first.error) == ([A], None)
        assert (second.result, second.error) == ([], None)
        assert client.subscriptions == (A,)
        assert _server_subscriptions(elstat) == {A}


def test_session_holds_an_empty_reply_until_the_wire_tells() -> None:
    session = ElstatSession(20.0, 20.0)
    first = session.expect_reply(Op.SUBSCRIBE, [A])
    second = session.expect_reply(Op.SUBSCRIBE, [B])
    result = session.receive([('{"op":1,"channels":[]}', False)], 0.0)
    assert result.replies == []  # either request's: held
    result = session.receive([('{"op":1,"channels":["status:a"]}', False)], 0.0)
    assert [(number, reply.channels, claimed) for number, reply, claimed in result.replies] == [
        (first, (A,), frozenset({A})),
        (second, (), frozenset({B})),
    ]


def test_an_abandoned_request_never_holds_a_later_empty_reply(elstat: HoldingElstat, client: ElstatClient) -> None:
    """subscribe([A]) times out: the server never answers it. Later calls naming only
    channels the server does not have are answered at once with SUBSCRIBED []: each
    returns [] (before the fix the empty reply was held for the abandoned request
    too, for the whole connection: each later call timed out)."""
    elstat.hold, elstat.lose = 1, True
    client.connect(wait=True, timeout=5)
    with pytest.raises(LeapTimeoutError):
        client.subscribe([A], timeout=0.5)
    assert client.subscribe(["status:gone"], timeout=5) == []
    assert client.subscribe(["status:gone2"], timeout=5) == []
    assert client.subscribe([B], timeout=5) == [B]
    assert client.subscriptions == (B,)
    assert _server_subscriptions(elstat) == {B}


def test_session_answers_live_requests_first_past_an_abandoned_one() -> None:
    session = ElstatSession(20.0, 20.0)
    lost = session.expect_reply(Op.SUBSCRIBE, [A])
    assert session.abandon(lost)
    live = session.expect_reply(Op.SUBSCRIBE, [B])
    result = session.receive([('{"op":1,"channels":[]}', False)], 0.0)
    assert [(number, reply.channels) for number, reply, _ in result.replies] == [(live, ())]
    # the abandoned request is still pending: its late reply is still its own
    result = session.receive([('{"op":1,"channels":["status:a"]}', False)], 0.0)
    assert [(number, reply.channels) for number, reply, _ in result.replies] == [(lost, (A,))]
    # two live requests behind an abandoned one: an empty reply is held until a second
    lost = session.expect_reply(Op.SUBSCRIBE, [A])
    assert session.abandon(lost)
    first = session.expect_reply(Op.SUBSCRIBE, [B])
    second = session.expect_reply(Op.SUBSCRIBE, [C])
    assert session.receive([('{"op":1,"channels":[]}', False)], 0.0).replies == []
    result = session.receive([('{"op":1,"channels":[]}', False)], 0.0)
    assert [number for number, _, _ in result.replies] == [first, second]
