"""The embedded Leap Edge server's connection rules, driven by a raw websocket client.

Hello with the configured interval, Identify within the identify timeout (4002),
unknown tokens (4001), dispatches before Identify (4003), unknown opcodes (4004),
malformed payloads (4005), heartbeat acks (plain and tagged) and the 4007 rules
(beats off the schedule, tagged requests left unanswered), in every encoding and
compression.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import COMBOS, PROJECT, TOKEN, RawClient, _no_server_errors, dispatch, hello, open_client, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

from leap_sync.testing import LeapEdgeServer

__all__ = ["_no_server_errors"]  # the autouse fixture, imported to apply here

Combo = tuple[str, str]


@pytest.fixture
def edge(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> Callable[..., LeapEdgeServer]:
    """``edge(**options)``: a running server with ``TOKEN`` registered in ``PROJECT``."""

    def make(**options: Any) -> LeapEdgeServer:
        server = leap_edge_server_factory(**options)
        server.add_token(TOKEN, project_id=PROJECT)
        return server

    return make


@pytest.fixture
def clients() -> Iterator[Callable[..., RawClient]]:
    """``clients(url, encoding, compression, **kw)``: raw clients closed after the test."""
    opened: list[RawClient] = []

    def make(*args: Any, **kwargs: Any) -> RawClient:
        client = RawClient(*args, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


# -- Hello and Identify ----------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(("interval", "expected_ms"), [(0.2, 200), (1.5, 1500), (30.0, 30000)])
def test_hello_is_the_first_frame_and_carries_the_configured_interval(
    edge: Callable[..., LeapEdgeServer],
    clients: Callable[..., RawClient],
    combo: Combo,
    interval: float,
    expected_ms: int,
) -> None:
    server = edge(heartbeat_interval=interval)
    client = clients(server.url, *combo)
    assert client.recv() == hello(expected_ms)


def test_defaults_are_a_30_s_interval_and_a_10_s_identify_timeout() -> None:
    server = LeapEdgeServer()
    assert server.heartbeat_interval == 30.0
    assert server.identify_timeout == 10.0


@pytest.mark.parametrize("combo", COMBOS)
def test_identify_with_a_token_answers_init(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    server.add_token("leap_token_meta", metadata={"user": "ada", "n": 1})
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.send({"op": 2, "d": {"project_id": PROJECT, "token": "leap_token_meta"}})
    (info,) = server.wait_for_connections(1)
    assert client.recv() == dispatch(
        "INIT",
        None,
        {"cid": info.cid, "connection_count": 1, "metadata": {"user": "ada", "n": 1}, "scope": "token", "channels": []},
    )
    assert info.token == "leap_token_meta" and info.project_id == PROJECT and info.identified


@pytest.mark.parametrize("combo", COMBOS)
def test_project_scoped_token_reports_scope_project(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    server.add_token("leap_token_project", scope="project")
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    init = client.identify("leap_token_project")
    assert init["scope"] == "project"
    assert init["metadata"] is None


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("omit_token", [False, True], ids=["token-null", "token-omitted"])
def test_tokenless_identify_has_scope_noauth(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, omit_token: bool
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    # The JS client omits the key (JSON.stringify drops undefined); others send null.
    client.send({"op": 2, "d": {"project_id": PROJECT} if omit_token else {"project_id": PROJECT, "token": None}})
    (info,) = server.wait_for_connections(1)
    assert client.recv() == dispatch(
        "INIT", None, {"cid": info.cid, "connection_count": 1, "metadata": None, "scope": "noauth", "channels": []}
    )
    assert info.token is None


@pytest.mark.parametrize("combo", COMBOS)
def test_identify_timeout_closes_4002(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(identify_timeout=0.3)
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    start = time.monotonic()
    code, _reason = client.expect_close(timeout=3)
    elapsed = time.monotonic() - start
    assert code == 4002
    assert 0.25 <= elapsed < 2.0
    server.wait_for(lambda s: not s.connections, timeout=5)
    assert server.all_connections[0].close_code == 4002


@pytest.mark.parametrize("combo", COMBOS)
def test_identify_in_time_is_not_closed(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(identify_timeout=0.3)
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    # Well past the identify timeout, the connection still serves events.
    wait_until(time.monotonic() + 0.6)
    (info,) = server.connections
    assert server.send_event("MARK", {"k": 1}, cid=info.cid) == 1
    assert client.recv() == dispatch("MARK", None, {"k": 1})


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(
    ("project_id", "token"),
    [
        (PROJECT, "leap_token_unknown"),
        ("project_other", TOKEN),  # a real token, presented for another project
        ("project_unknown", None),  # tokenless, in a project the server does not have
    ],
    ids=["unknown-token", "wrong-project", "tokenless-unknown-project"],
)
def test_invalid_auth_closes_4001(
    edge: Callable[..., LeapEdgeServer],
    clients: Callable[..., RawClient],
    combo: Combo,
    project_id: str,
    token: str | None,
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.send({"op": 2, "d": {"project_id": project_id, "token": token}})
    assert client.expect_close()[0] == 4001
    server.wait_for(lambda s: not s.connections, timeout=5)
    assert server.all_connections[0].close_code == 4001


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(
    "frame",
    [
        {"op": 0, "d": {"c": "room", "e": "SUBSCRIBE", "d": None}},
        {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": 1}}},
        {"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": "j"}}},
        {"op": 0, "d": {"c": None, "e": "SOMETHING_ELSE", "d": None}},
    ],
    ids=["subscribe", "message", "pipe-room-subscribe", "unknown-event"],
)
def test_dispatch_before_identify_closes_4003(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, frame: dict[str, Any]
) -> None:
    server = edge()
    server.create_channel("room")
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.send(frame)
    assert client.expect_close()[0] == 4003


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("op", [1, 4, 5, 9, 255, -1])
@pytest.mark.parametrize("identified", [False, True], ids=["before-identify", "after-identify"])
def test_unknown_opcode_closes_4004(
    edge: Callable[..., LeapEdgeServer],
    clients: Callable[..., RawClient],
    combo: Combo,
    op: int,
    identified: bool,
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    if identified:
        client.identify()
    client.send({"op": op, "d": None})
    assert client.expect_close()[0] == 4004


MALFORMED_OBJECTS = {
    "not-an-object": [0, {"c": "room"}],
    "no-op": {"d": {"c": "room", "e": "SUBSCRIBE", "d": None}},
    "op-not-int": {"op": "0", "d": {"c": "room", "e": "SUBSCRIBE", "d": None}},
    "op-bool": {"op": True, "d": None},
    "dispatch-d-not-object": {"op": 0, "d": "SUBSCRIBE"},
    "dispatch-no-event": {"op": 0, "d": {"c": "room", "d": None}},
    "dispatch-event-not-string": {"op": 0, "d": {"c": "room", "e": 7, "d": None}},
    "subscribe-channel-not-string": {"op": 0, "d": {"c": 5, "e": "SUBSCRIBE", "d": None}},
    "subscribe-no-channel": {"op": 0, "d": {"c": None, "e": "SUBSCRIBE", "d": None}},
    "message-no-event-name": {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"d": 1}}},
    "message-data-not-object": {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": "hi"}},
    "state-not-object": {"op": 0, "d": {"c": "room", "e": "SET_CHANNEL_STATE", "d": [1, 2]}},
    "pipe-room-no-join-token": {"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {}}},
    "pipe-room-unsubscribe-id-not-string": {"op": 0, "d": {"c": None, "e": "PIPE_ROOM_UNSUBSCRIBE", "d": {"id": 3}}},
    "heartbeat-d-not-object": {"op": 3, "d": "tag"},
    "heartbeat-tag-not-string": {"op": 3, "d": {"tag": 12}},
    "second-identify": {"op": 2, "d": {"project_id": PROJECT, "token": TOKEN}},
    "unknown-client-event": {"op": 0, "d": {"c": "room", "e": "SHOUT", "d": None}},
}


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("case", sorted(MALFORMED_OBJECTS))
def test_malformed_frame_after_identify_closes_4005(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, case: str
) -> None:
    server = edge()
    server.create_channel("room")
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    client.send(MALFORMED_OBJECTS[case])
    assert client.expect_close()[0] == 4005


MALFORMED_IDENTIFY = {
    "no-project": {"op": 2, "d": {"token": TOKEN}},
    "project-not-string": {"op": 2, "d": {"project_id": 1, "token": TOKEN}},
    "token-not-string": {"op": 2, "d": {"project_id": PROJECT, "token": 99}},
    "d-missing": {"op": 2},
    "d-not-object": {"op": 2, "d": [PROJECT, TOKEN]},
}


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("case", sorted(MALFORMED_IDENTIFY))
def test_malformed_identify_closes_4005(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, case: str
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.send(MALFORMED_IDENTIFY[case])
    assert client.expect_close()[0] == 4005


RAW_GARBAGE: dict[str, str | bytes] = {
    "text-not-json": "{not json",
    "text-empty": "",
    "text-trailing-garbage": '{"op":3} x',
    "binary-truncated-etf": b"\x83t\x00\x00\x00\x02m\x00\x00",
    "binary-etf-trailing-bytes": b"\x83a\x01\x00",
    "binary-etf-pid": b"\x83gd\x00\rnonode@nohost\x00\x00\x00\x01\x00\x00\x00\x00\x00",
    "binary-not-utf8": b"\xff\xfe\xfd",
    "binary-corrupt-zlib": b"\x78\x9c\x00\x01\x02\x03",
}


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("case", sorted(RAW_GARBAGE))
def test_undecodable_payload_closes_4005(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, case: str
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    payload = RAW_GARBAGE[case]
    if isinstance(payload, str):
        client.send_text(payload)
    else:
        client.send_binary(payload)
    assert client.expect_close()[0] == 4005


@pytest.mark.parametrize("combo", COMBOS)
def test_a_client_frame_in_either_frame_kind_is_accepted(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """Whatever the connection's encoding, JSON text and ETF binary are both decoded
    (the server decodes by content); answers still use the connection's encoding."""
    server = edge()
    server.create_channel("room")
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.send_text('{"op":2,"d":{"project_id":"project_x","token":"leap_token_x"}}')
    assert client.recv()["d"]["e"] == "INIT"
    client.send_binary(b'{"op":0,"d":{"c":"room","e":"SUBSCRIBE","d":null}}')
    assert client.recv()["d"]["e"] == "AVAILABLE"


