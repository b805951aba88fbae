"""ETF through erlpack, and the safety scan that runs before erlpack sees a term."""

from __future__ import annotations

import struct

import erlpack
import pytest

from leap_sync.errors import LeapEncodeError, LeapProtocolError
from leap_sync.protocol import etf
from leap_sync.protocol.codec import Codec

SAMPLE = {
    "op": 0,
    "d": {
        "c": "room",
        "u": True,
        "e": "MESSAGE",
        "d": {
            "e": "chat",
            "d": {
                "text": "héllo ✓",
                "n": [0, 255, 256, -1, 2**31 - 1, -(2**31), 2**40, -(2**63), 2**64 - 1],
                "f": [1.5, -0.25, 1e300],
                "atoms": [None, True, False],
                "empty": [[], {}, ""],
                "tuple": (1, "two"),
            },
        },
    },
}


def list_term(depth: int) -> bytes:
    """``depth`` nested one-element lists around an empty list."""
    return b"\x83" + b"l\x00\x00\x00\x01" * depth + b"j" + b"j" * depth


def nested_list(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_erlpack_is_installed() -> None:
    assert etf.erlpack_available() is True
    assert etf.VERSION == 131
    assert etf.DEFAULT_MAX_DEPTH == 256


def test_encode_decode_round_trip() -> None:
    data = etf.encode(SAMPLE)
    assert data[0] == 131
    etf.check_term(data)
    assert etf.decode(data) == SAMPLE


def test_binaries_and_keys_decode_as_str_atoms_as_atom() -> None:
    term = b"\x83t\x00\x00\x00\x02m\x00\x00\x00\x01km\x00\x00\x00\x02\xc3\xa9d\x00\x01ad\x00\x03abc"
    value = etf.decode(term)
    assert value == {"k": "é", "a": "abc"}
    assert type(value["k"]) is str
    assert type(value["a"]) is erlpack.Atom
    assert isinstance(value["a"], str)


@pytest.mark.parametrize(
    ("term", "value"),
    [
        (b"\x83s\x03nil", None),
        (b"\x83s\x04true", True),
        (b"\x83s\x05false", False),
        (b"\x83d\x00\x03nil", None),
        (b"\x83w\x03nil", None),  # SMALL_ATOM_UTF8_EXT, as OTP 26+ sends
        (b"\x83v\x00\x04true", True),  # ATOM_UTF8_EXT
    ],
)
def test_special_atoms(term: bytes, value: object) -> None:
    assert etf.decode(term) is value


def test_utf8_atom() -> None:
    value = etf.decode(b"\x83w\x03\xc3\xa9x")
    assert value == "éx"
    assert type(value) is erlpack.Atom


@pytest.mark.parametrize(
    ("term", "value"),
    [
        (b"\x83a\xff", 255),
        (b"\x83b\xff\xff\xff\xff", -1),
        (b"\x83n\x08\x00" + b"\xff" * 8, 2**64 - 1),
        (b"\x83n\x08\x01" + b"\xff" * 8, -(2**64 - 1)),
        (b"\x83o\x00\x00\x00\x02\x00\x01\x02", 513),
        (b"\x83F" + struct.pack(">d", -2.5), -2.5),
        (b"\x83j", []),
        (b"\x83k\x00\x03abc", [97, 98, 99]),  # STRING_EXT is a list of bytes
        (b"\x83h\x02a\x01a\x02", (1, 2)),
        (b"\x83i\x00\x00\x00\x01a\x01", (1,)),
        (b"\x83t\x00\x00\x00\x00", {}),
        (b"\x83m\x00\x00\x00\x00", ""),
    ],
)
def test_term_types(term: bytes, value: object) -> None:
    etf.check_term(term)
    assert etf.decode(term) == value


def test_big_integer_of_64_bytes_is_accepted() -> None:
    assert etf.decode(b"\x83n\x40\x00" + b"\x00" * 63 + b"\x01") == 1 << 504


@pytest.mark.parametrize("term", [b"\x83n\x41\x00" + b"\x01" * 65, b"\x83o\x00\x00\x01\x00\x00" + b"\x01" * 256])
def test_big_integer_over_64_bytes_is_refused(term: bytes) -> None:
    with pytest.raises(LeapProtocolError, match="too large"):
        etf.check_term(term)


# -- the safety scan -----------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x82j", b"j", b"{}", b"\x00"])
def test_missing_version_byte(data: bytes) -> None:
    with pytest.raises(LeapProtocolError, match="version byte"):
        etf.check_term(data)


def test_version_byte_alone_is_truncated() -> None:
    with pytest.raises(LeapProtocolError, match="truncated"):
        etf.check_term(b"\x83")


def test_every_truncation_of_a_term_is_refused() -> None:
    data = etf.encode(SAMPLE)
    for cut in range(len(data)):
        with pytest.raises(LeapProtocolError):
            etf.check_term(data[:cut])
        with pytest.raises(LeapProtocolError):
            etf.decode(data[:cut])


@pytest.mark.parametrize("extra", [b"j", b"\x00", b"\x83j"])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    with pytest.raises(LeapProtocolError, match="trailing"):
        etf.check_term(etf.encode(SAMPLE) + extra)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (77, "BIT_BINARY_EXT"),
        (80, "compressed term"),
        (82, "ATOM_CACHE_REF"),
        (88, "NEW_PID_EXT"),
        (89, "NEW_PORT_EXT"),
        (90, "NEWER_REFERENCE_EXT"),
        (101, "REFERENCE_EXT"),
        (102, "PORT_EXT"),
        (103, "PID_EXT"),
        (112, "NEW_FUN_EXT"),
        (113, "EXPORT_EXT"),
        (114, "NEW_REFERENCE_EXT"),
        (117, "FUN_EXT"),
        (121, "LOCAL_EXT"),
        (0, "not a tag"),
        (255, "not a tag"),
    ],
)
def test_unsupported_term_types_are_refused(tag: int, name: str) -> None:
    data = b"\x83" + bytes([tag]) + b"\x00" * 40
    with pytest.raises(LeapProtocolError, match=f"unsupported ETF term type {tag}"):
        etf.check_term(data)
    # ...also inside a container.
    with pytest.raises(LeapProtocolError, match="unsupported"):
        etf.check_term(b"\x83l\x00\x00\x00\x01" + bytes([tag]) + b"\x00" * 40)


