"""JSON text with and without the ``fast`` extra (orjson): the same results and the
same errors either way, on every input.

Every test runs once per backend installed (``json`` always; ``orjson`` when the extra
is there). The differential tests decode the same input with both and compare values
(types included) and errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapEncodeError, LeapProtocolError
from leap_sync.protocol.codec import Codec
from leap_sync.wire import jsontext
from leap_sync.wire.jsontext import decode_json, encode_json

try:
    import orjson  # noqa: F401

    HAVE_ORJSON = True
except ImportError:
    HAVE_ORJSON = False

needs_orjson = pytest.mark.skipif(not HAVE_ORJSON, reason="orjson not installed")
BACKENDS = ["json", pytest.param("orjson", marks=pytest.mark.skipif(not HAVE_ORJSON, reason="orjson not installed"))]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    before = jsontext.backend()
    jsontext.set_backend(request.param)
    try:
        yield request.param
    finally:
        jsontext.set_backend(before)


def _outcome(data: str | bytes, name: str) -> tuple[str, Any]:
    before = jsontext.backend()
    jsontext.set_backend(name)
    try:
        return "ok", decode_json(data)
    except LeapProtocolError as exc:
        return "error", str(exc)
    finally:
        jsontext.set_backend(before)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (floats by repr: NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def _assert_backends_agree(data: str | bytes) -> None:
    plain = _outcome(data, "json")
    fast = _outcome(data, "orjson")
    assert plain[0] == fast[0], (data, plain, fast)
    if plain[0] == "ok":
        assert _same(plain[1], fast[1]), (data, plain, fast)
    else:
        assert plain[1] == fast[1]


def test_backend_names() -> None:
    assert jsontext.BACKENDS == ("json", "orjson")
    assert jsontext.backend() == ("orjson" if HAVE_ORJSON else "json")  # used automatically
    with pytest.raises(ValueError, match="backend must be one of"):
        jsontext.set_backend("simdjson")


@pytest.mark.skipif(HAVE_ORJSON, reason="orjson is installed")
def test_orjson_backend_needs_the_extra() -> None:
    with pytest.raises(ImportError, match="leap-sync\\[fast\\]"):
        jsontext.set_backend("orjson")


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


FRAME = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": {"text": "héllo ✓", "n": [1, 2.5, None]}}}}


@pytest.mark.parametrize("data", [json.dumps(FRAME), json.dumps(FRAME, separators=(",", ":"), ensure_ascii=False)])
def test_decodes_str_and_bytes(backend: str, data: str) -> None:
    assert decode_json(data) == FRAME
    assert decode_json(data.encode()) == FRAME
    assert Codec().decode(data.encode(), False) == FRAME
    assert Codec().decode(data.encode(), True) == FRAME


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),  # orjson: a float
        (b"-9223372036854775809", -9223372036854775809),
        (b"18446744073709551616", 18446744073709551616),
        (b"[9223372036854775807,-9223372036854775808]", [9223372036854775807, -9223372036854775808]),
        (b'{"id":1234567890123456789}', {"id": 1234567890123456789}),
        (b"1e400", math.inf),
        (b"-1e400", -math.inf),
        (b'"\\ud800"', "\ud800"),  # an escaped lone surrogate is valid JSON text
        (b' {"a":1}\n', {"a": 1}),
        (b"-0", 0),
        (b"-0.0", -0.0),
        (b"1E2", 100.0),
        (b'{"a":1,"a":2}', {"a": 2}),
        (b'"\\u0000"', "\x00"),
        (b"[" * 200 + b"]" * 200, _nested(200)),
    ],
)
def test_values_orjson_reads_differently_are_read_as_the_standard_library_reads_them(
    backend: str, data: bytes, expected: Any
) -> None:
    assert _same(decode_json(data), expected)


def test_nan_literals_decode_as_before(backend: str) -> None:
    value = decode_json(b"[NaN,Infinity,-Infinity]")
    assert math.isnan(value[0]) and value[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"\xef\xbb\xbf{}",  # a BOM
        b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
        b'{"a":"\xc3"}',  # truncated UTF-8
        b"[1,]",
        b'"\x01"',
        b'{"a":1} x',
        b"NaNx",
        b"\x00",
        b"1" * 10_000,  # beyond Python's digit limit
        b"[" * 200_000 + b"]" * 200_000,
        "1" * 10_000,
        '"\ud800"',  # str holding a lone surrogate: JSON text, read as such
    ],
)
@needs_orjson
def test_errors_are_the_same_with_either_backend(data: str | bytes) -> None:
    _assert_backends_agree(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"\xef\xbb\xbf{}", b'"\xed\xa0\x80"', b"[1,]", b'"\x01"', b'{"a":1} x', b"1" * 10_000],
)
def test_malformed_input_is_a_protocol_error(backend: str, data: bytes) -> None:
    with pytest.raises(LeapProtocolError, match="invalid JSON payload") as info:
        decode_json(data)
    assert info.value.close_code == 4005


# -- encoding (the standard library's encoder with either backend) -----------------------


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), b"bytes", bytearray(b"x"), {1, 2}, object(), {"k": ["\ud800"]}],
)
def test_encode_refuses_what_json_cannot_carry(backend: str, value: object) -> None:
    with pytest.raises(LeapEncodeError, match="cannot encode value as JSON"):
        encode_json(value)


def test_encode_accepts_what_the_standard_library_accepts(backend: str) -> None:
    assert encode_json({1: 2, None: True, 2.5: "x"}) == '{"1":2,"null":true,"2.5":"x"}'
    assert encode_json([2**80, "é", 1.5]) == '[1208925819614629174706176,"é",1.5]'


# -- differential: both backends on the same inputs ----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@needs_orjson
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.booleans())
def test_backends_agree_on_any_json_value(value: Any, compact: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(value, separators=separators, ensure_ascii=compact)
    _assert_backends_agree(text.encode("utf-8", "surrogatepass"))
    _assert_backends_agree(text)


@needs_orjson
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_backends_agree_on_any_bytes(data: bytes) -> None:
    _assert_backends_agree(data)


@needs_orjson
@settings(max_examples=300, deadline=None)
@given(json_values, st.data())
def test_backends_agree_on_damaged_json(value: Any, data: st.DataObject) -> None:
    raw = bytearray(json.dumps(value, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    for _ in range(data.draw(st.integers(1, 3))):
        if raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
    _assert_backends_agree(bytes(raw))


# -- decode_json_many: what decode_json does one at a time ---------------------------------


def _one_at_a_time(payloads: list[bytes]) -> tuple[list[Any], str | None]:
    out: list[Any] = []
    for payload in payloads:
        try:
            out.append(decode_json(payload))
        except LeapProtocolError as exc:
            return out, str(exc)
        except Exception as exc:  # pragma: no cover - would be a bug
            return out, repr(exc)
    return out, None


def _assert_many_matches(payloads: list[bytes]) -> None:
    values, error = jsontext.decode_json_many(payloads)
    expected, expected_error = _one_at_a_time(payloads)
    assert (None if error is None else str(error)) == expected_error
    assert len(values) == len(expected)
    assert all(map(_same, values, expected)), (payloads, values, expected)


@pytest.mark.parametrize(
    "payloads",
    [
        [],
        [b'{"a":1}'],
        [b'{"a":1}', b"[1,2]", b'"x"', b"3", b"true", b"null"],
        [b"1", b"2"],  # numbers must not run together
        [b"1.", b"5"],
        [b'"ab', b'c"'],  # a string must not span payloads
        [b"1,2", b"[3", b"4]"],  # nor may a value: each payload is read as alone
        [b'{"a":1}', b'{"a":', b'{"b":2}'],  # a bad one in the middle: the ones before it are kept
        [b'{"a":1}', b" {}", b"[] "],  # whitespace: read by the full decoder
        [b'{"n":123456789012345678901234567890}', b'{"a":1}'],
        [b'{"t":"h\xc3\xa9llo"}', b'{"a":1}'],  # non-ASCII
        [b'{"t":"\xff"}', b'{"a":1}'],  # invalid UTF-8 first
        [b'{"a":1}', b'"\xed\xa0\x80"'],  # invalid UTF-8 last
        [b'"\\ud800"', b"NaN", b"[1e400]"],
        [b"[" * 5000 + b"]" * 5000, b"1"],
        [b""],
    ],
)
def test_decode_json_many_is_decode_json_one_at_a_time(backend: str, payloads: list[bytes]) -> None:
    _assert_many_matches(payloads)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=6), st.data())
def test_decode_json_many_matches_on_any_batch(values: list[Any], data: st.DataObject) -> None:
    payloads = [json.dumps(v, separators=(",", ":")).encode("utf-8", "surrogatepass") for v in values]
    if payloads and data.draw(st.booleans()):  # damage one byte of one payload
        k = data.draw(st.integers(0, len(payloads) - 1))
        raw = bytearray(payloads[k])
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            payloads[k] = bytes(raw)
    for name in ["json"] + (["orjson"] if HAVE_ORJSON else []):
        before = jsontext.backend()
        jsontext.set_backend(name)
        try:
            _assert_many_matches(payloads)
        finally:
            jsontext.set_backend(before)


@pytest.mark.parametrize("max_items", [None, 3, 5, 50])
def test_decode_json_many_applies_max_items_as_decode_json_does(backend: str, max_items: int | None) -> None:
    payloads = [b'{"a":1}', b"[1,2,3,4,5,6]", b'{"a":[1,2],"b":{"c":3}}', b"7"]
    values, error = jsontext.decode_json_many(payloads, max_items)
    expected: list[Any] = []
    expected_error = None
    for payload in payloads:
        try:
            expected.append(decode_json(payload, max_items))
        except LeapProtocolError as exc:
            expected_error = str(exc)
            break
    assert values == expected
    assert (None if error is None else str(error)) == expected_error
    if max_items == 5:
        assert expected_error is not None and "max_message_items" in expected_error
