"""A batch of messages (what one read brought) gives what the same messages give one
at a time: the same events in the same order, the same frames to send, and a bad
message costs only itself and what follows it in that batch."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapProtocolError
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import MessageEvent
from leap_sync.protocol.parse import parse_messages, parse_server_frame
from leap_sync.protocol.session import _CHUNK, ClientSession, ReceiveResult

HELLO = b'{"op":1,"d":{"heartbeat_interval":30000}}'
INIT = (
    b'{"op":0,"d":{"c":null,"e":"INIT","d":{"cid":"c","connection_count":1,'
    b'"metadata":null,"scope":"token","channels":[]}}}'
)


def message(n: int, **extra: Any) -> bytes:
    d: dict[str, Any] = {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": {"n": n}}}
    d.update(extra)
    return json.dumps({"op": 0, "d": d}, separators=(",", ":")).encode()


def _run(frames: list[tuple[bytes, bool]], batched: bool, encoding: str = "json") -> list[Any]:
    """What a session makes of ``frames``: every result's fields, in order."""
    session = ClientSession("project_x", "leap_token_x", Codec(encoding))
    results: list[ReceiveResult] = []
    if batched:
        results.append(session.receive(frames, 1.0))
    else:
        for frame in frames:
            results.append(session.receive([frame], 1.0))
            if results[-1].error is not None:
                break
    out: list[Any] = []
    for result in results:
        out += [("message", m) for m in result.messages]
        out += [("event", e) for e in result.events]
        out += [("send", s) for s in result.send]
        if result.error is not None:
            out.append(("error", str(result.error), result.error.close_code))
    return out


def _assert_same(frames: list[tuple[bytes, bool]], encoding: str = "json") -> None:
    batched = _run(frames, True, encoding)
    single = _run(frames, False, encoding)
    # A batch reports its messages before its events; one frame at a time, each
    # result is in wire order. Compare per kind, in order.
    for kind in ("message", "event", "send", "error"):
        assert [x for x in batched if x[0] == kind] == [x for x in single if x[0] == kind], kind


def text(*payloads: bytes) -> list[tuple[bytes, bool]]:
    return [(p, False) for p in payloads]