@pytest.mark.parametrize(
    "data",
    [
        b"\x83m\xff\xff\xff\xff",  # binary claiming 4 GiB
        b"\x83m\x00\x00\x00\x05abc",
        b"\x83d\x00\x09abc",  # atom claiming 9 bytes
        b"\x83s\x05ab",
        b"\x83k\xff\xffab",
        b"\x83l\xff\xff\xff\xffj",  # list claiming 4 billion elements
        b"\x83h\xffa\x01",
        b"\x83i\xff\xff\xff\xffa\x01",
        b"\x83t\x7f\xff\xff\xffa\x01a\x02",
        b"\x83t\x00\x00\x00\x02a\x01a\x02a\x03",  # map: 2 pairs need 4 terms
        b"\x83n\x08\x00\x01",
        b"\x83o\x00\x00\x00\x40\x00\x01",
        b"\x83F\x00\x00",
        b"\x83b\x00",
        b"\x83a",
        b"\x83l\x00\x00\x00\x01a\x01",  # no tail
    ],
)
def test_lying_lengths_are_refused_before_erlpack(data: bytes) -> None:
    with pytest.raises(LeapProtocolError, match="truncated"):
        etf.check_term(data)


def test_depth_limit_is_exact() -> None:
    for max_depth in (1, 2, 5, 256):
        etf.check_term(list_term(max_depth), max_depth)
        assert etf.decode(list_term(max_depth), max_depth) == nested_list(max_depth)
        with pytest.raises(LeapProtocolError, match=f"nested deeper than {max_depth}"):
            etf.check_term(list_term(max_depth + 1), max_depth)


def test_default_depth_limit() -> None:
    etf.check_term(list_term(256))
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.check_term(list_term(257))