# -- heartbeats --------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_heartbeats_on_schedule_are_acked_before_and_after_identify(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.2, identify_timeout=1.0)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    wait_until(start + 0.2)
    client.beat()
    assert client.recv() == {"op": 4}
    client.identify()
    wait_until(start + 0.4)
    client.beat()
    assert client.recv() == {"op": 4}
    (info,) = server.connections
    assert info.heartbeats == 2
    assert info.last_heartbeat is not None and info.last_heartbeat >= start + 0.3


@pytest.mark.parametrize("combo", COMBOS)
def test_a_client_on_a_monotonic_schedule_is_never_closed(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """Beats sent on fixed deadlines ``hello + k * interval`` stay in sync for 2 s
    (10 beats at the default tolerance, 20% of 0.2 s), each acked."""
    server = edge(heartbeat_interval=0.2)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    for k in range(1, 11):
        wait_until(start + k * 0.2)
        client.beat()
        assert client.recv(timeout=0.15) == {"op": 4}
    (info,) = server.connections
    assert info.open and info.close_code is None
    assert info.heartbeats == 10


@pytest.mark.parametrize("combo", COMBOS)
def test_a_client_that_accumulates_sleeps_drifts_and_is_closed_4007(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """A client sleeping ``interval + 60 ms`` between beats: the first beat is 60 ms
    late (inside the 100 ms tolerance) and acked, the second is 120 ms late: 4007."""
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=0.1)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    client.identify()
    acks = []
    try:
        for _ in range(5):
            time.sleep(0.26)  # deliberately off-schedule: the error accumulates
            client.beat()
            acks.append(client.recv(timeout=1.0))
    except ConnectionClosed:
        pass
    code, _reason, rest = client.close_after()
    assert code == 4007
    assert acks + rest == [{"op": 4}]


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize(("tolerance", "closed"), [(0.03, True), (0.15, False)])
def test_strict_mode_judges_an_early_beat_against_the_configured_tolerance(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo, tolerance: float, closed: bool
) -> None:
    """Strict mode: a beat 80 ms early is closed 4007 at once with a 30 ms tolerance,
    acked with 150 ms."""
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=tolerance, strict_heartbeats=True)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    wait_until(start + 0.12)
    client.beat()
    if closed:
        assert client.expect_close(timeout=1.0)[0] == 4007
    else:
        assert client.recv(timeout=1.0) == {"op": 4}
        assert server.connections[0].heartbeats == 1


