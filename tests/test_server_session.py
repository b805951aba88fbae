"""The server's connection rules: 4002, 4003, 4004, 4005, 4007 and heartbeat acks."""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import (
    ClientHeartbeat,
    Identify,
    PipeRoomSubscribe,
    PipeRoomUnsubscribe,
    SendMessage,
    SetChannelState,
    Subscribe,
    UnknownClientEvent,
    Unsubscribe,
)
from leap_sync.protocol.server_session import ServerClose, ServerSession, ServerSessionState, default_tolerance

IDENTIFY = frames.identify("project_x", "leap_token_x")


def server(
    *,
    interval: float = 10.0,
    identify_timeout: float = 5.0,
    tolerance: float | None = 1.0,
    request_timeout: float | None = None,
    encoding: str = "json",
    compression: bool = False,
    strict: bool = False,
) -> ServerSession:
    return ServerSession(
        Codec(encoding),
        interval=interval,
        identify_timeout=identify_timeout,
        now=0.0,
        tolerance=tolerance,
        request_timeout=request_timeout,
        compression=compression,
        strict=strict,
    )


def send(session: ServerSession, frame: dict[str, Any], now: float, encoding: str = "json") -> tuple[Any, list[Any]]:
    payload, binary = Codec(encoding).encode(frame)
    return session.receive(payload, binary, now)


def close_of(session: ServerSession, payload: bytes | str, binary: bool, now: float) -> ServerClose:
    with pytest.raises(ServerClose) as info:
        session.receive(payload, binary, now)
    return info.value


def identified(**kwargs: Any) -> ServerSession:
    s = server(**kwargs)
    frame, replies = send(s, IDENTIFY, 1.0)
    assert frame == Identify("project_x", "leap_token_x")
    assert replies == []
    return s


def test_defaults() -> None:
    s = ServerSession(Codec(), interval=30.0, identify_timeout=10.0, now=100.0)
    assert s.state is ServerSessionState.AWAITING_IDENTIFY
    assert s.identify is None
    assert s.identify_deadline == 110.0
    assert s.drift.tolerance == 6.0
    assert s.request_timeout == 6.0
    assert s.check_heartbeats is True
    assert s.deadline == 110.0
    assert s.hello_frame() == {"op": 1, "d": {"heartbeat_interval": 30000}}


def test_default_tolerance() -> None:
    assert default_tolerance(30.0) == 6.0
    assert default_tolerance(1.0) == 0.2
    assert default_tolerance(0.1) == 0.05
    assert default_tolerance(0.01) == 0.05


def test_request_timeout_is_at_least_one_second_by_default() -> None:
    assert server(interval=1.0, tolerance=None).request_timeout == 1.0
    assert server(request_timeout=0.25).request_timeout == 0.25


def test_hello_frame_rounds_to_milliseconds() -> None:
    assert server(interval=0.0255).hello_frame() == {"op": 1, "d": {"heartbeat_interval": 26}}


def test_identify() -> None:
    s = identified()
    assert s.state is ServerSessionState.IDENTIFIED
    assert s.identify == Identify("project_x", "leap_token_x")


def test_tokenless_identify() -> None:
    s = server()
    frame, _ = send(s, frames.identify("project_x", None), 1.0)
    assert frame == Identify("project_x", None)


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_identified_client_frames_are_returned(encoding: str) -> None:
    s = identified()
    cases = [
        (frames.subscribe("room"), Subscribe("room")),
        (frames.unsubscribe("room"), Unsubscribe("room")),
        (frames.set_channel_state("room", {"k": 1}), SetChannelState("room", {"k": 1})),
        (frames.message("room", "chat", [1]), SendMessage("room", "chat", [1])),
        (frames.pipe_room_subscribe("join"), PipeRoomSubscribe("join")),
        (frames.pipe_room_unsubscribe("r1"), PipeRoomUnsubscribe("r1")),
        (frames.dispatch("CUSTOM", None, 1), UnknownClientEvent(None, "CUSTOM", 1)),
    ]
    for frame, model in cases:
        assert send(s, frame, 2.0, encoding) == (model, [])


# -- 4002 identify timeout -----------------------------------------------------------------


def test_identify_timeout_via_check() -> None:
    s = server(identify_timeout=5.0)
    s.check(5.0)  # the deadline itself is still in time
    with pytest.raises(ServerClose) as info:
        s.check(5.001)
    assert info.value.code == 4002
    assert info.value.reason == "identify timeout"
    assert str(info.value) == "close 4002: identify timeout"


def test_late_identify_is_refused_with_4002() -> None:
    s = server(identify_timeout=5.0)
    payload, binary = Codec().encode(IDENTIFY)
    assert close_of(s, payload, binary, 5.5).code == 4002
    assert s.identify is None


def test_no_identify_timeout_once_identified() -> None:
    s = identified(identify_timeout=5.0)
    s.check(5.5)
    assert s.deadline == s.drift.deadline == 11.0


