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
from rawws import RawConnection, RawServer, server_frame

from leap_sync.errors import LeapConnectionError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[tuple[RawServer, dict[str, object]]]:
    """A raw server, over TLS when the test's ``scheme`` parameter is ``wss``."""
    context = None
    options: dict[str, object] = {}
    if request.node.callspec.params.get("scheme", "ws") == "wss":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        options = {"sslopt": {"context": client_context}}
    with RawServer(tls=context) as raw:
        yield raw, options


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