@pytest.mark.parametrize("combo", COMBOS)
def test_strict_mode_closes_a_client_beating_twice_per_interval_4007(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.2, strict_heartbeats=True)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    wait_until(start + 0.1)
    client.beat()
    assert client.expect_close(timeout=1.0)[0] == 4007


@pytest.mark.parametrize("combo", COMBOS)
def test_strict_mode_catches_a_client_that_sleeps_the_interval_in_a_loop(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """``sleep(interval)`` plus 40 ms of loop overhead drifts 40 ms later every beat
    (beat k at ``k * 0.24`` s, scheduled on the monotonic clock so that jitter does not
    add up): with a 100 ms tolerance beats 1 and 2 are acked, beat 3 (+120 ms) is not."""
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=0.1, strict_heartbeats=True)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    acks = []
    try:
        for k in range(1, 6):
            wait_until(start + k * 0.24)
            client.beat()
            acks.append(client.recv(timeout=1.0))
    except ConnectionClosed:
        pass
    code, reason, rest = client.close_after()
    assert code == 4007
    assert acks + rest == [{"op": 4}, {"op": 4}]
    assert reason == "heartbeat missed" or reason.endswith(" ms off schedule")


@pytest.mark.parametrize("combo", COMBOS)
def test_an_extra_beat_is_acked_and_harmless(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """One beat right after INIT (to see an ack), one between grid points (as the
    official JS client's optimistic beat), and beats on the grid: all acked, the
    connection stays."""
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=0.05)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    client.beat()
    assert client.recv(timeout=0.15) == {"op": 4}
    for k in range(1, 5):
        wait_until(start + k * 0.2)
        client.beat()
        assert client.recv(timeout=0.15) == {"op": 4}
        if k == 2:
            wait_until(start + 0.5)  # halfway to the next grid point
            client.beat()
            assert client.recv(timeout=0.15) == {"op": 4}
    (info,) = server.connections
    assert info.open and info.close_code is None
    assert info.heartbeats == 6


