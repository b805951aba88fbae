"""The one-pass ETF decoder (protocol/etf_fast.py) gives exactly what the general path
(check_term, then erlpack) gives: the same values, types included, and the same errors,
on any input; and it is the path taken for what servers send."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import erlpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leap_sync.errors import LeapProtocolError
from leap_sync.protocol import etf, etf_fast
from leap_sync.protocol.codec import Codec


@pytest.fixture
def general_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(etf, "_atom", None)
    yield


def _general(data: bytes, max_depth: int = etf.DEFAULT_MAX_DEPTH) -> tuple[str, Any]:
    atom, etf._atom = etf._atom, None
    try:
        return "ok", etf.decode(data, max_depth)
    except LeapProtocolError as exc:
        return "error", str(exc)
    finally:
        etf._atom = atom


def _combined(data: bytes, max_depth: int = etf.DEFAULT_MAX_DEPTH) -> tuple[str, Any]:
    try:
        return "ok", etf.decode(data, max_depth)
    except LeapProtocolError as exc:
        return "error", str(exc)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(_same(ka, kb) for ka, kb in zip(a, b, strict=True))
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def _assert_agree(data: bytes, max_depth: int = etf.DEFAULT_MAX_DEPTH) -> None:
    general = _general(data, max_depth)
    combined = _combined(data, max_depth)
    assert general[0] == combined[0], (data, general, combined)
    if general[0] == "ok":
        assert _same(general[1], combined[1]), (data, general, combined)
    else:
        assert general[1] == combined[1]


MESSAGE = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": {"n": 7, "text": "héllo"}}}}


def test_what_servers_send_takes_the_one_pass_decoder() -> None:
    data = erlpack.pack(MESSAGE)
    assert etf_fast.decode(data, etf.DEFAULT_MAX_DEPTH, erlpack.Atom) == MESSAGE
    assert Codec("etf").decode(data, True) == MESSAGE
    _assert_agree(data)


@pytest.mark.parametrize(
    "value",
    [
        MESSAGE,
        {"a": [1, 2.5, None, True, False, -3, 2**31 - 1, -(2**31)], "b": {}},
        [[[]]],
        {"bin": b"\xff\xfe", "ok": b"text"},  # a binary that is not UTF-8 stays bytes
        {b"\xff": 1, "k": 2},
        {"t": (1, 2)},  # tuples: the general path
        {"big": 2**40, "neg": -(2**40)},  # big integers: the general path
        {"s": "x" * 70000},
        "plain",
        3.25,
        [],
        {"op": 3, "d": None},
    ],
)
def test_values_agree(value: Any) -> None:
    _assert_agree(erlpack.pack(value))


def _small_atom(name: bytes, utf8: bool = True) -> bytes:
    return bytes([119 if utf8 else 115, len(name)]) + name


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x83",
        b"\x84a\x01",  # wrong version
        b"\x83a",  # truncated small integer
        b"\x83a\x01\x00",  # trailing byte
        b"\x83m\x00\x00\x00\x05abc",  # truncated binary
        b"\x83t\x00\x00\x00\x01",  # a map that promises more than there is
        b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x01a",  # a key without its value
        b"\x83l\x00\x00\x00\x01a\x01",  # a list without its tail
        b"\x83l\x00\x00\x00\x01a\x01a\x02",  # a list with a non-empty tail
        b"\x83l\x00\x00\x00\x00k\x00\x00",  # an empty string as the tail: erlpack takes it
        b"\x83" + _small_atom(b"true") + b"",
        b"\x83" + _small_atom(b"nil", utf8=False),
        b"\x83" + _small_atom(b"\xff\xfe"),  # an atom that is not UTF-8
        b"\x83" + _small_atom(b"\xff\xfe", utf8=False),  # latin-1: fine
        b"\x83" + _small_atom(b"abc"),
        b"\x83t\x00\x00\x00\x01l\x00\x00\x00\x00jj",  # an unhashable key
        b"\x83t\x00\x00\x00\x02a\x01a\x02a\x01a\x03",  # a repeated key: the last wins
        b"\x83c" + b"1.5".ljust(31, b"\x00"),  # old FLOAT_EXT: erlpack fails on it
        b"\x83F" + struct.pack(">d", math.inf),
        b"\x83F" + struct.pack(">d", 1.5)[:4],
        b"\x83b\xff\xff\xff\xff",
        b"\x83P\x00\x00\x00\x10x\x9c",  # compressed: refused
        b"\x83gs\x01a\x00\x00\x00\x01\x00\x00\x00\x01\x00",  # a pid: refused
    ],
)
def test_edge_inputs_agree(data: bytes) -> None:
    _assert_agree(data)


def _nested(depth: int, inner: bytes = b"j") -> bytes:
    return b"\x83" + b"l\x00\x00\x00\x01" * depth + inner + b"j" * depth


@pytest.mark.parametrize("depth", [1, 5, 254, 255, 256, 257, 300])
def test_depth_bound_agrees(depth: int) -> None:
    _assert_agree(_nested(depth))
    _assert_agree(_nested(depth), max_depth=depth)
    _assert_agree(_nested(depth), max_depth=depth - 1)


def test_depth_bound_is_enforced() -> None:
    assert etf.decode(_nested(3), 3) == [[[[]]]]
    with pytest.raises(LeapProtocolError, match="nested deeper than 2"):
        etf.decode(_nested(3), 2)


def test_the_general_path_alone_still_decodes(general_only: None) -> None:
    assert etf.decode(erlpack.pack(MESSAGE)) == MESSAGE


terms = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=6)
    | st.sampled_from([erlpack.Atom("a"), erlpack.Atom("é"), erlpack.Atom("nil")]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=3) | st.integers(0, 300), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_any_term_agrees(value: Any) -> None:
    _assert_agree(erlpack.pack(value))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_any_damaged_term_agrees(value: Any, data: st.DataObject) -> None:
    raw = bytearray(erlpack.pack(value))
    action = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif action == "cut":
        del raw[data.draw(st.integers(1, len(raw))) :]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=4))
    _assert_agree(bytes(raw), data.draw(st.sampled_from([etf.DEFAULT_MAX_DEPTH, 1, 2, 3])))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_agree(data: bytes) -> None:
    _assert_agree(b"\x83" + data)


def _nested_maps(depth: int) -> bytes:
    return b"\x83" + b"t\x00\x00\x00\x01a\x01" * depth + b"j"


@pytest.mark.parametrize("depth", [1, 255, 256, 257])
def test_depth_bound_agrees_for_maps(depth: int) -> None:
    _assert_agree(_nested_maps(depth))
    _assert_agree(_nested_maps(depth), max_depth=depth - 1)


def _combined_items(data: bytes, max_items: int) -> tuple[str, Any]:
    try:
        return "ok", etf.decode(data, etf.DEFAULT_MAX_DEPTH, max_items=max_items)
    except LeapProtocolError as exc:
        return "error", str(exc)


def _general_items(data: bytes, max_items: int) -> tuple[str, Any]:
    atom, etf._atom = etf._atom, None
    try:
        return _combined_items(data, max_items)
    finally:
        etf._atom = atom


@pytest.mark.parametrize("max_items", [1, 2, 5, 9, 10, 11, 12, 1000])
def test_max_items_agrees(max_items: int) -> None:
    data = erlpack.pack({"a": [1, 2, 3], "b": {"c": None}})  # 1 + 4 + 4 + 2 = 11 terms
    general = _general_items(data, max_items)
    combined = _combined_items(data, max_items)
    assert general == combined
    assert (general[0] == "ok") == (max_items >= 11 or len(data) <= max_items)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.integers(1, 40))
def test_any_term_agrees_under_max_items(value: Any, max_items: int) -> None:
    data = erlpack.pack(value)
    general = _general_items(data, max_items)
    combined = _combined_items(data, max_items)
    assert general[0] == combined[0]
    if general[0] == "ok":
        assert _same(general[1], combined[1])
    else:
        assert general[1] == combined[1]


def _one_at_a_time(payloads: list[bytes], max_items: int | None) -> list[Any]:
    """What :func:`etf_fast.decode` returns for the leading payloads, up to the first
    it does not return a value for."""
    out = []
    for data in payloads:
        bound = max_items if max_items is not None and len(data) > max_items else None
        try:
            out.append(etf_fast.decode(data, etf.DEFAULT_MAX_DEPTH, erlpack.Atom, bound))
        except Exception:
            break
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            terms.map(erlpack.pack),
            st.binary(max_size=12).map(lambda tail: b"\x83" + tail),
            st.sampled_from([b"", b"\x83", b"\x84a\x01", b"\x83a\x01\x00", b"\x83t\x00\x00\x00\x01"]),
        ),
        max_size=12,
    ),
    st.one_of(st.none(), st.integers(1, 40)),
)
def test_decode_many_is_decode_one_at_a_time(payloads: list[bytes], max_items: int | None) -> None:
    """A batch decodes, in one call, exactly the leading payloads decode() returns
    values for, with the same values (the rest go the general way, one at a time)."""
    many = etf_fast.decode_many(payloads, etf.DEFAULT_MAX_DEPTH, erlpack.Atom, max_items)
    single = _one_at_a_time(payloads, max_items)
    assert len(many) == len(single)
    assert all(map(_same, many, single))