# -- 4003 not authenticated ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        frames.subscribe("room"),
        frames.unsubscribe("room"),
        frames.set_channel_state("room", {}),
        frames.message("room", "chat", 1),
        frames.pipe_room_subscribe("join"),
        frames.pipe_room_unsubscribe("r1"),
        frames.dispatch("CUSTOM", None, None),
    ],
)
def test_dispatch_before_identify_closes_4003(frame: dict[str, Any]) -> None:
    s = server()
    payload, binary = Codec().encode(frame)
    close = close_of(s, payload, binary, 1.0)
    assert close.code == 4003
    assert close.reason == "not authenticated"


def test_heartbeat_before_identify_is_allowed() -> None:
    s = server(identify_timeout=20.0)
    assert send(s, frames.heartbeat(), 10.0) == (ClientHeartbeat(None), [{"op": 4}])


# -- 4004 unknown opcode -------------------------------------------------------------------


@pytest.mark.parametrize("op", [1, 4, 5, 42, -1])
def test_unknown_opcode_closes_4004(op: int) -> None:
    close = close_of(identified(), f'{{"op":{op},"d":{{}}}}', False, 2.0)
    assert close.code == 4004


# -- 4005 invalid payload ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "binary"),
    [
        ("{", False),
        (b"\xff", False),
        ("[]", False),
        ('{"d":{}}', False),
        ('{"op":"0"}', False),
        ('{"op":0,"d":{"e":"SUBSCRIBE"}}', False),
        ('{"op":0,"d":{"e":"SET_CHANNEL_STATE","c":"a","d":[]}}', False),
        ('{"op":2,"d":{"project_id":5}}', False),
        ('{"op":3,"d":{"tag":5}}', False),
        (b"\x83\x00", True),
        (b"\x83" + b"l\x00\x00\x00\x01" * 1000 + b"j" * 1001, True),
        (zlib.compress(b"{"), True),
    ],
)
def test_malformed_payload_closes_4005(payload: bytes | str, binary: bool) -> None:
    assert close_of(identified(), payload, binary, 2.0).code == 4005


def test_second_identify_closes_4005() -> None:
    s = identified()
    payload, binary = Codec().encode(IDENTIFY)
    close = close_of(s, payload, binary, 2.0)
    assert close.code == 4005
    assert close.reason == "already identified"


def test_malformed_payload_before_identify_is_4005_not_4003() -> None:
    assert close_of(server(), "nope", False, 1.0).code == 4005


# -- heartbeats, drift and 4007 ------------------------------------------------------------


def test_beats_on_schedule_are_acked() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    for k in range(1, 6):
        frame, replies = send(s, frames.heartbeat(), 10.0 * k + 0.3)
        assert frame == ClientHeartbeat(None)
        assert replies == [{"op": 4}]
        assert s.deadline == 10.0 * (k + 1) + 1.0


def test_early_beat_closes_4007_in_strict_mode() -> None:
    s = identified(interval=10.0, tolerance=1.0, strict=True)
    payload, binary = Codec().encode(frames.heartbeat())
    close = close_of(s, payload, binary, 8.5)
    assert close.code == 4007
    assert close.reason == "heartbeat -1500 ms off schedule"


def test_late_beat_closes_4007() -> None:
    # Later than the tolerance is past the deadline: the beat counts as missed.
    s = identified(interval=10.0, tolerance=1.0)
    payload, binary = Codec().encode(frames.heartbeat())
    close = close_of(s, payload, binary, 11.5)
    assert close.code == 4007
    assert close.reason == "heartbeat missed"


def test_second_beat_early_relative_to_the_grid_closes_4007_in_strict_mode() -> None:
    s = identified(interval=10.0, tolerance=1.0, strict=True)
    send(s, frames.heartbeat(), 10.9)
    payload, binary = Codec().encode(frames.heartbeat())
    # 18.5 is 7.6 s after the last beat, but what counts is the grid point 20.
    assert close_of(s, payload, binary, 18.5).reason == "heartbeat -1500 ms off schedule"


def test_early_and_extra_beats_are_acked_by_default() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    for now in (1.5, 8.5, 10.0, 10.2, 15.0):  # early, on the grid, twice, halfway
        assert send(s, frames.heartbeat(), now) == (ClientHeartbeat(None), [{"op": 4}])
    assert s.deadline == 21.0  # only the next grid point is due
    s.check(21.0)


def test_an_extra_beat_before_the_window_does_not_excuse_the_beat() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    send(s, frames.heartbeat(), 8.5)  # acked, but the window of beat 1 opens at 9
    assert s.deadline == 11.0
    with pytest.raises(ServerClose) as info:
        s.check(11.01)
    assert (info.value.code, info.value.reason) == (4007, "heartbeat missed")