@pytest.mark.parametrize("combo", COMBOS)
def test_an_extra_beat_does_not_excuse_a_missed_one(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """An extra beat 70 ms before the window of beat 1 opens is acked, but beat 1 is
    still due: 4007 at interval + tolerance after Hello."""
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=0.05)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    wait_until(start + 0.08)
    client.beat()
    code, reason, frames = client.close_after(timeout=2.0)
    elapsed = time.monotonic() - start
    assert frames == [{"op": 4}]
    assert (code, reason) == (4007, "heartbeat missed")
    assert 0.24 <= elapsed < 0.75


@pytest.mark.parametrize("combo", COMBOS)
def test_a_client_that_never_identifies_is_closed_4002_not_4007(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    """Before Identify only the identify timeout applies, though two beat deadlines
    pass first."""
    server = edge(heartbeat_interval=0.2, identify_timeout=0.5)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    code, reason = client.expect_close(timeout=3.0)
    assert (code, reason) == (4002, "identify timeout")
    assert 0.45 <= time.monotonic() - start < 1.5


@pytest.mark.parametrize("combo", COMBOS)
def test_a_client_that_never_beats_is_closed_4007_after_interval_plus_tolerance(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.2, heartbeat_tolerance=0.1)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    start = time.monotonic()
    client.identify()
    code, _reason = client.expect_close(timeout=3.0)
    elapsed = time.monotonic() - start
    assert code == 4007
    assert 0.29 <= elapsed < 1.5
    server.wait_for(lambda s: not s.connections, timeout=5)
    assert server.all_connections[0].close_code == 4007


@pytest.mark.parametrize("combo", COMBOS)
def test_enforce_heartbeats_false_keeps_a_silent_client(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.2)
    server.enforce_heartbeats(False)
    client = clients(server.url, *combo)
    client.expect_hello(200)
    client.identify()
    wait_until(time.monotonic() + 0.8)  # four intervals without a beat
    (info,) = server.connections
    assert server.send_event("MARK", None, cid=info.cid) == 1
    assert client.recv() == dispatch("MARK", None, None)


@pytest.mark.parametrize("combo", COMBOS)
def test_tagged_heartbeat_request_is_acked_with_tag_and_latency(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_request_timeout=0.3)
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    (info,) = server.connections
    assert server.request_heartbeat("abc") == [info.cid]
    assert client.recv() == {"op": 3, "d": {"tag": "abc"}}
    client.beat("abc")
    ack = client.recv()
    assert ack["op"] == 4 and set(ack) == {"op", "d"}
    assert ack["d"]["tag"] == "abc"
    latency = ack["d"]["latency"]
    assert type(latency) is int and 0 <= latency < 1000
    # Answered: past the request timeout, the connection still serves.
    wait_until(time.monotonic() + 0.6)
    assert server.send_event("MARK", None, cid=info.cid) == 1
    assert client.recv() == dispatch("MARK", None, None)
    assert server.connections[0].heartbeats == 0  # a tagged answer is not a scheduled beat


@pytest.mark.parametrize("combo", COMBOS)
def test_a_random_tag_when_none_is_given(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    assert len(server.request_heartbeat()) == 1
    request = client.recv()
    assert request["op"] == 3 and set(request) == {"op", "d"} and set(request["d"]) == {"tag"}
    tag = request["d"]["tag"]
    assert isinstance(tag, str) and tag
    client.beat(tag)
    assert client.recv()["d"]["tag"] == tag


@pytest.mark.parametrize("combo", COMBOS)
def test_an_unanswered_tagged_request_closes_4007(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_request_timeout=0.3)
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    sent = time.monotonic()
    assert len(server.request_heartbeat("t1")) == 1
    assert client.recv() == {"op": 3, "d": {"tag": "t1"}}
    code, _reason = client.expect_close(timeout=3.0)
    assert code == 4007
    assert 0.25 <= time.monotonic() - sent < 2.0


@pytest.mark.parametrize("combo", COMBOS)
def test_a_wrong_tag_does_not_answer_the_request(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_request_timeout=0.3)
    client = clients(server.url, *combo)
    client.expect_hello(30000)
    client.identify()
    server.request_heartbeat("right")
    assert client.recv() == {"op": 3, "d": {"tag": "right"}}
    client.beat("wrong")  # not acked, and the request stays open
    assert client.expect_close(timeout=3.0)[0] == 4007


def test_request_heartbeat_with_cid_reaches_only_that_connection(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient]
) -> None:
    server = edge()
    first = clients(server.url)
    first.expect_hello(30000)
    first.identify()
    second = clients(server.url)
    second.expect_hello(30000)
    second.identify()
    cid = second.init["cid"]
    assert server.request_heartbeat("only", cid=cid) == [cid]
    assert second.recv() == {"op": 3, "d": {"tag": "only"}}
    server.send_event("MARK", None, cid=first.init["cid"])
    assert first.recv() == dispatch("MARK", None, None)


def test_open_client_helper_identifies(edge: Callable[..., LeapEdgeServer]) -> None:
    server = edge()
    with open_client(server) as client:
        assert client.init["scope"] == "token"
        assert client.init["cid"] == server.connections[0].cid


# -- payloads the server cannot relay ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","d":NaN}}}',
        '{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","d":[Infinity]}}}',
        '{"op":0,"d":{"c":"room","e":"SET_CHANNEL_STATE","d":{"v":-Infinity}}}',
    ],
    ids=["message-nan", "message-infinity", "state-infinity"],
)
def test_non_standard_json_numbers_close_4005_and_reach_nobody(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], text: str
) -> None:
    """Python's json accepts NaN/Infinity, which no JSON peer can receive: the sender
    is closed 4005 and nothing reaches the other subscribers."""
    server = edge()
    server.create_channel("room", state={"v": 0})
    server.add_token("leap_token_listener")
    listener = clients(server.url)
    listener.expect_hello(30000)
    listener.identify("leap_token_listener")
    sender = clients(server.url)
    sender.expect_hello(30000)
    sender.identify()
    for client in (listener, sender):
        client.send({"op": 0, "d": {"c": "room", "e": "SUBSCRIBE", "d": None}})
        assert client.recv()["d"]["e"] == "AVAILABLE"
    sender.send_text(text)
    assert sender.expect_close()[0] == 4005
    assert server.channel("room").state == {"v": 0}
    assert server.send_event("MARK", None, cid=listener.init["cid"]) == 1
    assert listener.recv() == dispatch("MARK", None, None)


