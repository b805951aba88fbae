"""Payload codecs: JSON and ETF, per-message zlib and its size bound."""

from __future__ import annotations

import json
import zlib

import erlpack
import pytest

from leap_sync.errors import LeapEncodeError, LeapError, LeapProtocolError
from leap_sync.protocol import etf
from leap_sync.protocol.codec import (
    COMPRESSIONS,
    DEFAULT_MAX_SIZE,
    ENCODINGS,
    Codec,
    decode_json,
    encode_json,
    inflate,
    is_zlib,
)

FRAME = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": {"text": "héllo ✓", "n": [1, 2.5, None]}}}}
FRAME_JSON = '{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"chat","d":{"text":"héllo ✓","n":[1,2.5,null]}}}}'


def test_constants() -> None:
    assert ENCODINGS == ("json", "etf")
    assert COMPRESSIONS == ("zlib", "none")
    assert DEFAULT_MAX_SIZE == 16 * 1024 * 1024


def test_codec_defaults() -> None:
    codec = Codec()
    assert codec.encoding == "json"
    assert codec.max_size == DEFAULT_MAX_SIZE
    assert codec.max_depth == etf.DEFAULT_MAX_DEPTH
    assert repr(codec) == f"Codec(encoding='json', max_size={DEFAULT_MAX_SIZE})"


@pytest.mark.parametrize("encoding", ["xml", "JSON", "", "zlib"])
def test_unknown_encoding_is_refused(encoding: str) -> None:
    with pytest.raises(ValueError, match="encoding must be one of"):
        Codec(encoding)


@pytest.mark.parametrize("max_size", [0, -1])
def test_max_size_must_be_positive(max_size: int) -> None:
    with pytest.raises(ValueError, match="max_size must be positive"):
        Codec(max_size=max_size)


# -- encoding ------------------------------------------------------------------------------


def test_json_encode_is_compact_utf8_text() -> None:
    payload, binary = Codec("json").encode(FRAME)
    assert payload == FRAME_JSON
    assert binary is False


def test_etf_encode_is_binary_term() -> None:
    payload, binary = Codec("etf").encode(FRAME)
    assert binary is True
    assert isinstance(payload, bytes)
    assert payload[0] == 131
    assert payload == erlpack.pack(FRAME)


def test_etf_encodes_none_and_booleans_as_atoms() -> None:
    payload, _ = Codec("etf").encode([None, True, False])
    assert payload == b"\x83l\x00\x00\x00\x03s\x03nils\x04trues\x05falsej"


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {1, 2}, b"bytes", object(), {"k": {"nested": {"x"}}}],
)
def test_json_encode_errors(value: object) -> None:
    with pytest.raises(LeapEncodeError):
        Codec("json").encode(value)


@pytest.mark.parametrize("value", [b"\xff", {"blob": bytearray(b"x")}, [memoryview(b"x")]])
def test_json_refuses_bytes_naming_etf(value: object) -> None:
    with pytest.raises(LeapEncodeError, match=r"bytes cannot travel in JSON.*encoding='etf'"):
        Codec("json").encode(value)


def test_etf_codec_round_trips_bytes_in_message_data() -> None:
    codec = Codec("etf")
    frame = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "blob", "d": b"\x00\xff"}}}
    payload, binary = codec.encode(frame)
    assert binary and codec.decode(payload, True) == frame
    assert codec.decode(codec.encode_compressed(frame), True) == frame


def test_json_encode_of_too_deep_value_is_an_encode_error() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(LeapEncodeError):
        encode_json(value)


@pytest.mark.parametrize("value", [2**64, -(2**64), {1, 2}, object(), "\ud800"])
def test_etf_encode_errors(value: object) -> None:
    with pytest.raises(LeapEncodeError):
        Codec("etf").encode(value)


def test_encode_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Codec("json").encode({"x": float("nan")})


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_encode_compressed_is_a_standalone_zlib_stream(encoding: str) -> None:
    codec = Codec(encoding)
    data = codec.encode_compressed(FRAME)
    assert isinstance(data, bytes)
    assert is_zlib(data)
    plain, _ = codec.encode(FRAME)
    assert zlib.decompress(data) == (plain if isinstance(plain, bytes) else plain.encode("utf-8"))