def test_no_beat_is_due_before_identify() -> None:
    s = server(interval=1.0, identify_timeout=5.0, tolerance=0.2)
    assert s.deadline == 5.0
    s.check(4.9)  # four beat deadlines passed: only the identify timeout applies
    with pytest.raises(ServerClose) as info:
        s.check(5.01)
    assert info.value.code == 4002


def test_windows_that_opened_before_identify_are_not_enforced() -> None:
    s = server(interval=10.0, identify_timeout=50.0, tolerance=1.0)
    send(s, IDENTIFY, 29.5)  # inside the window of beat 3
    assert s.deadline == 41.0
    s.check(40.9)


def test_a_beat_before_identify_counts_for_its_window() -> None:
    s = server(interval=10.0, identify_timeout=50.0, tolerance=1.0)
    send(s, frames.heartbeat(), 10.0)
    send(s, IDENTIFY, 10.5)
    assert s.deadline == 21.0


def test_missed_beat_closes_4007_via_check() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    s.check(11.0)
    with pytest.raises(ServerClose) as info:
        s.check(11.01)
    assert info.value.code == 4007
    assert info.value.reason == "heartbeat missed"


def test_missed_beat_closes_4007_on_the_next_message() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    payload, binary = Codec().encode(frames.subscribe("room"))
    assert close_of(s, payload, binary, 12.0).code == 4007


def test_check_heartbeats_off_acks_any_beat() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    s.check_heartbeats = False
    assert send(s, frames.heartbeat(), 3.0) == (ClientHeartbeat(None), [{"op": 4}])
    s.check(1000.0)
    assert s.deadline == float("inf")


def test_tagged_request_answered_gets_ack_with_tag_and_latency() -> None:
    s = identified()
    assert s.request_heartbeat("abc", 3.0) == {"op": 3, "d": {"tag": "abc"}}
    assert s.deadline == 3.0 + s.request_timeout
    frame, replies = send(s, frames.heartbeat("abc"), 3.012)
    assert frame == ClientHeartbeat("abc")
    assert replies == [{"op": 4, "d": {"tag": "abc", "latency": 12}}]
    s.check(5.0)
    assert s.deadline == s.drift.deadline


def test_tagged_answer_does_not_count_as_a_beat() -> None:
    s = identified(interval=10.0, tolerance=1.0)
    s.request_heartbeat("abc", 3.0)
    send(s, frames.heartbeat("abc"), 3.1)
    assert s.drift.beats == 0
    assert send(s, frames.heartbeat(), 10.0)[1] == [{"op": 4}]


def test_unanswered_tagged_request_closes_4007() -> None:
    s = identified(request_timeout=2.0)
    s.request_heartbeat("abc", 3.0)
    s.check(5.0)
    with pytest.raises(ServerClose) as info:
        s.check(5.001)
    assert info.value.code == 4007
    assert info.value.reason == "heartbeat request 'abc' unanswered"


def test_answer_after_the_request_timeout_closes_4007() -> None:
    s = identified(request_timeout=2.0)
    s.request_heartbeat("abc", 3.0)
    payload, binary = Codec().encode(frames.heartbeat("abc"))
    assert close_of(s, payload, binary, 5.5).code == 4007


def test_answer_with_an_unknown_tag_gets_no_ack() -> None:
    s = identified()
    s.request_heartbeat("abc", 3.0)
    assert send(s, frames.heartbeat("zzz"), 3.1) == (ClientHeartbeat("zzz"), [])
    assert send(s, frames.heartbeat("abc"), 3.2)[1] == [{"op": 4, "d": {"tag": "abc", "latency": 200}}]
    # A second answer to the same request is not acknowledged again.
    assert send(s, frames.heartbeat("abc"), 3.3) == (ClientHeartbeat("abc"), [])


def test_deadline_is_the_earliest_rule() -> None:
    s = server(interval=10.0, identify_timeout=5.0, tolerance=1.0, request_timeout=0.5)
    assert s.deadline == 5.0
    s.request_heartbeat("a", 4.0)
    assert s.deadline == 4.5
    send(s, frames.heartbeat("a"), 4.1)
    send(s, IDENTIFY, 4.2)
    assert s.deadline == 11.0


# -- encoding ------------------------------------------------------------------------------


def test_encode_plain() -> None:
    assert server().encode(frames.heartbeat_ack()) == ('{"op":4}', False)
    payload, binary = server(encoding="etf").encode(frames.heartbeat_ack())
    assert binary is True
    assert isinstance(payload, bytes)
    assert Codec().decode(payload, True) == {"op": 4}


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_encode_compressed(encoding: str) -> None:
    payload, binary = server(encoding=encoding, compression=True).encode(frames.hello(30000))
    assert binary is True
    assert isinstance(payload, bytes)
    assert payload[:1] == b"\x78"
    assert Codec().decode(payload, True) == {"op": 1, "d": {"heartbeat_interval": 30000}}