def test_an_int_etf_cannot_carry_closes_the_sender_4005_and_reaches_nobody(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient]
) -> None:
    """JSON carries 2**100; ETF (erlpack) cannot. Relayed to an ETF subscriber, the
    message cannot be encoded: the sender is closed 4005, nobody gets a part of it."""
    pytest.importorskip("erlpack")
    server = edge()
    server.create_channel("room")
    server.add_token("leap_token_etf")
    etf_listener = clients(server.url, "etf", "none")
    etf_listener.expect_hello(30000)
    etf_listener.identify("leap_token_etf")
    sender = clients(server.url)
    sender.expect_hello(30000)
    sender.identify()
    for client in (etf_listener, sender):
        client.send({"op": 0, "d": {"c": "room", "e": "SUBSCRIBE", "d": None}})
        assert client.recv()["d"]["e"] == "AVAILABLE"
    sender.send_text('{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"big","d":' + str(2**100) + "}}}")
    assert sender.expect_close()[0] == 4005
    assert server.send_event("MARK", None, cid=etf_listener.init["cid"]) == 1
    assert etf_listener.recv() == dispatch("MARK", None, None)


# -- the URL: encoding and compression ---------------------------------------------------


def test_no_query_means_json_without_compression(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient]
) -> None:
    server = edge()
    client = clients(server.url, "json", "none", query="")
    raw = client.recv_raw()
    assert isinstance(raw, str) and json.loads(raw) == hello(30000)
    client.identify()
    (info,) = server.connections
    assert (info.encoding, info.compression) == ("json", "none")