@pytest.mark.parametrize(
    "frames",
    [
        text(HELLO, INIT, *(message(i) for i in range(50))),
        text(HELLO, INIT, message(0), b'{"op":4}', message(1), b'{"op":3,"d":{"tag":"t"}}', message(2)),
        text(HELLO, INIT, message(0), message(1, u=True), message(2, u=False), message(3)),
        text(HELLO, INIT, message(0), message(1, u="x"), message(2)),  # u must be a boolean
        text(HELLO, INIT, message(0), message(1, u=1), message(2)),
        text(HELLO, INIT, message(0), message(1, c=5), message(2)),
        text(HELLO, INIT, message(0), b'{"op":0,"d":{"c":"room","e":"DIRECT_MESSAGE","d":{"e":"x","d":1}}}'),
        text(HELLO, INIT, message(0), b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":1}}}', message(2)),
        text(HELLO, INIT, message(0), b'{"op":0,"d":', message(2)),  # bad JSON in the middle
        text(HELLO, INIT, message(0), b'{"op":9}', message(2)),  # unknown op in the middle
        text(HELLO, INIT, message(0), b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","seq":-1}}}'),
        text(message(0), HELLO),  # a message before Hello
        text(HELLO, message(0), INIT, message(1)),  # before INIT: delivered
        text(HELLO, INIT, b' {"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x"}}} ', message(1)),
        text(HELLO, INIT, b"[1,2", b"3]", message(2)),
        text(HELLO, INIT, message(0), b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","d":"\xff"}}}'),
        [(HELLO, False), (INIT, False), (message(0), True), (message(1), False)],  # JSON in a binary frame
        [(HELLO, False), (INIT, False), (message(0), False), (b"\x78\x9c\x03\x00\x00\x00\x00\x01", True)],
    ],
)
def test_a_batch_gives_what_its_messages_give_one_at_a_time(frames: list[tuple[bytes, bool]]) -> None:
    _assert_same(frames)


def _long_batch(special: dict[int, bytes]) -> list[tuple[bytes, bool]]:
    """Hello, 199 frames (messages, INIT at 70 unless ``special`` puts it elsewhere)
    and ``special``'s frames at their indexes: long enough to span several of the
    session's decode chunks."""
    frames = [HELLO] + [message(i) for i in range(1, 200)]
    frames[70] = INIT
    for index, frame in special.items():
        frames[index] = frame
    return text(*frames)


C = _CHUNK  # the session decodes and parses a batch this many frames at a time


@pytest.mark.parametrize(
    "special",
    [
        {},
        {C - 1: b"{nope"},
        {C: b"{nope"},
        {C + 1: b"{nope"},
        {2 * C: b'{"op":9}'},
        {2 * C - 1: b'{"op":4}', 2 * C: b'{"op":3,"d":{"tag":"t"}}', 2 * C + 1: b"[1,"},
        {70: message(70), 140: INIT},  # INIT in a later chunk: the messages before it still count
        {70: message(70), 199: INIT},
        {C: b'{"op":1,"d":{"heartbeat_interval":5}}'},  # a second Hello, after a chunk boundary
    ],
)
def test_a_long_batch_gives_what_its_messages_give_one_at_a_time(special: dict[int, bytes]) -> None:
    _assert_same(_long_batch(special))


def _etf(obj: Any) -> tuple[bytes, bool]:
    import erlpack

    return erlpack.pack(obj), True


def _etf_batch(special: dict[int, tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """:func:`_long_batch` in ETF (binary frames), with ``special``'s frames."""
    frames = [_etf(json.loads(HELLO))] + [_etf(json.loads(message(i))) for i in range(1, 200)]
    frames[70] = _etf(json.loads(INIT))
    for index, frame in special.items():
        frames[index] = frame
    return frames


@pytest.mark.parametrize(
    "special",
    [
        {},
        {C - 1: (b"\x83t\x00", True)},  # truncated
        {C: (b"\x84" + _etf(json.loads(message(C)))[0][1:], True)},  # wrong version byte
        {C + 1: (zlib.compress(_etf(json.loads(message(C + 1)))[0]), True)},  # zlib, read alone
        {2 * C: _etf({"op": 9})},
        {2 * C + 1: (message(2 * C + 1), False)},  # a JSON text frame among ETF ones
        {C: _etf({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "x", "seq": -1}}})},
        {C: _etf({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "x", "d": (1, 2)}}})},  # a tuple
        {C + 2: (_etf(json.loads(message(C + 2)))[0] + b"\x00", True)},  # a byte after the term
    ],
)
def test_a_long_etf_batch_gives_what_its_frames_give_one_at_a_time(special: dict[int, tuple[bytes, bool]]) -> None:
    _assert_same(_etf_batch(special), "etf")


def test_a_bad_message_keeps_the_ones_before_it_and_reports_its_error() -> None:
    session = ClientSession("project_x", None, Codec())
    result = session.receive(text(HELLO, INIT, message(0), message(1), b"{nope", message(3)), 1.0)
    assert [m.data for m in result.messages] == [{"n": 0}, {"n": 1}]
    assert isinstance(result.error, LeapProtocolError)
    assert result.error.close_code == 4005


message_dicts = st.fixed_dictionaries(
    {
        "op": st.sampled_from([0] * 8 + [1, True, "0", 0.0]),
        "d": st.one_of(
            st.just(None),
            st.fixed_dictionaries(
                {
                    "c": st.sampled_from(["room"] * 4 + [None, 1]),
                    "e": st.sampled_from(["MESSAGE"] * 6 + ["DIRECT_MESSAGE", "AVAILABLE", 5]),
                    "d": st.one_of(
                        st.none(),
                        st.fixed_dictionaries(
                            {"e": st.sampled_from(["chat"] * 4 + [3, None]), "d": st.integers()},
                            optional={"seq": st.one_of(st.integers(-2, 2**64), st.booleans(), st.just(1.5))},
                        ),
                    ),
                },
                optional={"u": st.sampled_from([True, False, None, 0, 1, "x"])},
            ),
        ),
    }
)


def _parsed(obj: Any) -> Any:
    try:
        return parse_server_frame(obj)
    except LeapProtocolError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(message_dicts, max_size=8), st.integers(0, 8))
def test_parse_messages_makes_what_parse_server_frame_makes(objs: list[Any], start: int) -> None:
    start = min(start, len(objs))
    out: list[MessageEvent] = []
    stop = parse_messages(objs, start, out)
    assert start <= stop <= len(objs)
    assert out == [_parsed(obj) for obj in objs[start:stop]]
    assert all(type(event) is MessageEvent for event in out)


