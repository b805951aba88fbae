"""How a connection ends, at the transport: an end read together with data is acted on
right after that data, and close frames follow RFC 6455 (sections 5.5.1, 7 and 8), case
by case as the Autobahn test suite's section 7 checks them."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator

import pytest
import test_transport as base
import trustme
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer, leap_session
from rawws import RawConnection, RawServer, raw_server_for, server_frame

from leap_sync import ConnectionState, LeapClient
from leap_sync.connection.transport import Transport
from leap_sync.errors import LeapConnectionError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[tuple[RawServer, dict[str, object]]]:
    """A raw server, over TLS when the test's ``scheme`` parameter is ``wss``."""
    with raw_server_for(request.node.callspec.params.get("scheme", "ws"), ca) as served:
        yield served


def close_notify(conn: RawConnection) -> None:
    """Send TLS ``close_notify`` and keep TCP open (a terminator ending its session)."""
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    sock.settimeout(0)
    try:
        sock.unwrap()  # sends close_notify, then would wait for ours: not here
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass


# -- the end arrives with data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "end"),
    [("ws", "eof"), ("ws", "close frame"), ("wss", "eof"), ("wss", "close_notify"), ("wss", "close frame")],
)
def test_an_end_read_with_data_is_acted_on_right_after_it(
    server: tuple[RawServer, dict[str, object]], scheme: str, end: str
) -> None:
    raw, options = server
    tls = scheme == "wss"
    transport = base.open_transport(raw.url, **options)
    conn = raw.accept()
    messages = server_frame(1, b"first") + server_frame(2, b"second")
    if end == "close frame":
        conn.send(messages + server_frame(8, struct.pack("!H", 4000) + b"bye"))
    elif end == "eof" and not tls:
        conn.send(messages)
        conn.sock.shutdown(socket.SHUT_WR)  # FIN; the socket stays open
    elif end == "eof":
        conn.send(messages)
        socket.socket.shutdown(conn.sock, socket.SHUT_WR)  # a FIN without close_notify
    else:
        conn.send(messages)
        close_notify(conn)  # TCP stays open: nothing more will ever be readable
    got: list[tuple[bytes, bool]] = []
    with pytest.raises(LeapConnectionError) as ended:
        while True:  # the messages, then at once the end (the socket never turns readable again)
            batch = transport.receive(timeout=10)
            assert batch, "receive timed out: the end was not noticed"
            got += batch
    assert got == [(b"first", False), (b"second", True)]
    if end == "close frame":
        assert (ended.value.close_code, ended.value.close_reason) == (4000, "bye")
    else:
        assert ended.value.close_code is None
        assert str(ended.value) == "connection lost: closed without a close frame"
    base.finish(transport)
    conn.close()


# -- RFC 6455 close handling (sections 5.5.1, 7 and 8; Autobahn section 7) ----------------------


def closed_by_peer(raw: RawServer, frames: bytes) -> tuple[LeapConnectionError, RawConnection, Transport]:
    """Open a transport, have the server write ``frames``, and return how the
    transport ended (it must end), the server's side and the transport."""
    transport = base.open_transport(raw.url)
    conn = raw.accept()
    conn.send(frames)
    with pytest.raises(LeapConnectionError) as ended:
        for _ in range(3):
            assert transport.receive(timeout=10) == [], "no data message was sent"
    return ended.value, conn, transport


def client_frames(conn: RawConnection) -> list[tuple[int, bytes]]:
    """Every frame the client wrote until it closed the TCP connection."""
    frames: list[tuple[int, bytes]] = []
    try:
        while True:
            frames.append(conn.read_frame(timeout=5))
    except (EOFError, OSError):
        return frames


@pytest.fixture
def raw() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


# Autobahn 7.7.1-13, and 1012-1014 (registered with IANA since the RFC): echoed as they came.
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
# Autobahn 7.9.1-9 and 7.13.1-2, and 1015 (a TLS failure, never sent): a protocol error.
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_a_valid_close_code_is_echoed(raw: RawServer, code: int) -> None:
    error, conn, transport = closed_by_peer(raw, server_frame(8, struct.pack("!H", code) + b"why"))
    assert (error.close_code, error.close_reason) == (code, "why")
    assert client_frames(conn) == [(8, struct.pack("!H", code))]
    base.finish(transport)
    conn.close()


@pytest.mark.parametrize("code", INVALID_CODES)
def test_a_close_code_no_frame_may_carry_is_a_protocol_error(raw: RawServer, code: int) -> None:
    error, conn, transport = closed_by_peer(raw, server_frame(8, struct.pack("!H", code)))
    assert error.close_code is None
    assert str(error) == f"protocol error: close code {code} is not one a close frame may carry"
    assert client_frames(conn) == [(8, struct.pack("!H", 1002))]  # never the code back
    base.finish(transport)
    conn.close()