@pytest.mark.parametrize("combo", COMBOS)
def test_query_sets_encoding_and_compression_per_connection(
    edge: Callable[..., LeapEdgeServer], clients: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = clients(server.url, *combo)
    raw = client.recv_raw()
    # zlib: a binary frame holding one standalone zlib stream; etf: a binary ETF term.
    assert isinstance(raw, str) == (combo == ("json", "none"))
    assert client.decode(raw) == hello(30000)
    client.identify()
    (info,) = server.connections
    assert (info.encoding, info.compression) == combo


@pytest.mark.parametrize(
    ("suffix", "status"),
    [
        ("?encoding=xml", 400),
        ("?encoding=json&compression=gzip", 400),
        ("?compression=zlib-stream", 400),
    ],
)
def test_unsupported_query_values_are_refused_at_the_handshake(
    edge: Callable[..., LeapEdgeServer], suffix: str, status: int
) -> None:
    server = edge()
    with pytest.raises(InvalidStatus) as refused:
        RawClient(server.url, query=suffix)
    assert refused.value.response.status_code == status
    assert server.all_connections == []


def test_only_the_ws_path_is_served(edge: Callable[..., LeapEdgeServer]) -> None:
    server = edge()
    with pytest.raises(InvalidStatus) as refused:
        RawClient(server.url.removesuffix("/ws") + "/other", query="")
    assert refused.value.response.status_code == 404