@settings(max_examples=200, deadline=None)
@given(st.lists(message_dicts, max_size=8))
def test_any_batch_of_frames_gives_what_it_gives_one_at_a_time(objs: list[Any]) -> None:
    frames = text(HELLO, INIT, *(json.dumps(obj).encode() for obj in objs))
    _assert_same(frames)


@pytest.mark.parametrize(
    "payload",
    [
        message(1),
        message(1, u=True),
        message(1, u=False),
        message(1, u=None),
        message(1, u="x"),
        message(1, u=1),
        message(1, u=0),
        message(1, c=5),
        message(1, c=None),
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","seq":3}}}',
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","seq":-1}}}',
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","seq":true}}}',
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x","seq":9223372036854775808}}}',
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":5}}}',
        b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":null}}',
        b'{"op":true,"d":{"c":"room","e":"MESSAGE","d":{"e":"x"}}}',
        b'{"op":0.0,"d":{"c":"room","e":"MESSAGE","d":{"e":"x"}}}',
        b'{"op":0,"d":{"c":"room","e":"DIRECT_MESSAGE","d":{"e":"x"}}}',
        b"[]",
    ],
)
def test_parse_messages_takes_only_what_parse_server_frame_parses_to_the_same_message(payload: bytes) -> None:
    obj = json.loads(payload)
    out: list[MessageEvent] = []
    stop = parse_messages([obj], 0, out)
    if stop == 1:
        assert out == [parse_server_frame(obj)]
    else:
        assert stop == 0 and out == []
    # Through a session, the frame gives what the general parser gives.
    session = ClientSession("project_x", None, Codec())
    session.receive(text(HELLO, INIT), 1.0)
    result = session.receive(text(payload), 1.0)
    expected = _parsed(obj)
    if isinstance(expected, MessageEvent):
        assert result.messages == [expected] and result.error is None
    elif isinstance(expected, tuple):
        assert result.messages == [] and str(result.error) == expected[1]


def test_message_events_built_in_batches_are_what_the_constructor_makes() -> None:
    import attrs

    # parse_messages fills MessageEvent's slots directly: this breaks if the model
    # gains a field, a validator, a converter or a post-init hook.
    assert [f.name for f in attrs.fields(MessageEvent)] == [
        "channel_id",
        "event_name",
        "data",
        "unicast",
        "direct",
        "seq",
    ]
    assert all(f.validator is None and f.converter is None for f in attrs.fields(MessageEvent))
    assert not hasattr(MessageEvent, "__attrs_post_init__")
    out: list[MessageEvent] = []
    assert parse_messages([json.loads(message(7, u=True)), json.loads(message(8))], 0, out) == 2
    assert out == [
        MessageEvent("room", "chat", {"n": 7}, True, False, None),
        MessageEvent("room", "chat", {"n": 8}, False, False, None),
    ]
    assert repr(out[1]) == repr(MessageEvent("room", "chat", {"n": 8}, False, False, None))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        out[0].data = None  # type: ignore[misc]


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_receiving_leaves_no_cyclic_garbage(encoding: str) -> None:
    """Everything a batch makes is freed by reference counting: the cyclic collector
    (whose full passes delay heartbeats under a flat-out stream) finds nothing."""
    import gc
    import zlib

    import erlpack

    codec = Codec(encoding)
    frames: list[tuple[bytes, bool]] = []
    for i in range(200):
        frame = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": {"n": i, "l": [i, {"x": None}]}}}}
        raw = erlpack.pack(frame) if encoding == "etf" else json.dumps(frame).encode()
        frames.append((zlib.compress(raw), True) if i % 3 == 0 else (raw, encoding == "etf"))
    session = ClientSession("project_x", None, codec)
    session.receive(text(HELLO, INIT), 1.0)
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            result = session.receive(frames, 2.0)
            assert len(result.messages) == 200 and result.error is None
            del result
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_an_etf_term_in_a_text_frame_is_not_read_as_etf() -> None:
    import erlpack

    term = erlpack.pack({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "x", "d": 1}}})
    session = ClientSession("project_x", None, Codec("etf"))
    session.receive(text(HELLO, INIT), 1.0)
    as_binary = session.receive([(term, True)], 1.0)
    assert [m.data for m in as_binary.messages] == [1] and as_binary.error is None
    as_text = session.receive([(term, False)], 1.0)
    assert as_text.messages == [] and isinstance(as_text.error, LeapProtocolError)
    mixed = session.receive([(term, True), (term, False)], 1.0)
    assert [m.data for m in mixed.messages] == [1] and isinstance(mixed.error, LeapProtocolError)