@pytest.mark.parametrize(
    ("payload", "message", "sent"),
    [
        # Autobahn 7.3.1: no code -> echoed as 1000 (1005 stands for "no code", never sent)
        (b"", None, 1000),
        # 7.3.2: a payload of one byte
        (b"\x03", "protocol error: close frame payload of one byte", 1002),
        # 7.3.5: a reason of 123 bytes, the most that fits
        (struct.pack("!H", 1000) + b"*" * 123, None, 1000),
        # 7.3.6: a payload of 126 bytes, over a control frame's 125
        (
            struct.pack("!H", 1000) + b"*" * 124,
            "protocol error: control frames must be final and at most 125 bytes",
            1002,
        ),
        # 7.5.1: a reason that is not UTF-8
        (
            struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            "protocol error: close frame (code 1000) with a reason that is not UTF-8",
            1002,
        ),
    ],
)
def test_close_payloads(raw: RawServer, payload: bytes, message: str | None, sent: int) -> None:
    error, conn, transport = closed_by_peer(raw, server_frame(8, payload))
    if message is None:
        assert error.close_code == (None if not payload else 1000)
        assert error.close_reason == payload[2:].decode()
    else:
        assert (str(error), error.close_code) == (message, None)
    assert client_frames(conn) == [(8, struct.pack("!H", sent))]
    base.finish(transport)
    conn.close()


@pytest.mark.parametrize(
    "frames",
    [
        server_frame(1, b"caf\xc3"),  # cut in the middle of a character
        server_frame(1, b"\xed\xa0\x80"),  # a surrogate, which UTF-8 never encodes
        server_frame(1, b"ok \xce", fin=False) + server_frame(0, b"\xba \xff"),  # fragments, whole then checked
    ],
)
def test_a_text_message_that_is_not_utf8_is_closed_1007(raw: RawServer, frames: bytes) -> None:
    transport = base.open_transport(raw.url)
    conn = raw.accept()
    conn.send(server_frame(1, b"fine") + frames + server_frame(1, b"never"))
    assert transport.receive(timeout=10) == [(b"fine", False)]  # what came before it is delivered
    with pytest.raises(LeapConnectionError) as ended:
        transport.receive(timeout=10)
    assert str(ended.value).startswith("protocol error: text message that is not UTF-8")
    assert client_frames(conn) == [(8, struct.pack("!H", 1007))]  # section 8.1
    base.finish(transport)
    conn.close()


def test_utf8_split_across_fragments_and_binary_that_is_not_utf8_are_delivered(raw: RawServer) -> None:
    transport = base.open_transport(raw.url)
    conn = raw.accept()
    conn.send(server_frame(1, b"caf\xc3", fin=False) + server_frame(0, b"\xa9") + server_frame(2, b"\xff\xfe"))
    got: list[tuple[bytes, bool]] = []
    while len(got) < 2:
        got += transport.receive(timeout=10)
    assert got == [("café".encode(), False), (b"\xff\xfe", True)]
    base.finish(transport)
    conn.close()


def test_nothing_follows_our_close_frame_not_even_a_pong(raw: RawServer) -> None:
    """Autobahn 7.1.x from our side: once our close frame is queued, a ping the peer
    sends before its echo gets no pong, and no data frame goes after the close."""
    transport = base.open_transport(raw.url)
    conn = raw.accept()
    transport.send_close(1000, "bye")
    assert transport.receive(timeout=0.2) == []  # the owner writes the close
    assert conn.read_frame() == (8, struct.pack("!H", 1000) + b"bye")
    with pytest.raises(LeapConnectionError, match="closing"):
        transport.send("late", False)
    conn.send(server_frame(9, b"still there?") + server_frame(8, struct.pack("!H", 1000)))
    with pytest.raises(LeapConnectionError) as ended:
        transport.receive(timeout=10)
    assert ended.value.close_code == 1000
    assert client_frames(conn) == []  # no pong, no second close
    base.finish(transport)
    conn.close()


@pytest.mark.parametrize(("code", "sent"), [(1005, 1000), (1006, 1000), (1015, 1000), (999, 1000), (4000, 4000)])
def test_we_never_send_a_code_no_close_frame_may_carry(raw: RawServer, code: int, sent: int) -> None:
    transport = base.open_transport(raw.url)
    conn = raw.accept()
    transport.send_close(code, "é" * 100)  # 200 bytes of reason: cut at a character boundary
    assert transport.receive(timeout=0.2) == []
    opcode, payload = conn.read_frame()
    assert (opcode, payload[:2]) == (8, struct.pack("!H", sent))
    assert payload[2:].decode("utf-8") == "é" * 61  # 122 bytes: the 123rd would split a character
    base.finish(transport)
    conn.close()


@pytest.mark.parametrize(("code", "answer"), [(1005, 1002), (1015, 1002), (999, 1002), (4000, 4000), (None, 1000)])
def test_a_client_answers_close_codes_as_the_rfc_says_and_reconnects(code: int | None, answer: int) -> None:
    """LeapClient end to end: what it sends back for a close code, then a reconnect."""
    answers: list[tuple[int, bytes]] = []

    def closes(peer: Peer) -> None:
        leap_session(peer)
        peer.close(code)
        while True:
            frame = peer.read_frame()
            if frame[0] == 8:
                answers.append(frame)
                return

    def serves(peer: Peer) -> None:
        leap_session(peer)
        peer.wait()

    with HostileServer([closes, serves]) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
        states = StateRecorder()
        client.add_state_update_listener(states)
        try:
            client.connect(wait=True, timeout=10)
            infos = states.wait_count(ConnectionState.CONNECTED, 2)
        finally:
            client.close()
        assert server.errors == []
    assert answers == [(8, struct.pack("!H", answer))]
    [errored] = [i for i in infos if i.connection_state is ConnectionState.ERRORED]
    assert errored.will_reconnect
    assert errored.error.close_code == (code if code in (4000, None) else None)  # type: ignore[union-attr]