# -- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_text_frames_are_json(encoding: str) -> None:
    codec = Codec(encoding)
    assert codec.decode(FRAME_JSON, False) == FRAME
    assert codec.decode(FRAME_JSON.encode("utf-8"), False) == FRAME


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_binary_json(encoding: str) -> None:
    assert Codec(encoding).decode(FRAME_JSON.encode("utf-8"), True) == FRAME


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_binary_etf_is_decoded_whatever_the_encoding(encoding: str) -> None:
    assert Codec(encoding).decode(erlpack.pack(FRAME), True) == FRAME


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_zlib_json(encoding: str) -> None:
    assert Codec(encoding).decode(zlib.compress(FRAME_JSON.encode("utf-8")), True) == FRAME


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_zlib_etf(encoding: str) -> None:
    assert Codec(encoding).decode(zlib.compress(erlpack.pack(FRAME)), True) == FRAME


@pytest.mark.parametrize("level", [0, 1, 9])
def test_zlib_any_compression_level(level: int) -> None:
    assert Codec().decode(zlib.compress(FRAME_JSON.encode("utf-8"), level), True) == FRAME


def test_zlib_text_frame_is_not_inflated() -> None:
    data = zlib.compress(b'{"op":3}')
    with pytest.raises(LeapProtocolError):
        Codec().decode(data, False)


@pytest.mark.parametrize("encoding", ["json", "etf"])
def test_encode_decode_round_trip(encoding: str) -> None:
    codec = Codec(encoding)
    payload, binary = codec.encode(FRAME)
    assert codec.decode(payload, binary) == FRAME
    assert codec.decode(codec.encode_compressed(FRAME), True) == FRAME


def test_etf_binaries_and_keys_decode_as_str() -> None:
    value = Codec().decode(erlpack.pack({b"key": [b"bin", "text"]}), True)
    assert value == {"key": ["bin", "text"]}
    assert all(type(k) is str for k in value)
    assert [type(v) for v in value["key"]] == [str, str]


def test_str_payload_in_a_binary_frame() -> None:
    assert Codec().decode('{"op":3}', True) == {"op": 3}


def test_str_payload_with_lone_surrogate_in_a_binary_frame() -> None:
    with pytest.raises(LeapProtocolError):
        Codec().decode('{"op":"\ud800"}', True)


@pytest.mark.parametrize(
    ("payload", "binary"),
    [
        (b"", False),
        (b"", True),
        ("", False),
        (b"{", False),
        (b'{"op":', True),
        (b"\xff\xfe", False),
        (b'{"op":"\xc3"}', False),  # truncated UTF-8 sequence
        (b'{"op":"\xed\xa0\x80"}', True),  # UTF-8-encoded surrogate
        (b"NaNx", False),
        (b"\x00\x01", True),
        (b'{"a":1} trailing', False),
    ],
)
def test_malformed_payloads(payload: bytes | str, binary: bool) -> None:
    with pytest.raises(LeapProtocolError) as info:
        Codec().decode(payload, binary)
    assert info.value.close_code == 4005


def test_deep_json_is_a_protocol_error() -> None:
    with pytest.raises(LeapProtocolError):
        Codec().decode("[" * 200_000 + "]" * 200_000, False)


def test_json_int_beyond_the_digit_limit_is_a_protocol_error() -> None:
    with pytest.raises(LeapProtocolError):
        decode_json("1" * 10_000)


def test_decode_json_accepts_str_and_bytes() -> None:
    assert decode_json('{"a":[1]}') == {"a": [1]}
    assert decode_json(b'{"a":"\xc3\xa9"}') == {"a": "é"}


def test_encode_json_keeps_non_ascii() -> None:
    assert encode_json({"a": "é", "b": None}) == '{"a":"é","b":null}'


# -- zlib ----------------------------------------------------------------------------------


def test_is_zlib() -> None:
    for level in range(10):
        assert is_zlib(zlib.compress(b"x", level))
    assert is_zlib(zlib.compressobj(wbits=9).compress(b"") + b"")
    assert not is_zlib(b"")
    assert not is_zlib(b"\x78")
    assert not is_zlib(b"\x83j")
    assert not is_zlib(b'{"op":0}')
    assert not is_zlib(b"[1]")
    assert not is_zlib(b" {}")
    assert not is_zlib(b"\x78\x00")  # bad check bits