def test_depth_counts_tuples_and_maps() -> None:
    tuples = b"\x83" + b"h\x01" * 3 + b"j"
    etf.check_term(tuples, 3)
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.check_term(tuples, 2)
    # {"k": {"k": {}}}: three maps, the inner ones as values.
    maps = b"\x83" + b"t\x00\x00\x00\x01m\x00\x00\x00\x01k" * 2 + b"t\x00\x00\x00\x00"
    assert etf.decode(maps, 3) == {"k": {"k": {}}}
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.check_term(maps, 2)


def test_wide_terms_are_not_deep() -> None:
    wide = etf.encode([[[1]] for _ in range(10_000)])
    etf.check_term(wide, 3)
    assert etf.decode(wide, 3) == [[[1]]] * 10_000


def test_million_deep_list_is_refused_before_erlpack_sees_it() -> None:
    # erlpack's C decoder overflows the C stack (a segfault) on ~100k-deep terms; the
    # scan must refuse this one without handing it over, or this test crashes pytest.
    data = list_term(1_000_000)
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.decode(data)
    with pytest.raises(LeapProtocolError, match="deeper"):
        Codec("etf").decode(data, True)
    with pytest.raises(LeapProtocolError, match="deeper"):
        Codec("json").decode(data, True)


def test_million_deep_tuples_and_maps_are_refused() -> None:
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.decode(b"\x83" + b"h\x01" * 1_000_000 + b"j")
    with pytest.raises(LeapProtocolError, match="deeper"):
        etf.decode(b"\x83" + b"t\x00\x00\x00\x01a\x01" * 1_000_000 + b"j")


@pytest.mark.parametrize(
    "data",
    [
        b"\x83l\x00\x00\x00\x01a\x01a\x02",  # improper list
        b"\x83t\x00\x00\x00\x01l\x00\x00\x00\x01a\x01ja\x02",  # list as a map key
        b"\x83t\x00\x00\x00\x01t\x00\x00\x00\x00a\x02",  # map as a map key
        b"\x83v\x00\x02\xff\xfe",  # invalid UTF-8 atom
        b"\x83l\x00\x00\x00\x02m\x00\x00\x00\x01\xffv\x00\x01\xffj",  # ...beside a binary that is not
        b"\x83c" + b"1.5".ljust(31, b"\x00"),  # FLOAT_EXT, which erlpack cannot decode
    ],
)
def test_erlpack_errors_become_protocol_errors(data: bytes) -> None:
    etf.check_term(data)
    with pytest.raises(LeapProtocolError, match="invalid ETF payload"):
        etf.decode(data)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x83m\x00\x00\x00\x02\xff\xfe", b"\xff\xfe"),  # a binary that is not UTF-8 is bytes
        (b"\x83m\x00\x00\x00\x00", ""),
        # beside it, text binaries stay str; keys too, and each binary is judged alone
        (
            etf.encode({"k": b"\x80", "t": ["ok", b"\xc3\xa9", (b"\xff",)], b"\xfe": True}),
            {"k": b"\x80", "t": ["ok", "é", (b"\xff",)], b"\xfe": True},
        ),
    ],
)
def test_binaries_that_are_not_utf8_decode_as_bytes(data: bytes, value: object) -> None:
    decoded = etf.decode(data)
    assert decoded == value
    assert type(decoded) is type(value)


def test_bytes_round_trip() -> None:
    value = {"blob": bytes(range(256)), "text": "hi", "list": [b"\x00\xff", None]}
    assert etf.decode(etf.encode(value)) == value


# -- encoding ------------------------------------------------------------------------------


def test_encode() -> None:
    assert etf.encode({"a": None}) == b"\x83t\x00\x00\x00\x01m\x00\x00\x00\x01as\x03nil"
    assert etf.encode("é") == b"\x83m\x00\x00\x00\x02\xc3\xa9"


@pytest.mark.parametrize("value", [2**64, -(2**64), {1}, frozenset(), object(), 1j, nested_list(1000)])
def test_encode_errors(value: object) -> None:
    with pytest.raises(LeapEncodeError, match="cannot encode value as ETF"):
        etf.encode(value)


def test_encode_depth_limit_matches_decode() -> None:
    # Whatever erlpack packs, the default limit decodes: erlpack packs 256 levels...
    assert etf.decode(etf.encode(nested_list(256))) == nested_list(256)
    # ...and no more.
    with pytest.raises(LeapEncodeError):
        etf.encode(nested_list(257))
