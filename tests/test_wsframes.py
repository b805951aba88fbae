"""The websocket frame reader for (unmasked) server frames."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapProtocolError
from leap_sync.wire.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketProtocolError,
    parse_close_payload,
    unmasked_frame,
)


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length_bits: int | None = None,
    length: int | None = None,
) -> bytes:
    """One websocket frame as a server writes it (unmasked unless ``mask`` is given).

    ``length_bits`` forces the 7-, 16- or 64-bit length form; ``length`` overrides the
    length written in the header (the payload is appended as given).
    """
    size = len(payload) if length is None else length
    if length_bits is None:
        length_bits = 7 if size < 126 else 16 if size < 1 << 16 else 64
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_bits == 7:
        header = bytes([b0, mask_bit | size])
    elif length_bits == 16:
        header = bytes([b0, mask_bit | 126]) + struct.pack(">H", size)
    else:
        header = bytes([b0, mask_bit | 127]) + struct.pack(">Q", size)
    if mask is not None:
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked
    return header + payload


def close_frame(code: int | None = None, reason: str = "") -> bytes:
    payload = b"" if code is None else struct.pack(">H", code) + reason.encode("utf-8")
    return frame(OP_CLOSE, payload)


def feed_bytewise(reader: FrameReader, data: bytes) -> list[tuple[bytes, bool]]:
    out: list[tuple[bytes, bool]] = []
    for i in range(len(data)):
        out.extend(reader.feed(data[i : i + 1]))
    return out


# -- single frames -------------------------------------------------------------------------


def test_text_frame() -> None:
    reader = FrameReader()
    assert reader.feed(frame(OP_TEXT, b'{"op":3}')) == [(b'{"op":3}', False)]
    assert reader.buffered == 0
    assert reader.close is None
    assert reader.pings == []


def test_binary_frame() -> None:
    reader = FrameReader()
    assert reader.feed(frame(OP_BINARY, b"\x83j")) == [(b"\x83j", True)]


def test_empty_data_frames() -> None:
    reader = FrameReader()
    assert reader.feed(frame(OP_TEXT) + frame(OP_BINARY)) == [(b"", False), (b"", True)]


def test_empty_feed_returns_nothing() -> None:
    reader = FrameReader()
    assert reader.feed(b"") == []
    assert reader.buffered == 0


@pytest.mark.parametrize("size", [0, 1, 125])
def test_seven_bit_lengths(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = frame(OP_BINARY, payload)
    assert len(data) == 2 + size
    assert FrameReader().feed(data) == [(payload, True)]


@pytest.mark.parametrize("size", [126, 127, 1000, 65535])
def test_sixteen_bit_lengths(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = frame(OP_BINARY, payload)
    assert data[1] == 126
    assert FrameReader().feed(data) == [(payload, True)]


@pytest.mark.parametrize("size", [65536, 70000])
def test_sixty_four_bit_lengths(size: int) -> None:
    payload = bytes(32 + i % 95 for i in range(size))  # text: printable ASCII
    data = frame(OP_TEXT, payload)
    assert data[1] == 127
    assert FrameReader().feed(data) == [(payload, False)]


def test_non_minimal_length_forms_are_accepted() -> None:
    reader = FrameReader()
    data = frame(OP_TEXT, b"abc", length_bits=16) + frame(OP_TEXT, b"de", length_bits=64)
    assert reader.feed(data) == [(b"abc", False), (b"de", False)]


def test_many_frames_in_one_feed() -> None:
    reader = FrameReader()
    messages = [(f"message {i}".encode() * (i % 40), i % 3 == 0) for i in range(300)]
    data = b"".join(frame(OP_BINARY if binary else OP_TEXT, payload) for payload, binary in messages)
    assert reader.feed(data) == messages
    assert reader.buffered == 0


def test_partial_frame_is_kept_until_complete() -> None:
    reader = FrameReader()
    data = frame(OP_TEXT, b"x" * 300)
    assert reader.feed(data[:3]) == []
    assert reader.buffered == 3
    assert reader.feed(data[3:100]) == []
    assert reader.buffered == 100
    assert reader.feed(data[100:] + frame(OP_TEXT, b"y")[:1]) == [(b"x" * 300, False)]
    assert reader.buffered == 1
    assert reader.feed(frame(OP_TEXT, b"y")[1:]) == [(b"y", False)]
    assert reader.buffered == 0


# -- fragmentation and control frames ------------------------------------------------------


def test_fragmented_text_message() -> None:
    reader = FrameReader()
    data = (
        frame(OP_TEXT, b'{"op":', fin=False)
        + frame(OP_CONTINUATION, b"0,", fin=False)
        + frame(OP_CONTINUATION, b'"d":1}')
    )
    assert reader.feed(data) == [(b'{"op":0,"d":1}', False)]


def test_fragmented_binary_message_fed_frame_by_frame() -> None:
    reader = FrameReader()
    assert reader.feed(frame(OP_BINARY, b"\x83", fin=False)) == []
    assert reader.feed(frame(OP_CONTINUATION, b"", fin=False)) == []
    assert reader.feed(frame(OP_CONTINUATION, b"j")) == [(b"\x83j", True)]
    # The reader is ready for the next message afterwards.
    assert reader.feed(frame(OP_TEXT, b"next")) == [(b"next", False)]


def test_ping_between_fragments() -> None:
    reader = FrameReader()
    data = (
        frame(OP_TEXT, b"hel", fin=False)
        + frame(OP_PING, b"p1")
        + frame(OP_CONTINUATION, b"lo", fin=False)
        + frame(OP_PONG, b"ignored")
        + frame(OP_PING)
        + frame(OP_CONTINUATION, b"!")
    )
    assert reader.feed(data) == [(b"hello!", False)]
    assert reader.pings == [b"p1", b""]


def test_pings_are_collected_in_order() -> None:
    reader = FrameReader()
    out = reader.feed(frame(OP_PING, b"a") + frame(OP_TEXT, b"m") + frame(OP_PING, b"b" * 125))
    assert out == [(b"m", False)]
    assert reader.pings == [b"a", b"b" * 125]


def test_pong_is_ignored() -> None:
    reader = FrameReader()
    assert reader.feed(frame(OP_PONG, b"x") + frame(OP_TEXT, b"m")) == [(b"m", False)]
    assert reader.pings == []


def test_close_frame_with_code_and_reason() -> None:
    reader = FrameReader()
    out = reader.feed(frame(OP_TEXT, b"before") + close_frame(4006, "wss://other.example/ws"))
    assert out == [(b"before", False)]
    assert reader.close == (4006, "wss://other.example/ws")


def test_close_frame_with_code_only() -> None:
    reader = FrameReader()
    assert reader.feed(close_frame(1000)) == []
    assert reader.close == (1000, "")


def test_close_frame_without_payload() -> None:
    reader = FrameReader()
    assert reader.feed(close_frame()) == []
    assert reader.close == (None, "")


def test_close_frame_with_one_byte_payload_is_invalid() -> None:
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader().feed(frame(OP_CLOSE, b"\x03"))
    assert info.value.close_code == 1002


def test_close_reason_with_invalid_utf8_is_a_protocol_error() -> None:
    reader = FrameReader()
    with pytest.raises(WebSocketProtocolError, match="reason that is not UTF-8") as failed:
        reader.feed(frame(OP_CLOSE, b"\x0f\xa1\xff"))
    assert failed.value.close_code == 1002
    assert reader.close is None


def test_nothing_is_parsed_after_a_close_frame() -> None:
    reader = FrameReader()
    data = close_frame(4000, "bye") + frame(OP_TEXT, b"after") + frame(OP_PING, b"p")
    assert reader.feed(data) == []
    assert reader.close == (4000, "bye")
    assert reader.pings == []
    assert reader.buffered == 0
    assert reader.feed(frame(OP_TEXT, b"later")) == []
    assert reader.feed(b"\xff\xff garbage that would be an error") == []
    assert reader.close == (4000, "bye")


def test_parse_close_payload() -> None:
    assert parse_close_payload(b"") == (None, "")
    assert parse_close_payload(b"\x03\xe8") == (1000, "")
    assert parse_close_payload(b"\x0f\xa6caf\xc3\xa9") == (4006, "café")
    with pytest.raises(WebSocketProtocolError):
        parse_close_payload(b"\x03")


# -- split feeds ---------------------------------------------------------------------------


def _mixed_stream() -> bytes:
    return b"".join(
        [
            frame(OP_TEXT, b'{"op":1,"d":{"heartbeat_interval":30000}}'),
            frame(OP_PING, b"ping-1"),
            frame(OP_BINARY, bytes(range(256)) * 2),  # 16-bit length
            frame(OP_TEXT, b"frag-", fin=False),
            frame(OP_PING, b"ping-2"),
            frame(OP_CONTINUATION, b"mented", fin=False),
            frame(OP_PONG, b""),
            frame(OP_CONTINUATION, b"!"),
            frame(OP_TEXT, b"x" * 70000),  # 64-bit length
            frame(OP_TEXT, b""),
            frame(OP_BINARY, b"\x83j", length_bits=64),
            close_frame(4007, "out of sync"),
            frame(OP_TEXT, b"never"),
        ]
    )


_EXPECTED_MESSAGES = [
    (b'{"op":1,"d":{"heartbeat_interval":30000}}', False),
    (bytes(range(256)) * 2, True),
    (b"frag-mented!", False),
    (b"x" * 70000, False),
    (b"", False),
    (b"\x83j", True),
]


def test_mixed_stream_in_one_feed() -> None:
    reader = FrameReader()
    assert reader.feed(_mixed_stream()) == _EXPECTED_MESSAGES
    assert reader.pings == [b"ping-1", b"ping-2"]
    assert reader.close == (4007, "out of sync")


def test_stream_split_at_every_byte_boundary_gives_identical_output() -> None:
    data = _mixed_stream()
    reference = FrameReader()
    expected = reference.feed(data)
    assert expected == _EXPECTED_MESSAGES
    # The 70,000-byte frame makes a full sweep slow; split everywhere in the small
    # frames and at a spread of points (including every header byte) in the large one.
    big_start = data.index(b"x" * 100) - 10
    big_end = big_start + 10 + 70000
    cuts = [*range(0, big_start + 40), *range(big_start + 40, big_end - 40, 997), *range(big_end - 40, len(data) + 1)]
    for cut in cuts:
        reader = FrameReader()
        out = reader.feed(data[:cut])
        out += reader.feed(data[cut:])
        assert out == expected, cut
        assert reader.pings == reference.pings, cut
        assert reader.close == reference.close, cut


def test_stream_split_at_every_byte_boundary_small_frames() -> None:
    data = b"".join(
        [
            frame(OP_TEXT, b"a"),
            frame(OP_BINARY, b"b" * 300),
            frame(OP_TEXT, b"c", fin=False),
            frame(OP_PING, b"p"),
            frame(OP_CONTINUATION, b"d"),
            frame(OP_TEXT, b"e" * 70000, length_bits=64)[:20],
        ]
    )
    expected = [(b"a", False), (b"b" * 300, True), (b"cd", False)]
    for cut in range(len(data) + 1):
        for second_cut in range(cut, len(data) + 1, 7):
            reader = FrameReader()
            out = reader.feed(data[:cut]) + reader.feed(data[cut:second_cut]) + reader.feed(data[second_cut:])
            assert out == expected, (cut, second_cut)
            assert reader.pings == [b"p"]
            assert reader.buffered == 20


def test_stream_fed_one_byte_at_a_time() -> None:
    data = _mixed_stream()
    reader = FrameReader()
    assert feed_bytewise(reader, data) == _EXPECTED_MESSAGES
    assert reader.pings == [b"ping-1", b"ping-2"]
    assert reader.close == (4007, "out of sync")


# -- errors --------------------------------------------------------------------------------


def _error(data: bytes, max_size: int = 1 << 20) -> WebSocketProtocolError:
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader(max_size).feed(data)
    assert isinstance(info.value, LeapProtocolError)
    return info.value


def test_masked_frame_is_rejected() -> None:
    assert _error(frame(OP_TEXT, b"hi", mask=b"\x01\x02\x03\x04")).close_code == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_are_rejected(rsv: int) -> None:
    assert _error(frame(OP_TEXT, b"hi", rsv=rsv)).close_code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_rejected(opcode: int) -> None:
    assert _error(frame(opcode, b"x")).close_code == 1002


def test_unknown_opcode_is_rejected_before_its_payload_arrives() -> None:
    assert _error(frame(0x3, b"x" * 100)[:2]).close_code == 1002


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_oversized_control_frame_is_rejected(opcode: int) -> None:
    assert _error(frame(opcode, b"\x03\xe8" + b"x" * 124)).close_code == 1002


def test_oversized_control_frame_is_rejected_from_its_header() -> None:
    assert _error(frame(OP_PING, b"x" * 200)[:4]).close_code == 1002


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame_is_rejected(opcode: int) -> None:
    assert _error(frame(opcode, b"", fin=False)).close_code == 1002


def test_continuation_without_a_message_is_rejected() -> None:
    assert _error(frame(OP_CONTINUATION, b"x")).close_code == 1002


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_new_data_frame_inside_a_fragmented_message_is_rejected(opcode: int) -> None:
    assert _error(frame(OP_TEXT, b"a", fin=False) + frame(opcode, b"b")).close_code == 1002


def test_top_bit_of_64_bit_length_is_rejected() -> None:
    data = bytes([0x81, 127]) + struct.pack(">Q", 1 << 63)
    assert _error(data).close_code == 1002


def test_frame_at_max_size_is_accepted() -> None:
    assert FrameReader(100).feed(frame(OP_TEXT, b"x" * 100)) == [(b"x" * 100, False)]


def test_frame_over_max_size_is_rejected_from_its_header() -> None:
    header = frame(OP_TEXT, b"x" * 101)[:4]
    assert _error(header, max_size=100).close_code == 1009


def test_huge_64_bit_length_fails_at_once_without_waiting_for_data() -> None:
    header = bytes([0x82, 127]) + struct.pack(">Q", 2**62)
    reader = FrameReader()
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(header)
    assert info.value.close_code == 1009


def test_huge_64_bit_length_fails_once_its_header_completes_bytewise() -> None:
    header = bytes([0x82, 127]) + struct.pack(">Q", 2**62)
    reader = FrameReader()
    for i in range(len(header) - 1):
        assert reader.feed(header[i : i + 1]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(header[-1:])
    assert info.value.close_code == 1009


def test_fragmented_message_over_max_size_is_rejected() -> None:
    data = frame(OP_TEXT, b"x" * 60, fin=False) + frame(OP_CONTINUATION, b"y" * 41)
    assert _error(data, max_size=100).close_code == 1009


def test_fragmented_message_at_max_size_is_accepted() -> None:
    data = frame(OP_TEXT, b"x" * 60, fin=False) + frame(OP_CONTINUATION, b"y" * 40)
    assert FrameReader(100).feed(data) == [(b"x" * 60 + b"y" * 40, False)]


def test_fragmented_message_over_max_size_is_rejected_before_the_payload_arrives() -> None:
    reader = FrameReader(100)
    assert reader.feed(frame(OP_BINARY, b"x" * 60, fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(frame(OP_CONTINUATION, b"y" * 41)[:2])
    assert info.value.close_code == 1009


def test_max_size_bounds_each_message_not_the_stream() -> None:
    reader = FrameReader(10)
    data = b"".join(frame(OP_TEXT, b"0123456789") for _ in range(50))
    assert reader.feed(data) == [(b"0123456789", False)] * 50


# -- hypothesis ----------------------------------------------------------------------------

control_frames = st.one_of(
    st.binary(max_size=125).map(lambda p: ("ping", p)),
    st.binary(max_size=125).map(lambda p: ("pong", p)),
)
data_messages = st.tuples(
    st.just("data"),
    st.binary(max_size=400)
    | st.binary(max_size=40)
    | st.tuples(st.integers(65_536, 66_000), st.integers(0, 255)).map(
        lambda t: (bytes(range(256)) * 260)[t[1] : t[1] + t[0]]  # 64-bit length, cheap to generate
    ),
    st.booleans(),  # binary
    st.lists(st.integers(min_value=0, max_value=70_000), max_size=3),  # fragment cut points
    st.lists(control_frames, max_size=2),  # control frames between fragments
    st.sampled_from([None, 16, 64]),  # forced length form
)


def _build_stream(items: list[Any]) -> tuple[bytes, list[tuple[bytes, bool]], list[bytes]]:
    stream = []
    messages = []
    pings = []
    for item in items:
        if item[0] == "ping":
            stream.append(frame(OP_PING, item[1]))
            pings.append(item[1])
        elif item[0] == "pong":
            stream.append(frame(OP_PONG, item[1]))
        else:
            _, payload, binary, cuts, controls, bits = item
            if not binary:  # text is UTF-8 (section 8.1): the bytes as Latin-1 characters, some of two bytes
                payload = payload.decode("latin-1").encode("utf-8")
            points = sorted({0, len(payload), *(c % (len(payload) + 1) for c in cuts)})
            pieces = [payload[a:b] for a, b in itertools.pairwise(points)] or [b""]
            for i, piece in enumerate(pieces):
                opcode = (OP_BINARY if binary else OP_TEXT) if i == 0 else OP_CONTINUATION
                forced = None if bits == 16 and len(piece) > 0xFFFF else bits
                stream.append(frame(opcode, piece, fin=i == len(pieces) - 1, length_bits=forced))
                if i < len(pieces) - 1 and controls:
                    kind, control_payload = controls[i % len(controls)]
                    stream.append(frame(OP_PING if kind == "ping" else OP_PONG, control_payload))
                    if kind == "ping":
                        pings.append(control_payload)
            messages.append((payload, binary))
    return b"".join(stream), messages, pings


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.one_of(data_messages, control_frames), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=200_000), max_size=12),
)
def test_random_streams_split_anywhere(items: list[Any], cuts: list[int]) -> None:
    data, messages, pings = _build_stream(items)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    reader = FrameReader()
    out: list[tuple[bytes, bool]] = []
    for a, b in itertools.pairwise(points):
        out.extend(reader.feed(data[a:b]))
    assert out == messages
    assert reader.pings == pings
    assert reader.close is None
    assert reader.buffered == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=300), max_size=st.integers(1, 200))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, cut: int, max_size: int) -> None:
    reader = FrameReader(max_size)
    try:
        out = reader.feed(data[:cut]) + reader.feed(data[cut:])
    except WebSocketProtocolError as exc:
        assert exc.close_code in (1002, 1007, 1009)
        return
    for payload, binary in out:
        assert isinstance(payload, bytes)
        assert len(payload) <= max_size
        assert isinstance(binary, bool)


def test_endless_empty_continuation_frames_are_bounded() -> None:
    from leap_sync.wire.wsframes import MAX_FRAGMENTS

    reader = FrameReader(max_size=1024)
    assert reader.feed(unmasked_frame(OP_TEXT, b"{", fin=False)) == []
    empty = unmasked_frame(OP_CONTINUATION, b"", fin=False)
    with pytest.raises(WebSocketProtocolError, match=f"more than {MAX_FRAGMENTS} frames") as refused:
        for _ in range(MAX_FRAGMENTS + 10):
            reader.feed(empty * 64)
    assert refused.value.close_code == 1009
    assert reader._fragments is None or len(reader._fragments) == 1  # empty fragments are not kept


def test_a_message_of_many_small_fragments_is_delivered() -> None:
    reader = FrameReader()
    stream = unmasked_frame(OP_TEXT, b"[", fin=False)
    stream += b"".join(unmasked_frame(OP_CONTINUATION, b"1,", fin=False) for _ in range(5000))
    stream += unmasked_frame(OP_CONTINUATION, b"1]")
    assert reader.feed(stream) == [(b"[" + b"1," * 5000 + b"1]", False)]