def test_etf_version_byte_is_never_a_zlib_header() -> None:
    assert not any(is_zlib(bytes([131, b])) for b in range(256))


def test_inflate() -> None:
    assert inflate(zlib.compress(b"hello" * 100)) == b"hello" * 100
    assert inflate(zlib.compress(b"")) == b""


def test_inflate_exactly_max_size_is_accepted() -> None:
    assert inflate(zlib.compress(b"a" * 1000), 1000) == b"a" * 1000


def test_inflate_one_byte_over_max_size_is_refused() -> None:
    with pytest.raises(LeapProtocolError, match="1000-byte limit"):
        inflate(zlib.compress(b"a" * 1001), 1000)


def test_zlib_bomb_is_refused_without_inflating_it() -> None:
    # 64 MiB of zeros in about 64 KiB; the bound stops inflating at max_size + 1 bytes.
    compressor = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 1 << 17
    with pytest.raises(LeapProtocolError, match="limit"):
        Codec(max_size=1 << 20).decode(bomb, True)


def test_codec_max_size_bounds_inflated_messages() -> None:
    payload = json.dumps({"op": 0, "d": {"x": "y" * 5000}}).encode()
    codec = Codec(max_size=len(payload))
    assert codec.decode(zlib.compress(payload), True) == json.loads(payload)
    with pytest.raises(LeapProtocolError):
        Codec(max_size=len(payload) - 1).decode(zlib.compress(payload), True)


def test_truncated_zlib_stream() -> None:
    data = zlib.compress(FRAME_JSON.encode("utf-8"))
    for cut in range(2, len(data)):
        with pytest.raises(LeapProtocolError):
            inflate(data[:cut])


def test_trailing_bytes_after_zlib_stream() -> None:
    with pytest.raises(LeapProtocolError, match="trailing"):
        inflate(zlib.compress(b'{"op":3}') + b"extra")


def test_corrupt_zlib_stream() -> None:
    data = bytearray(zlib.compress(b'{"op":3}' * 10))
    data[5] ^= 0xFF
    with pytest.raises(LeapProtocolError):
        Codec().decode(bytes(data), True)


def test_two_concatenated_zlib_streams_are_refused() -> None:
    one = zlib.compress(b'{"op":3}')
    with pytest.raises(LeapProtocolError):
        Codec().decode(one + one, True)


def test_zlib_stream_needing_a_preset_dictionary() -> None:
    compressor = zlib.compressobj(zdict=b"dictionary")
    data = compressor.compress(b'{"op":3}') + compressor.flush()
    assert is_zlib(data)
    with pytest.raises(LeapProtocolError):
        Codec().decode(data, True)


def test_nested_zlib_is_not_inflated_twice() -> None:
    with pytest.raises(LeapProtocolError):
        Codec().decode(zlib.compress(zlib.compress(b'{"op":3}')), True)


def test_zlib_wrapped_etf_respects_max_depth() -> None:
    # Ten nested one-element lists around an empty list (NIL, not a container).
    deep = b"\x83" + b"l\x00\x00\x00\x01" * 10 + b"j" + b"j" * 10
    expected: list[object] = []
    for _ in range(10):
        expected = [expected]
    assert Codec(max_depth=10).decode(zlib.compress(deep), True) == expected
    with pytest.raises(LeapProtocolError, match="deeper"):
        Codec(max_depth=9).decode(zlib.compress(deep), True)


# -- without erlpack -----------------------------------------------------------------------


def test_etf_codec_without_erlpack_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etf, "_erlpack", None)
    assert etf.erlpack_available() is False
    with pytest.raises(LeapError, match=r"leap-sync\[etf\]"):
        Codec("etf")


def test_json_codec_without_erlpack_refuses_etf_as_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etf, "_erlpack", None)
    codec = Codec("json")
    assert codec.decode(FRAME_JSON, False) == FRAME
    with pytest.raises(LeapProtocolError, match="etf extra"):
        codec.decode(b"\x83j", True)
