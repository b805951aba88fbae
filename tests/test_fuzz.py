"""Hypothesis: whatever a peer sends, decoding and parsing raise LeapProtocolError or
nothing. Any other exception escaping fails the test."""

from __future__ import annotations

import json
import zlib
from typing import Any

import erlpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapEncodeError, LeapProtocolError
from leap_sync.protocol import frames
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.models import Channel, MessageEvent
from leap_sync.protocol.parse import parse_client_frame, parse_server_frame

CODECS = [Codec("json"), Codec("etf"), Codec("json", max_size=64, max_depth=4)]
FUZZ = settings(max_examples=250, deadline=None)


def decode_and_parse(payload: bytes | str, binary: bool) -> None:
    """Feed one message through every codec and both parsers. LeapProtocolError is the
    expected refusal and is swallowed; any other exception propagates and fails the test."""
    for codec in CODECS:
        try:
            obj = codec.decode(payload, binary)
        except LeapProtocolError:
            continue
        parse_both(obj)


def parse_both(obj: Any) -> None:
    for parse in (parse_server_frame, parse_client_frame):
        try:
            parse(obj)
        except LeapProtocolError:
            pass


# -- bytes ---------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300), binary=st.booleans())
@example(data=b"80", binary=True)  # looks like a zlib header
@example(data=b"\x78\x9c", binary=True)
@example(data=b"\x83", binary=True)
@example(data=b"\x83l\xff\xff\xff\xff", binary=True)
@example(data=b"\xff", binary=False)
def test_arbitrary_bytes(data: bytes, binary: bool) -> None:
    decode_and_parse(data, binary)


@FUZZ
@given(data=st.binary(max_size=300))
def test_arbitrary_etf_like_bytes(data: bytes) -> None:
    decode_and_parse(b"\x83" + data, True)


@FUZZ
@given(tags=st.lists(st.sampled_from(b"FabcdhijklmnostvwX\x00"), max_size=60), data=st.binary(max_size=60))
def test_etf_tag_soup(tags: list[int], data: bytes) -> None:
    # Term tags followed by small counts, so containers and lengths are often plausible.
    body = b"".join(bytes([tag, 0, 0, 0, 1]) for tag in tags)
    decode_and_parse(b"\x83" + body + data, True)
    decode_and_parse(b"\x83" + bytes(tags) + data, True)


@FUZZ
@given(data=st.binary(max_size=300), etf_prefix=st.booleans(), level=st.integers(0, 9))
def test_arbitrary_bytes_in_zlib(data: bytes, etf_prefix: bool, level: int) -> None:
    decode_and_parse(zlib.compress((b"\x83" if etf_prefix else b"") + data, level), True)


@FUZZ
@given(text=st.text(alphabet=st.characters(exclude_categories=()), max_size=200), binary=st.booleans())
def test_arbitrary_text(text: str, binary: bool) -> None:
    decode_and_parse(text, binary)


# -- JSON values ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["MESSAGE", "INIT", "AVAILABLE", "", "op", "d", "e", "c"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=16,
)

FIELD_NAMES = [
    "e",
    "d",
    "c",
    "u",
    "seq",
    "cid",
    "connection_count",
    "metadata",
    "scope",
    "channels",
    "channel",
    "graceful",
    "error_code",
    "state",
    "pipe_room",
    "connection",
    "join_token",
    "id",
    "project_id",
    "type",
    "capabilities",
    "name",
    "created_at",
    "ingest_protocol",
    "delivery_protocols",
    "ingest_region",
    "heartbeat_interval",
    "tag",
    "latency",
    "token",
]
EVENT_NAMES = [
    "INIT",
    "MESSAGE",
    "DIRECT_MESSAGE",
    "AVAILABLE",
    "UNAVAILABLE",
    "STATE_UPDATE",
    "TOKEN_STATE_UPDATE",
    "PIPE_ROOM_AVAILABLE",
    "PIPE_ROOM_UPDATE",
    "PIPE_ROOM_UNAVAILABLE",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "SET_CHANNEL_STATE",
    "PIPE_ROOM_SUBSCRIBE",
    "PIPE_ROOM_UNSUBSCRIBE",
    "SOMETHING_ELSE",
]

