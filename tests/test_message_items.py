"""The work a message costs is bounded by what it decodes to, not only by its bytes:
``max_message_items`` (values per message, object keys and map keys included) is
checked before the decode, for JSON and ETF, zlib-wrapped or not, in LeapClient and
ElstatClient alike."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import erlpack
import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer, leap_session

from leap_sync import ConnectionState, LeapClient
from leap_sync.elstat import ElstatClient
from leap_sync.elstat.session import ElstatSession
from leap_sync.errors import LeapProtocolError
from leap_sync.protocol import etf
from leap_sync.protocol.codec import Codec
from leap_sync.wire import jsontext
from leap_sync.wire.jsontext import DEFAULT_MAX_ITEMS, check_items, decode_json
from leap_sync.wire.wsframes import OP_BINARY

pytestmark = pytest.mark.timeout(60)

MIB16 = 16 * 1024 * 1024


def json_bomb() -> bytes:
    """The issue's input: a zlib frame of about 16 KB inflating to 16 MiB of
    ``[[],[],...]`` (5.6 million empty lists)."""
    count = (MIB16 - 2) // 3
    text = b"[" + b"[]," * (count - 1) + b"[]]"
    return zlib.compress(text, 9)


def etf_bomb() -> bytes:
    """The ETF equivalent: one list of 16 million empty lists (NIL_EXT, one byte each)."""
    count = MIB16 - 8
    return zlib.compress(b"\x83l" + struct.pack(">I", count) + b"j" * count + b"j", 9)


def never(*args: Any) -> Any:
    raise AssertionError("the decoder ran")


def test_the_default_and_the_bombs_sizes() -> None:
    assert DEFAULT_MAX_ITEMS == 1_000_000
    assert len(json_bomb()) < 20_000 and len(etf_bomb()) < 20_000
    assert len(zlib.decompress(json_bomb())) <= MIB16 and len(zlib.decompress(etf_bomb())) <= MIB16


def test_a_json_zlib_bomb_is_refused_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsontext, "_json_scan", never)
    monkeypatch.setattr(jsontext, "_json_decode", never)
    with pytest.raises(LeapProtocolError) as refused:
        Codec("json").decode(json_bomb(), True)
    assert str(refused.value) == "message holds more than 1000000 values (max_message_items)"


def test_an_etf_zlib_bomb_is_refused_before_erlpack_sees_it() -> None:
    codec = Codec("etf")
    codec._etf_loads = never  # type: ignore[assignment]
    with pytest.raises(LeapProtocolError) as refused:
        codec.decode(etf_bomb(), True)
    assert str(refused.value) == "ETF term holds more than 1000000 terms (max_message_items)"


def test_a_user_can_raise_the_bound() -> None:
    assert Codec("json", max_items=6_000_000).decode(json_bomb(), True)[:2] == [[], []]


# -- counting JSON ---------------------------------------------------------------------------

DOC = json.dumps(["a,b", 'x\\"[,', 'q"{', 1, {"k:": "v"}])  # 8 values: list, 3 strings, 1, dict, key, value


@pytest.mark.parametrize("data", [DOC, DOC.encode()])
def test_json_counts_values_exactly_whatever_strings_hold(data: str | bytes) -> None:
    check_items(data, 8)  # the brackets, commas and colons inside strings are not counted
    assert decode_json(data, 8) == json.loads(DOC)
    with pytest.raises(LeapProtocolError, match="more than 7 values"):
        decode_json(data, 7)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("[]", 1),
        ("[1,2,3]", 4),
        ('{"a":1,"b":[true,null]}', 7),  # dict, 2 keys, 1, list, true, null
        ('"' + "[{,:" * 1000 + '"', 1),  # one string, 4000 separators inside
        ("[[],[],[]]", 4),
        ('["a"]', 2),  # a list and a string: a stripped string must not leave "[]" behind
        ('[["a"],["b"]]', 5),
        ('{"k":"v"}', 3),
    ],
)
def test_json_value_counts(text: str, values: int) -> None:
    check_items(text, values)
    if values > 1:
        with pytest.raises(LeapProtocolError, match=f"more than {values - 1} values"):
            check_items(text, values - 1)


@pytest.mark.timeout(30)  # the old string pass took minutes here, holding the GIL
@pytest.mark.parametrize("as_bytes", [False, True])
def test_quotes_that_never_close_are_counted_in_one_pass(as_bytes: bool) -> None:
    # A 2.9 KB zlib frame inflating to this froze the process: each quote started a
    # string match that ran to the end of the text and failed (quadratic). A string left
    # open now runs to the end in one match: the text is one value (it is no JSON: the
    # decoder refuses it).
    text = '"' + '\\",,,' * 400_000
    data: str | bytes = text.encode() if as_bytes else text
    check_items(data, 1_000)
    with pytest.raises(LeapProtocolError, match="invalid JSON payload"):
        decode_json(data, 1_000)


def test_strings_in_single_element_lists_are_counted() -> None:
    # Stripping strings to nothing made [["a"],...] look like [[],...]: half the values.
    text = "[" + ",".join(['["a"]'] * 600) + "]"  # 1 + 600 lists + 600 strings
    check_items(text, 1_201)
    with pytest.raises(LeapProtocolError, match="more than 1200 values"):
        check_items(text, 1_200)


def test_a_short_text_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsontext, "_most_values", never)
    assert decode_json("[1,2,3]", 7) == [1, 2, 3]  # 7 characters cannot hold 8 values


# -- counting ETF ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "terms"),
    [
        ([], 1),
        ([1, 2, 3], 5),  # the list, three ints, its tail
        ({"a": 1}, 3),  # the map, a key, a value
        ((1, 2), 3),
        ([[], [], []], 5),
    ],
)
def test_etf_term_counts(term: Any, terms: int) -> None:
    data = erlpack.pack(term)
    assert len(data) > terms  # long enough to be counted
    etf.check_term(data, max_items=terms)
    if terms > 1:
        with pytest.raises(LeapProtocolError, match=f"more than {terms - 1} terms"):
            etf.check_term(data, max_items=terms - 1)


def test_an_etf_string_ext_counts_each_character() -> None:
    data = b"\x83k\x00\x0a" + b"abcdefghij"  # decodes to a list of 10 ints
    etf.check_term(data, max_items=11)
    with pytest.raises(LeapProtocolError, match="more than 10 terms"):
        etf.check_term(data, max_items=10)


# -- the option --------------------------------------------------------------------------------


MAKERS = [lambda **o: LeapClient(PROJECT, **o), lambda **o: ElstatClient("https://s.example", **o)]
BAD_ITEMS = [(0, ValueError), (-1, ValueError), (2**40 + 1, ValueError), ("9", TypeError), (True, TypeError)]


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize(("value", "error"), BAD_ITEMS)
def test_max_message_items_is_validated_at_construction(make: Any, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_message_items"):
        make(max_message_items=value)


def test_elstat_sessions_apply_the_bound() -> None:
    frame = json.dumps({"op": 3, "c": "status:api", "d": [1531339962000, True]})  # 9 values
    assert ElstatSession(1.0, 1.0, max_items=9).receive([(frame, False)], 0.0).error is None
    result = ElstatSession(1.0, 1.0, max_items=8).receive([(frame, False)], 0.0)
    assert str(result.error) == "message holds more than 8 values (max_message_items)"


def test_elstat_client_passes_the_option_to_its_sessions() -> None:
    client = ElstatClient("https://s.example", max_message_items=123)
    assert client._new_session()._max_items == 123


# -- end to end --------------------------------------------------------------------------------


def test_a_leap_client_refuses_the_bomb_and_reconnects() -> None:
    def bombs(peer: Peer) -> None:
        leap_session(peer, channels=["room"])
        peer.frame(OP_BINARY, json_bomb())
        peer.drain()

    def serves(peer: Peer) -> None:
        leap_session(peer, channels=["room"])
        peer.message("room", "after", 1)
        peer.wait()

    with HostileServer([bombs, serves]) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff(), compression="zlib")
        states = StateRecorder()
        client.add_state_update_listener(states)
        messages = client.message_event_channel()
        try:
            client.connect(wait=True, timeout=10)
            assert messages.get(timeout=10).event_name == "after"
            infos = states.wait_count(ConnectionState.CONNECTED, 2)
        finally:
            client.close()
        first = server.peers.get(timeout=5)
    [errored] = [i for i in infos if i.connection_state is ConnectionState.ERRORED]
    assert errored.will_reconnect
    assert str(errored.error) == "protocol error: message holds more than 1000000 values (max_message_items)"
    assert first.frames[-1] == (8, struct.pack("!H", 1002))  # the bomb's connection closed 1002
