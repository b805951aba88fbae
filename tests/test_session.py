"""The client's sans-I/O session: Hello → Identify, INIT → CONNECTED, heartbeats, batches."""

from __future__ import annotations

from typing import Any

import pytest

from leap_sync.errors import LeapProtocolError
from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.heartbeat import Pulse
from leap_sync.protocol.models import (
    AvailableEvent,
    Channel,
    Hello,
    InitEvent,
    MessageEvent,
    StateUpdateEvent,
    UnavailableEvent,
    UnknownEvent,
)
from leap_sync.protocol.session import ClientSession, ReceiveResult, SessionState

TOKEN = "leap_token_secret"
INIT = InitEvent("cid_1", 1, None, "token", (Channel("room", "project_x"),))
MESSAGE = MessageEvent("room", "chat", {"text": "hi"})


def wire(frame: dict[str, Any], encoding: str = "json", compressed: bool = False) -> tuple[bytes | str, bool]:
    codec = Codec(encoding)
    if compressed:
        return codec.encode_compressed(frame), True
    return codec.encode(frame)


def session(encoding: str = "json", token: str | None = TOKEN) -> ClientSession:
    return ClientSession("project_x", token, Codec(encoding))


def connected(now: float = 0.0) -> ClientSession:
    s = session()
    result = s.receive([wire(frames.hello(10000)), wire(frames.server_frame(INIT))], now)
    assert result.error is None
    assert s.state is SessionState.CONNECTED
    return s


def test_initial_state() -> None:
    s = session()
    assert s.state is SessionState.AWAITING_HELLO
    assert s.hello is None
    assert s.init is None
    assert s.heartbeat is None
    assert s.latency is None
    assert s.tagged_latency is None


def test_repr_hides_the_token() -> None:
    s = session()
    assert repr(s) == "ClientSession(project_id='project_x', state=awaiting_hello, encoding='json')"
    assert TOKEN not in repr(s)


def test_hello_sends_identify() -> None:
    s = session()
    result = s.receive([wire(frames.hello(30000))], 5.0)
    assert result == ReceiveResult(
        messages=[],
        events=[Hello(30000)],
        send=[{"op": 2, "d": {"project_id": "project_x", "token": TOKEN}}],
        error=None,
    )
    assert s.state is SessionState.AWAITING_INIT
    assert s.hello == Hello(30000)
    assert s.heartbeat is not None
    assert s.heartbeat.interval == 30.0
    assert s.heartbeat.next_beat == 35.0
    assert s.heartbeat.poll(34.9) is Pulse.WAIT
    assert s.heartbeat.poll(35.0) is Pulse.BEAT


def test_tokenless_identify_sends_null() -> None:
    s = session(token=None)
    result = s.receive([wire(frames.hello(30000))], 0.0)
    assert result.send == [{"op": 2, "d": {"project_id": "project_x", "token": None}}]


def test_init_connects() -> None:
    s = session()
    s.receive([wire(frames.hello(30000))], 0.0)
    result = s.receive([wire(frames.server_frame(INIT))], 1.0)
    assert result == ReceiveResult(events=[INIT])
    assert s.state is SessionState.CONNECTED
    assert s.init == INIT


def test_hello_and_init_in_one_batch() -> None:
    s = session()
    result = s.receive([wire(frames.hello(30000)), wire(frames.server_frame(INIT))], 0.0)
    assert result.events == [Hello(30000), INIT]
    assert result.send == [frames.identify("project_x", TOKEN)]
    assert s.state is SessionState.CONNECTED


@pytest.mark.parametrize("encoding", ["json", "etf"])
@pytest.mark.parametrize("compressed", [False, True])
def test_flow_in_every_wire_format(encoding: str, compressed: bool) -> None:
    s = session("json")  # decoding is by content, whatever the session's encoding
    batch = [
        wire(frames.hello(30000), encoding, compressed),
        wire(frames.server_frame(INIT), encoding, compressed),
        wire(frames.server_frame(MESSAGE), encoding, compressed),
    ]
    result = s.receive(batch, 0.0)
    assert result == ReceiveResult(
        messages=[MESSAGE], events=[Hello(30000), INIT], send=[frames.identify("project_x", TOKEN)]
    )


def test_messages_and_events_keep_wire_order() -> None:
    s = connected()
    m1 = MessageEvent("room", "a", 1)
    m2 = MessageEvent(None, "dm", 2, direct=True)
    m3 = MessageEvent("room", "c", 3, unicast=True, seq=9)
    available = AvailableEvent("room", Channel("room", "project_x"))
    state = StateUpdateEvent("room", {"k": 1})
    unknown = UnknownEvent("room", "NEW_THING", [1])
    batch = [wire(frames.server_frame(e)) for e in (m1, available, m2, state, m3, unknown)]
    result = s.receive(batch, 1.0)
    assert result.messages == [m1, m2, m3]
    assert result.events == [available, state, unknown]
    assert result.send == []
    assert result.error is None