# Objects with the field names the parsers look for, holding arbitrary values: these
# get past the first checks and into every parser's field validation.
plausible_objects = st.recursive(
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8),
    lambda children: st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        json_values | children | st.lists(children, max_size=3),
        max_size=8,
    ),
    max_leaves=6,
)
dispatch_bodies = st.fixed_dictionaries(
    {},
    optional={
        "e": st.sampled_from(EVENT_NAMES) | json_scalars,
        "c": st.none() | st.text(max_size=5) | json_values,
        "u": st.none() | st.booleans() | json_scalars,
        "d": plausible_objects | json_values,
    },
)
plausible_frames = st.fixed_dictionaries(
    {"op": st.integers(-1, 6) | json_scalars},
    optional={"d": dispatch_bodies | plausible_objects | json_values},
)


@FUZZ
@given(value=json_values)
def test_arbitrary_json_values(value: Any) -> None:
    parse_both(value)
    parse_both({"op": 0, "d": value})


@FUZZ
@given(frame=plausible_frames)
def test_plausible_frames(frame: Any) -> None:
    parse_both(frame)


@FUZZ
@given(frame=plausible_frames, encoding=st.sampled_from(["json", "etf"]), compressed=st.booleans())
def test_plausible_frames_through_a_codec(frame: Any, encoding: str, compressed: bool) -> None:
    codec = Codec(encoding)
    try:
        payload, binary = (codec.encode_compressed(frame), True) if compressed else codec.encode(frame)
    except LeapEncodeError:  # NaN in JSON, big ints in ETF...
        return
    decode_and_parse(payload, binary)


etf_values = st.recursive(
    json_scalars
    | st.binary(max_size=5)
    | st.sampled_from([erlpack.Atom("op"), erlpack.Atom("MESSAGE"), erlpack.Atom("x")])
    | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.binary(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(value=etf_values, op=st.integers(-1, 5))
def test_arbitrary_etf_values(value: Any, op: int) -> None:
    for frame in (value, {"op": op, "d": value}, {"op": 0, "d": {"e": "MESSAGE", "c": "x", "d": value}}):
        parse_both(frame)
        try:
            payload = erlpack.pack(frame)
        except Exception:  # values erlpack cannot pack (e.g. big ints as keys)
            continue
        decode_and_parse(payload, True)


# -- corrupted valid frames ----------------------------------------------------------------

VALID_FRAMES = [
    frames.server_frame(MessageEvent("room", "chat", {"text": "hi", "n": [1, 2.5, None, True]}, seq=3)),
    frames.server_frame(MessageEvent(None, "dm", "x", direct=True)),
    frames.hello(30000),
    frames.heartbeat_request("abc"),
    frames.heartbeat_ack("abc", 12),
    frames.dispatch(
        "INIT",
        None,
        {
            "cid": "c",
            "connection_count": 1,
            "metadata": None,
            "scope": "token",
            "channels": [frames.channel_object(Channel("a", "p", {"k": 1}, "private", 1))],
        },
    ),
    frames.identify("project_x", "token"),
    frames.set_channel_state("room", {"k": [1, 2]}),
    frames.pipe_room_subscribe("join"),
]


@FUZZ
@given(
    index=st.integers(0, len(VALID_FRAMES) - 1),
    encoding=st.sampled_from(["json", "etf"]),
    compressed=st.booleans(),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("xdi")), min_size=1, max_size=4
    ),
)
def test_corrupted_valid_frames(index: int, encoding: str, compressed: bool, edits: list[tuple[int, int, str]]) -> None:
    codec = Codec(encoding)
    frame = VALID_FRAMES[index]
    if compressed:
        raw, binary = codec.encode_compressed(frame), True
    else:
        payload, binary = codec.encode(frame)
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    data = bytearray(raw)
    for position, value, kind in edits:
        at = position % (len(data) + 1)
        if kind == "x" and at < len(data):
            data[at] ^= value or 1
        elif kind == "d" and at < len(data):
            del data[at]
        else:
            data.insert(at, value)
    decode_and_parse(bytes(data), binary)


@FUZZ
@given(value=json_values)
def test_json_text_of_arbitrary_values(value: Any) -> None:
    try:
        text = json.dumps({"op": 0, "d": {"e": "MESSAGE", "c": "x", "d": value}})
    except ValueError:
        return
    decode_and_parse(text, False)
    decode_and_parse(text.encode("utf-8"), True)
