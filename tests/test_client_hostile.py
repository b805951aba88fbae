"""Nothing a server sends can end the client: any value, size or order is at worst a
protocol error followed by a reconnect with backoff (issue: hostile servers, kind 1),
and bytes arriving count as liveness (kind 6)."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer, leap_session

from leap_sync import (
    ConnectionState,
    LeapAuthorizationError,
    LeapClient,
    LeapConnectionError,
    LeapEncodeError,
    MessageEvent,
)
from leap_sync.wire.wsframes import MAX_FRAGMENTS, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT, unmasked_frame

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED

try:
    import erlpack
except ImportError:  # pragma: no cover
    erlpack = None


@pytest.fixture
def clients() -> Iterator[Callable[..., LeapClient]]:
    made: list[LeapClient] = []

    def make(url: str, **options: Any) -> LeapClient:
        options.setdefault("backoff", fast_backoff())
        options.setdefault("connect_timeout", 5)
        client = LeapClient(PROJECT, TOKEN, url=url, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class Behaving:
    """A later connection that does everything right and stays, with 100 ms beats;
    :attr:`beating` is set once three beats arrived."""

    def __init__(self) -> None:
        self.beating = threading.Event()

    def __call__(self, peer: Peer) -> None:
        leap_session(peer, 100)
        beats = 0
        while not peer.stop.is_set():
            if peer.read_json(30) == {"op": 3}:
                peer.json({"op": 4})
                beats += 1
                if beats == 3:
                    self.beating.set()


def recover_after(
    bad: Callable[[Peer], None], clients: Callable[..., LeapClient], **options: Any
) -> tuple[LeapClient, list[Any], HostileServer, Behaving]:
    """Connect to a server whose first connection runs ``bad``; return once the client
    is CONNECTED again on the second (well-behaved) one, after an ERRORED, with the
    states it went through."""
    good = Behaving()
    server = HostileServer([bad, good])
    recorder = StateRecorder()
    client = clients(server.url, **options)
    client.add_state_update_listener(recorder)
    client.connect()
    infos = recorder.wait_for(
        lambda infos: any(i.connection_state is ERRORED for i in infos) and infos[-1].connection_state is CONNECTED,
        timeout=15,
    )
    assert server.accepted == 2
    return client, infos, server, good


def only_error(infos: list[Any]) -> LeapConnectionError:
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert errored.will_reconnect is True
    assert isinstance(errored.error, LeapConnectionError)
    return errored.error


# -- numbers out of range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hello",
    [
        {"op": 1, "d": {"heartbeat_interval": 10**13}},
        {"op": 1, "d": {"heartbeat_interval": 10**400}},
        {"op": 1, "d": {"heartbeat_interval": -1}},
        {"op": 1, "d": {"heartbeat_interval": 0}},
        {"op": 1, "d": {"heartbeat_interval": 1}},
        {"op": 1, "d": {"heartbeat_interval": 1e308}},
        {"op": 1, "d": {"heartbeat_interval": True}},
        {"op": 1, "d": {"heartbeat_interval": "30000"}},
        {"op": 1, "d": {}},
        {"op": 1, "d": None},
    ],
    ids=["1e13", "400-digits", "negative", "zero", "1ms", "float", "bool", "string", "missing", "no-d"],
)
def test_a_hello_with_an_unusable_interval_is_a_protocol_error_then_beats_resume(
    clients: Callable[..., LeapClient], hello: dict[str, Any]
) -> None:
    def bad(peer: Peer) -> None:
        peer.upgrade()
        peer.json(hello)
        peer.drain(5)

    client, infos, server, good = recover_after(bad, clients)
    with server:
        error = only_error(infos)
        assert str(error).startswith("protocol error: ")
        assert "heartbeat_interval" in str(error) or "Hello" in str(error)
        assert len(str(error)) < 300
        assert good.beating.wait(5)  # the next connection beats on its 100 ms schedule
        assert client.state.connection_state is CONNECTED


def test_a_huge_ack_latency_is_a_protocol_error(clients: Callable[..., LeapClient]) -> None:
    def bad(peer: Peer) -> None:
        leap_session(peer)
        peer.json({"op": 4, "d": {"tag": "t", "latency": 10**400}})
        peer.drain(5)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        assert "latency" in str(only_error(infos))
        assert client.state.connection_state is CONNECTED


# -- order of frames -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected", "connected_first"),
    [
        (lambda p: (p.upgrade(), p.init()), "INIT before Hello", False),
        (lambda p: (p.upgrade(), p.message("room", "x", 1)), "MessageEvent before Hello", False),
        (lambda p: (p.upgrade(), p.json({"op": 0, "d": {"c": "r", "e": "AVAILABLE", "d": {}}})), "AVAILABLE", False),
        (lambda p: (leap_session(p), p.init("again")), "second INIT", True),
        (lambda p: (leap_session(p), p.hello()), "second Hello", True),
        (lambda p: (p.upgrade(), p.hello(), p.hello()), "second Hello", False),
    ],
    ids=["init-first", "message-first", "available-first", "init-twice", "hello-after-init", "hello-twice"],
)
def test_frames_out_of_order_are_protocol_errors(
    clients: Callable[..., LeapClient], script: Callable[[Peer], Any], expected: str, connected_first: bool
) -> None:
    def bad(peer: Peer) -> None:
        script(peer)
        peer.drain(5)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        error = only_error(infos)
        assert str(error).startswith("protocol error: ") and expected in str(error)
        states = [i.connection_state for i in infos]
        assert states.count(CONNECTED) == (2 if connected_first else 1)
        assert client.state.connection_state is CONNECTED


def test_init_before_hello_never_reaches_connected(clients: Callable[..., LeapClient]) -> None:
    def bad(peer: Peer) -> None:
        peer.upgrade()
        peer.init()
        peer.drain(5)

    _, infos, server, _ = recover_after(bad, clients)
    with server:
        states = [i.connection_state for i in infos]
        assert states == [
            ConnectionState.CONNECTING,
            ConnectionState.AUTHENTICATING,
            ERRORED,
            ConnectionState.CONNECTING,
            ConnectionState.AUTHENTICATING,
            CONNECTED,
        ]


def test_4001_before_identify_is_not_fatal(clients: Callable[..., LeapClient]) -> None:
    def bad(peer: Peer) -> None:
        peer.upgrade()
        peer.close(4001, "not you")  # no Hello, so no Identify was sent: not about our token
        peer.drain(2)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        assert only_error(infos).close_code == 4001
        assert client.state.connection_state is CONNECTED


def test_4001_arriving_with_the_hello_is_not_fatal(clients: Callable[..., LeapClient]) -> None:
    """Hello and a 4001 in one segment: the Identify the Hello asks for is never
    written (the connection is already ending), so the 4001 cannot judge the token."""

    def bad(peer: Peer) -> None:
        peer.upgrade()
        peer.send(
            unmasked_frame(OP_TEXT, b'{"op":1,"d":{"heartbeat_interval":30000}}')
            + unmasked_frame(OP_CLOSE, (4001).to_bytes(2, "big") + b"invalid auth")
        )
        peer.drain(2)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        error = only_error(infos)
        assert error.close_code == 4001 and not isinstance(error, LeapAuthorizationError)
        assert client.state.connection_state is CONNECTED


# -- sizes and counts ----------------------------------------------------------------------------


def test_endless_empty_continuation_frames_end_in_a_protocol_error(clients: Callable[..., LeapClient]) -> None:
    sent = threading.Event()

    def bad(peer: Peer) -> None:
        leap_session(peer)
        peer.frame(OP_TEXT, b"{", fin=False)
        empty = bytes([OP_CONTINUATION, 0]) * 4096
        try:
            for _ in range(2 * MAX_FRAGMENTS // 4096):
                peer.send(empty)
        finally:
            sent.set()
        peer.drain(5)

    tracemalloc.start()
    try:
        _, infos, server, _ = recover_after(bad, clients, max_message_size=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with server:
        error = only_error(infos)
        assert f"more than {MAX_FRAGMENTS} frames" in str(error)
        assert peak < 8 * 1024 * 1024, peak


# -- binaries (ETF) -------------------------------------------------------------------------------


@pytest.mark.skipif(erlpack is None, reason="erlpack not installed")
def test_an_etf_binary_that_is_not_utf8_is_delivered_as_bytes(clients: Callable[..., LeapClient]) -> None:
    def etf_server(peer: Peer) -> None:
        peer.upgrade()
        peer.frame(OP_BINARY, erlpack.pack({"op": 1, "d": {"heartbeat_interval": 30000}}))
        peer.read_frame()  # Identify, in ETF
        init = {"cid": "c1", "connection_count": 1, "metadata": None, "scope": "token", "channels": []}
        peer.frame(OP_BINARY, erlpack.pack({"op": 0, "d": {"c": None, "e": "INIT", "d": init}}))
        for data in (b"\xff\xfe\x00", "text", [b"\x80", {"k": b"\xc3\xa9"}]):
            message = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "blob", "d": data}}}
            peer.frame(OP_BINARY, erlpack.pack(message))
        peer.drain(10)

    with HostileServer(etf_server) as server:
        recorder = StateRecorder()
        client = clients(server.url, encoding="etf")
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        got = [messages.get(timeout=5) for _ in range(3)]
        assert got == [
            MessageEvent("room", "blob", b"\xff\xfe\x00"),
            MessageEvent("room", "blob", "text"),
            MessageEvent("room", "blob", [b"\x80", {"k": "é"}]),
        ]
        assert [i.connection_state for i in recorder.infos] == [
            ConnectionState.CONNECTING,
            ConnectionState.AUTHENTICATING,
            CONNECTED,
        ]


def test_bytes_are_refused_before_sending_in_json(clients: Callable[..., LeapClient]) -> None:
    def server_script(peer: Peer) -> None:
        leap_session(peer)
        peer.drain(10)

    with HostileServer(server_script) as server:
        client = clients(server.url)
        client.connect(wait=True, timeout=10)
        with pytest.raises(LeapEncodeError, match=r"bytes cannot travel in JSON .*encoding='etf'"):
            client.send_message("room", "blob", {"raw": b"\xff"})
        assert client.state.connection_state is CONNECTED


@pytest.mark.skipif(erlpack is None, reason="erlpack not installed")
def test_bytes_travel_both_ways_in_etf_through_the_embedded_server(clients: Callable[..., LeapClient]) -> None:
    from leap_sync.testing import LeapEdgeServer

    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        sender = clients(server.url, encoding="etf")
        receiver = clients(server.url, encoding="etf", compression="zlib")
        messages = receiver.message_event_channel()
        for client in (sender, receiver):
            client.connect(wait=True, timeout=10)
            client.subscribe("room", timeout=5)
        sender.send_message("room", "blob", {"raw": b"\xff\x00", "text": "ok"})
        event = messages.get(timeout=5)
        assert (event.event_name, event.data) == ("blob", {"raw": b"\xff\x00", "text": "ok"})
        assert sender.state.connection_state is CONNECTED  # the server did not close 4005
        assert len(server.all_connections) == 2


# -- liveness: bytes count, not only whole messages ----------------------------------------------


def test_a_large_message_trickling_in_is_not_a_zombie(clients: Callable[..., LeapClient]) -> None:
    # Beats every 300 ms; one 1.6 MB message arriving at about 400 KB/s (4 s).
    payload = b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"big","d":"' + b"x" * 1_600_000 + b'"}}}'

    def slow(peer: Peer) -> None:
        leap_session(peer, 300)
        header = bytes([0x81, 127]) + len(payload).to_bytes(8, "big")
        peer.send(header)
        for i in range(0, len(payload), 40_000):
            if peer.stop.wait(0.1):
                return
            peer.send(payload[i : i + 40_000])
        peer.drain(10)

    with HostileServer(slow) as server:
        recorder = StateRecorder()
        client = clients(server.url)
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        event = messages.get(timeout=20)
        assert event.event_name == "big" and len(event.data) == 1_600_000
        assert [i.connection_state for i in recorder.infos] == [
            ConnectionState.CONNECTING,
            ConnectionState.AUTHENTICATING,
            CONNECTED,
        ]
        assert server.accepted == 1


# -- payloads that do not decode ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (bytes([0x81, 4]) + b'"\xff\xfe"', "text message that is not UTF-8"),  # closed 1007 (RFC 6455 section 8.1)
        (bytes([0x82, 6]) + b"\x83m\x00\x00\x00\x05", "truncated ETF term"),  # ETF cut short
        (bytes([0x82, 3]) + b"\x78\x9c\x01", "zlib"),  # a zlib stream cut short
        (bytes([0x81, 9]) + b'{"op":1,}', "invalid JSON payload"),
        (bytes([0x81, 2]) + b"[]", "frame must be an object"),
    ],
    ids=["text-not-utf8", "truncated-etf", "truncated-zlib", "bad-json", "not-an-object"],
)
def test_payloads_that_do_not_decode_are_protocol_errors(
    clients: Callable[..., LeapClient], frame: bytes, expected: str
) -> None:
    def bad(peer: Peer) -> None:
        leap_session(peer)
        peer.message("room", "before", 1)
        peer.send(frame)
        peer.drain(5)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        error = only_error(infos)
        assert str(error).startswith("protocol error: ") and expected in str(error)
        assert client.state.connection_state is CONNECTED


# -- strings that are not text, and close codes behind a failed echo -----------------------------


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"op": 3, "d": {"tag": "\ud800"}}, "'tag' holds a lone surrogate"),
        (
            {
                "op": 0,
                "d": {
                    "c": "\udfff",
                    "e": "AVAILABLE",
                    "d": {"channel": {"id": "\udfff", "project_id": PROJECT, "state": {}, "type": "private"}},
                },
            },
            "lone surrogate",
        ),
    ],
    ids=["tag-to-echo", "channel-to-resubscribe"],
)
def test_strings_the_client_would_send_back_must_be_text(
    clients: Callable[..., LeapClient], frame: dict[str, Any], field: str
) -> None:
    # JSON's \ud800 escapes decode to lone surrogates, which cannot be encoded again
    def bad(peer: Peer) -> None:
        leap_session(peer)
        peer.json(frame)  # json.dumps escapes the surrogate: valid JSON text
        peer.drain(5)

    client, infos, server, _ = recover_after(bad, clients)
    with server:
        error = only_error(infos)
        assert str(error).startswith("protocol error: ") and field in str(error)
        assert "internal error" not in str(error)
        assert client.subscriptions == ()  # nothing poisoned the re-subscriptions


def test_text_that_is_not_text_is_refused_before_anything_is_sent(clients: Callable[..., LeapClient]) -> None:
    def server_script(peer: Peer) -> None:
        leap_session(peer)
        peer.drain(10)

    with HostileServer(server_script) as server:
        client = clients(server.url)
        client.connect(wait=True, timeout=10)
        for call in (
            lambda: client.send_message("room", "x", {"text": "\ud800"}),
            lambda: client.set_channel_state("room", {"\udfff": 1}),
            lambda: client.subscribe("\ud800room", timeout=1),
        ):
            with pytest.raises(LeapEncodeError, match="lone surrogate"):
                call()
        assert client._waiters == {}  # the refused subscribe registered nothing
        assert client.state.connection_state is CONNECTED
        for bad in ("\ud800", "p\udfff"):
            with pytest.raises(ValueError, match="string of text"):
                LeapClient(bad, TOKEN)
            with pytest.raises(ValueError, match="string of text"):
                LeapClient(PROJECT, bad)


@pytest.mark.parametrize(("code", "reason"), [(4001, "invalid auth"), (4006, "")])
def test_a_close_code_behind_an_answer_that_cannot_go_out_is_kept(
    clients: Callable[..., LeapClient], code: int, reason: str
) -> None:
    import struct

    from leap_sync.wire.wsframes import OP_CLOSE, unmasked_frame

    holder: dict[str, str] = {}

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.hello()
        peer.expect_identify()
        close = unmasked_frame(OP_CLOSE, struct.pack("!H", code) + (reason or holder["url"]).encode())
        peer.send(unmasked_frame(OP_TEXT, b'{"op":3,"d":{"tag":"t"}}') + close)  # one segment
        peer.drain(3)

    with HostileServer(script) as server:
        holder["url"] = server.url
        recorder = StateRecorder()
        client = clients(server.url)
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_for(lambda infos: any(i.connection_state is ERRORED for i in infos))
        first = next(i for i in infos if i.connection_state is ERRORED)
        assert first.error.close_code == code  # type: ignore[union-attr]
        if code == 4001:
            assert first.will_reconnect is False
            assert server.accepted == 1
        else:
            assert first.will_reconnect is True  # followed as a redirect, not a drop