def test_tagged_heartbeat_request_is_answered_at_once() -> None:
    s = connected()
    batch = [
        wire(frames.server_frame(MESSAGE)),
        wire(frames.heartbeat_request("abc")),
        wire(frames.server_frame(MESSAGE)),
        wire(frames.heartbeat_request("def")),
    ]
    result = s.receive(batch, 1.0)
    assert result.send == [{"op": 3, "d": {"tag": "abc"}}, {"op": 3, "d": {"tag": "def"}}]
    assert result.messages == [MESSAGE, MESSAGE]
    assert result.events == []  # heartbeat requests are not application events


def test_untagged_heartbeat_request_is_answered_untagged() -> None:
    result = connected().receive([wire({"op": 3})], 1.0)
    assert result.send == [{"op": 3}]
    assert result.events == []


def test_heartbeat_request_before_hello_is_answered() -> None:
    result = session().receive([wire(frames.heartbeat_request("early"))], 0.0)
    assert result.send == [{"op": 3, "d": {"tag": "early"}}]


def test_untagged_ack_measures_latency() -> None:
    s = connected(now=0.0)
    assert s.heartbeat is not None
    s.heartbeat.sent(10.0)
    result = s.receive([wire(frames.heartbeat_ack())], 10.025)
    assert result == ReceiveResult()
    assert s.latency == pytest.approx(0.025)
    assert s.heartbeat.unacked == 0


def test_tagged_ack_sets_tagged_latency_only() -> None:
    s = connected(now=0.0)
    assert s.heartbeat is not None
    s.heartbeat.sent(10.0)
    result = s.receive([wire(frames.heartbeat_ack("abc", 12))], 10.5)
    assert result == ReceiveResult()
    assert s.tagged_latency == 0.012
    assert s.latency is None
    assert s.heartbeat.unacked == 1


def test_tagged_ack_without_latency_is_ignored() -> None:
    s = connected()
    s.receive([wire({"op": 4, "d": {"tag": "abc"}})], 1.0)
    assert s.tagged_latency is None


def test_ack_before_hello_is_harmless() -> None:
    s = session()
    assert s.receive([wire(frames.heartbeat_ack())], 0.0) == ReceiveResult()
    assert s.latency is None


def test_receive_counts_as_liveness() -> None:
    s = connected(now=0.0)
    assert s.heartbeat is not None
    s.heartbeat.sent(10.0)
    s.receive([wire(frames.server_frame(MESSAGE))], 19.0)
    assert s.heartbeat.last_received == 19.0
    assert s.heartbeat.poll(20.0) is Pulse.BEAT


def test_malformed_message_stops_the_batch_but_keeps_what_came_before() -> None:
    s = session()
    batch = [
        wire(frames.hello(30000)),
        wire(frames.server_frame(MESSAGE)),
        wire(frames.heartbeat_request("t1")),
        wire(frames.server_frame(UnavailableEvent("room", False, "NOT_GRANTED"))),
        (b"{not json", False),
        wire(frames.server_frame(INIT)),
        wire(frames.server_frame(MESSAGE)),
        wire(frames.heartbeat_request("t2")),
    ]
    result = s.receive(batch, 0.0)
    assert result.messages == [MESSAGE]
    assert result.events == [Hello(30000), UnavailableEvent("room", False, "NOT_GRANTED")]
    assert result.send == [frames.identify("project_x", TOKEN), frames.heartbeat("t1")]
    assert isinstance(result.error, LeapProtocolError)
    assert s.state is SessionState.AWAITING_INIT
    assert s.init is None


@pytest.mark.parametrize(
    "bad",
    [
        (b"\x83\x00", True),
        (b"\x78\x9c\x00", True),
        ('{"op":7}', False),
        ('{"op":0,"d":{"e":"MESSAGE","c":"room","d":[]}}', False),
        ('{"op":1,"d":{"heartbeat_interval":0}}', False),
        ("[]", False),
    ],
)
def test_every_kind_of_bad_message_is_reported(bad: tuple[bytes | str, bool]) -> None:
    s = connected()
    result = s.receive([wire(frames.server_frame(MESSAGE)), bad, wire(frames.server_frame(MESSAGE))], 1.0)
    assert result.messages == [MESSAGE]
    assert isinstance(result.error, LeapProtocolError)


def test_unknown_opcode_error_carries_4004() -> None:
    result = connected().receive([('{"op":9}', False)], 1.0)
    assert result.error is not None
    assert result.error.close_code == 4004
    assert result.error.op == 9


def test_second_hello_is_a_protocol_error() -> None:
    s = connected()
    result = s.receive([wire(frames.server_frame(MESSAGE)), wire(frames.hello(5000))], 1.0)
    assert result.messages == [MESSAGE]
    assert result.send == []
    assert result.error is not None
    assert result.error.op == 1
    assert s.hello == Hello(10000)


def test_empty_batch() -> None:
    assert session().receive([], 0.0) == ReceiveResult()


def test_batch_may_be_any_iterable() -> None:
    s = connected()
    result = s.receive(iter([wire(frames.server_frame(MESSAGE))]), 1.0)
    assert result.messages == [MESSAGE]


def test_encode_uses_the_session_codec() -> None:
    assert session("json").encode(frames.heartbeat()) == ('{"op":3}', False)
    payload, binary = session("etf").encode(frames.heartbeat())
    assert binary is True
    assert payload == b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x02opa\x03"
