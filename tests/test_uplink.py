"""Heartbeats never wait behind the application's uploads, in the kernel either: the
client bounds what its socket keeps unsent (``TCP_NOTSENT_LOWAT``), so over a narrow
uplink a heartbeat waits behind about one small buffer, not megabytes of send buffer."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import test_transport as base
import trustme
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from faultproxy import UP, FaultProxy
from rawws import RawServer, raw_server_for

from leap_sync import ConnectionState, LeapClient, LeapError
from leap_sync.connection.transport import UNSENT_LIMIT
from leap_sync.protocol.models import ClientFrame, ClientHeartbeat, SendMessage
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)

NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform.startswith("linux") else None)
needs_lowat = pytest.mark.skipif(NOTSENT_LOWAT is None, reason="this OS has no TCP_NOTSENT_LOWAT")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["ws", "wss"])
def raw_server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[tuple[RawServer, dict[str, object]]]:
    with raw_server_for(request.param, ca) as served:
        yield served


@needs_lowat
def test_the_socket_keeps_at_most_a_small_buffer_unsent(raw_server: tuple[RawServer, dict[str, object]]) -> None:
    raw, options = raw_server
    transport = base.open_transport(raw.url, **options)
    conn = raw.accept()
    sock = transport._sock  # the one the I/O thread writes to (a TLS socket for wss)
    assert NOTSENT_LOWAT is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT) == UNSENT_LIMIT == 16 * 1024
    base.finish(transport)
    conn.close()


@needs_lowat
def test_heartbeats_keep_time_while_the_application_floods_a_narrow_uplink() -> None:
    """``send_message()`` flat out over a 1 MB/s uplink (a link with a modest queue)
    while the server enforces heartbeats strictly: without the bound, megabytes of
    send buffer sit ahead of each heartbeat (4 s at that rate), the server closes 4007
    again and again and thousands of sends that returned never arrive. With it: one
    connection throughout, every heartbeat on time, and every send that returned
    reaches the server, in order."""
    received: list[int] = []
    beats: list[float] = []
    lock = threading.Lock()

    def on_frame(cid: str, frame: ClientFrame) -> None:
        with lock:
            if isinstance(frame, SendMessage):
                received.append(frame.data["i"])
            elif isinstance(frame, ClientHeartbeat):
                beats.append(time.monotonic())

    with (
        LeapEdgeServer(
            heartbeat_interval=1.5, heartbeat_tolerance=0.6, strict_heartbeats=True, on_frame=on_frame
        ) as server,
        FaultProxy("127.0.0.1", server.port, queue=64 * 1024) as proxy,
    ):
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        proxy.set_bandwidth(1_000_000, UP)
        states = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=proxy.url_for(server.url), backoff=fast_backoff())
        client.add_state_update_listener(states)
        sent: list[int] = []
        padding = "x" * 1000
        try:
            client.connect(wait=True, timeout=10)
            with lock:
                first_beat = len(beats)
            give_up = time.monotonic() + 40
            while True:  # flat out until the server has judged three more beats
                with lock:
                    if len(beats) >= first_beat + 3:
                        break
                assert time.monotonic() < give_up, f"the server saw {len(beats)} beats"
                try:
                    client.send_message("room", "n", {"i": len(sent), "p": padding})
                except LeapError as exc:
                    raise AssertionError(f"send {len(sent)} failed: {exc!r}; states {states.states}") from None
                sent.append(len(sent))
            server.wait_for(lambda s: len(received) >= len(sent), timeout=30)
        finally:
            client.close()
    assert states.states[:3] == [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, ConnectionState.CONNECTED]
    assert ConnectionState.ERRORED not in states.states  # no 4007, no reconnect
    assert proxy.accepted == 1
    assert received == sent  # every send that returned arrived, in order
    assert len(sent) > 1000  # the uplink was full (about 1 MB/s of 1 KB messages)
