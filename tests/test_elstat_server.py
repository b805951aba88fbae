"""The embedded Elstat server (``leap_sync.testing.ElstatServer``) against a raw
websocket client on ``websockets.sync.client`` (never leap_sync's own client): the
wire format of every answer and push, the 256-byte limit (4420) and payload checks
(4200), faults (close codes, drops, raw frames), pings, a client that stops reading,
IPv6 and TLS, close() with clients connected, and the pytest fixtures."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import _LEGACY, _no_server_errors
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from leap_sync.errors import LeapEncodeError
from leap_sync.testing import ElstatConnectionInfo, ElstatServer
from leap_sync.testing.elstat.connection import SLOW_CONSUMER_CLOSE_CODE

__all__ = ["_no_server_errors"]

TIMEOUT = 5.0
CHANNELS = ("status:api", "latency:api", "graph:api")
STAMP = 1531339962000


class Raw:
    """One raw websocket connection to an Elstat endpoint: JSON text frames out,
    every frame checked to be JSON text on the way in. ``cid`` is set by
    :func:`open_raw`."""

    def __init__(self, url: str, **options: Any) -> None:
        options.setdefault("max_size", None)
        self.ws: ClientConnection = connect(
            url, compression=None, open_timeout=TIMEOUT, close_timeout=2, proxy=None, **options, **_LEGACY
        )
        self.cid = ""

    def close(self) -> None:
        self.ws.close()

    def send(self, frame: Any) -> None:
        self.ws.send(json.dumps(frame, separators=(",", ":")))

    def recv(self, timeout: float = TIMEOUT) -> Any:
        raw = self.ws.recv(timeout=timeout)
        assert isinstance(raw, str), f"Elstat frames are text: {raw!r}"
        return json.loads(raw)

    def request(self, op: int, channels: list[str]) -> Any:
        self.send({"op": op, "channels": channels})
        return self.recv()

    def subscribe(self, *channels: str) -> list[str]:
        reply = self.request(0, list(channels))
        assert set(reply) == {"op", "channels"} and reply["op"] == 1, reply
        return list(reply["channels"])

    def unsubscribe(self, *channels: str) -> list[str]:
        reply = self.request(-1, list(channels))
        assert set(reply) == {"op", "channels"} and reply["op"] == 2, reply
        return list(reply["channels"])

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait for the end, asserting no frame comes first: ``(code, reason)``,
        ``code`` ``None`` when TCP ended without a close frame."""
        try:
            raw = self.ws.recv(timeout=timeout)
        except ConnectionClosed as closed:
            return (None, "") if closed.rcvd is None else (closed.rcvd.code, closed.rcvd.reason)
        raise AssertionError(f"a frame before the close: {raw!r}")


def open_raw(srv: ElstatServer, **options: Any) -> Raw:
    """Connect; ``cid`` is the connection's id (the server lists a connection before
    its upgrade response is written)."""
    known = len(srv.all_connections)
    client = Raw(srv.url, **options)
    client.cid = srv.all_connections[known].cid
    return client


@pytest.fixture
def server() -> Iterator[ElstatServer]:
    with ElstatServer(channels=CHANNELS) as srv:
        yield srv


@pytest.fixture
def clients() -> Iterator[Callable[..., Raw]]:
    made: list[Raw] = []

    def make(srv: ElstatServer, **options: Any) -> Raw:
        client = open_raw(srv, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def only(srv: ElstatServer) -> ElstatConnectionInfo:
    (info,) = srv.all_connections
    return info


def closed_with(srv: ElstatServer, code: int) -> ElstatConnectionInfo:
    """The one connection, once it ended with ``code``."""
    srv.wait_for(lambda s: only(s).close_code is not None and not only(s).open)
    info = only(srv)
    assert info.close_code == code, info
    return info


def utf8_payload(size: int, char: str) -> str:
    """A SUBSCRIBE of exactly ``size`` UTF-8 bytes, its channel name padded with
    ``char`` (and ASCII to make up an odd byte)."""
    head, tail = '{"op":0,"channels":["status:', '"]}'
    room = size - len(head) - len(tail)
    width = len(char.encode("utf-8"))
    text = head + char * (room // width) + "x" * (room % width) + tail
    assert len(text.encode("utf-8")) == size
    return text


# -- the server speaks when spoken to ---------------------------------------------------------


def test_nothing_starts_before_start() -> None:
    srv = ElstatServer(channels=["status:api"])
    assert not srv.running and srv.port == 0 and srv.connections == []
    assert not [t for t in threading.enumerate() if t.name.startswith("leap-sync-server-elstat")]
    srv.close()  # closing a server never started does nothing


def test_urls_and_the_upgrade(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/api/streaming"
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    client = clients(server)
    assert client.ws.response is not None
    assert client.ws.response.headers["Server"] == "leap-sync-embedded-elstat"
    with pytest.raises(InvalidStatus) as refused:
        Raw(server.base_url.replace("http", "ws") + "/ws")
    assert refused.value.response.status_code == 404
    queried = Raw(server.url + "?v=1")  # a query is fine
    try:
        assert queried.subscribe("status:api") == ["status:api"]
    finally:
        queried.close()


def test_no_hello_the_first_frame_answers_the_first_request(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    assert server.wait_for_connections(1) == [ElstatConnectionInfo(client.cid, frozenset(), True, None, 0, 0)]
    # A hello would have been queued on open, before the request was even read.
    assert client.request(0, ["status:api"]) == {"op": 1, "channels": ["status:api"]}
    server.wait_for(lambda s: s.connections[0].frames_out == 1)
    assert server.connections[0].frames_in == 1


def test_a_connection_is_served_once_its_upgrade_completes(server: ElstatServer) -> None:
    """No wait between a client's connect and a push: the server lists a connection
    before it writes the upgrade response."""
    made: list[Raw] = []
    try:
        for n in range(1, 21):
            made.append(Raw(server.url))
            assert len(server.connections) == n
            assert server.push_incident("new", {"id": str(n)}) == n
        for n, client in enumerate(made, 1):
            assert [client.recv()["d"]["id"] for _ in range(n, 21)] == [str(i) for i in range(n, 21)]
    finally:
        for client in made:
            client.close()


@pytest.mark.parametrize(
    ("asked", "confirmed"),
    [
        pytest.param(["status:api"], ["status:api"], id="known"),
        pytest.param(["status:nope"], [], id="unknown"),
        pytest.param(
            ["status:nope", "graph:api", "latency:nope", "status:api"], ["graph:api", "status:api"], id="mixed"
        ),
        pytest.param(
            ["latency:api", "status:api", "latency:api", "status:api"], ["latency:api", "status:api"], id="dup"
        ),
        pytest.param([], [], id="empty"),
        pytest.param(["no colon", ""], [], id="not-channel-names"),
    ],
)
def test_subscribe(server: ElstatServer, clients: Callable[..., Raw], asked: list[str], confirmed: list[str]) -> None:
    client = clients(server)
    assert client.request(0, asked) == {"op": 1, "channels": confirmed}
    assert server.connections[0].subscriptions == frozenset(confirmed)


def test_subscribe_adds_to_what_is_subscribed(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    assert client.subscribe("status:api") == ["status:api"]
    assert client.subscribe("latency:api", "status:api") == ["latency:api", "status:api"]  # again: confirmed again
    assert server.connections[0].subscriptions == {"status:api", "latency:api"}


def test_unsubscribe(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    assert client.subscribe("status:api", "latency:api") == ["status:api", "latency:api"]
    # Only what this connection was subscribed to, in the order asked, each once.
    assert client.unsubscribe("graph:api", "latency:api", "status:nope", "latency:api") == ["latency:api"]
    assert server.connections[0].subscriptions == {"status:api"}
    assert client.unsubscribe("latency:api") == []
    assert client.unsubscribe() == []
    assert client.unsubscribe("status:api") == ["status:api"]
    assert server.connections[0].subscriptions == frozenset()
    assert server.connections[0].frames_in == 5


# -- pushes ----------------------------------------------------------------------------------


def test_data_reaches_subscribers_only(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    everything, latency, nothing = clients(server), clients(server), clients(server)
    assert everything.subscribe(*CHANNELS) == list(CHANNELS)
    assert latency.subscribe("latency:api") == ["latency:api"]

    assert server.push_data("status:api", True, timestamp_ms=STAMP) == 1
    assert server.push_data("latency:api", 42, timestamp_ms=STAMP + 1) == 2
    assert server.push_data("graph:api", {"points": [1, 2.5]}, timestamp_ms=STAMP + 2) == 1
    assert server.push_data("status:api", False, timestamp_ms=STAMP + 3) == 1
    # A broadcast closes the sequence: whoever missed a DATA sees the marker next.
    assert server.push_incident("new", {"id": "mark"}) == 3

    status = everything.recv()
    assert status == {"op": 3, "c": "status:api", "d": [STAMP, True]} and status["d"][1] is True
    data = everything.recv()
    assert data == {"op": 3, "c": "latency:api", "d": [STAMP + 1, 42]} and type(data["d"][1]) is int
    assert everything.recv() == {"op": 3, "c": "graph:api", "d": [STAMP + 2, {"points": [1, 2.5]}]}
    assert everything.recv()["d"] == [STAMP + 3, False]
    assert latency.recv() == {"op": 3, "c": "latency:api", "d": [STAMP + 1, 42]}
    marker = {"op": 4, "d": {"id": "mark"}}
    assert everything.recv() == latency.recv() == nothing.recv() == marker
    assert [c.frames_out for c in server.connections] == [6, 3, 1]


def test_data_timestamp_defaults_to_now_in_unix_ms(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    client.subscribe("latency:api")
    before = time.time_ns() // 1_000_000
    assert server.push_data("latency:api", 7) == 1
    after = time.time_ns() // 1_000_000
    frame = client.recv()
    assert frame["c"] == "latency:api" and frame["d"][1] == 7
    assert type(frame["d"][0]) is int and before <= frame["d"][0] <= after


def test_push_data_refusals_send_nothing(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    client.subscribe("status:api")
    with pytest.raises(KeyError):
        server.push_data("status:nope", True)
    with pytest.raises(TypeError):
        server.push_data("status:api", True, timestamp_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.push_data("status:api", True, timestamp_ms=True)
    with pytest.raises(LeapEncodeError):
        server.push_data("status:api", float("nan"))
    assert server.push_data("status:api", True, timestamp_ms=STAMP) == 1
    assert client.recv() == {"op": 3, "c": "status:api", "d": [STAMP, True]}
    assert server.connections[0].frames_out == 2


def test_incidents_reach_every_connection(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    subscribed, bare = clients(server), clients(server)
    subscribed.subscribe("status:api")
    incident = {"id": "1", "title": "API down", "incident_type": "outage", "ongoing": True, "start_date": STAMP}
    kinds: list[str | int] = ["new", "update", "close", 4, 5, 6]
    for kind in kinds:
        assert server.push_incident(kind, incident) == 2
    expected = [{"op": op, "d": incident} for op in (4, 5, 6, 4, 5, 6)]
    assert [subscribed.recv() for _ in kinds] == expected
    assert [bare.recv() for _ in kinds] == expected


@pytest.mark.parametrize("kind", ["open", "NEW", 3, 7, True])
def test_push_incident_refuses_an_unknown_kind(server: ElstatServer, kind: Any) -> None:
    with pytest.raises(ValueError, match="incident kind"):
        server.push_incident(kind, {"id": "1"})


def test_push_incident_refuses_what_is_not_an_object(server: ElstatServer) -> None:
    with pytest.raises(TypeError):
        server.push_incident("new", ["id", "1"])  # type: ignore[arg-type]
    with pytest.raises(LeapEncodeError):
        server.push_incident("new", {"id": float("inf")})


def test_channels_added_and_removed(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    assert server.channels == CHANNELS
    server.add_channel("status:new")
    server.add_channel("status:api")  # exists: nothing changes
    assert server.channels == (*CHANNELS, "status:new")
    for bad in ("status", "status:", ":api"):
        with pytest.raises(ValueError):
            server.add_channel(bad)
    with pytest.raises(TypeError):
        server.add_channel(7)  # type: ignore[arg-type]
    client = clients(server)
    assert client.subscribe("status:new", "status:api") == ["status:new", "status:api"]
    server.remove_channel("status:new")
    with pytest.raises(KeyError):
        server.remove_channel("status:new")
    assert server.channels == CHANNELS
    assert server.connections[0].subscriptions == {"status:api"}  # unsubscribed silently
    with pytest.raises(KeyError):
        server.push_data("status:new", True)
    assert client.subscribe("status:new") == []
    server.add_channel("status:new")
    assert server.push_data("status:new", True) == 0  # the old subscription is gone
    with pytest.raises(ValueError):
        ElstatServer(channels=["nocolon"])


# -- the 256-byte limit and payload checks -------------------------------------------------------


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"], ids=["ascii", "2-byte", "3-byte", "4-byte"])
def test_exactly_256_bytes_of_utf8_are_accepted(server: ElstatServer, clients: Callable[..., Raw], char: str) -> None:
    payload = utf8_payload(256, char)
    channel = json.loads(payload)["channels"][0]
    server.add_channel(channel)
    client = clients(server)
    client.ws.send(payload)
    assert client.recv() == {"op": 1, "channels": [channel]}


@pytest.mark.parametrize("char", ["x", "é", "😀"], ids=["ascii", "2-byte", "4-byte"])
def test_257_bytes_close_4420(server: ElstatServer, clients: Callable[..., Raw], char: str) -> None:
    payload = utf8_payload(257, char)
    if char != "x":
        assert len(payload) < 256  # fewer characters than bytes: bytes are what count
    client = clients(server)
    client.ws.send(payload)
    code, reason = client.expect_close()
    assert code == 4420 and reason.startswith("payload over 256 bytes"), reason
    closed_with(server, 4420)


def test_a_fragmented_message_over_256_bytes_closes_4420(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    client.ws.send(iter(['{"op":0,"channels":["status:', "x" * 200, '"]}']))  # 233 bytes: fine
    assert client.recv() == {"op": 1, "channels": []}
    with contextlib.suppress(ConnectionClosed):  # closed as soon as the second fragment is read
        client.ws.send(iter(['{"op":0,"channels":["status:', "x" * 250, '"]}']))  # 283 bytes in all
    assert client.expect_close()[0] == 4420
    info = closed_with(server, 4420)
    assert info.frames_in == 1


def test_a_large_message_closes_4420_unread(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    with contextlib.suppress(ConnectionClosed):  # the close may come before the end is written
        client.ws.send("x" * 65536)  # refused from its header: websockets reads at most 256 bytes of it
    assert client.expect_close()[0] == 4420
    assert closed_with(server, 4420).frames_in == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param("not json", "invalid JSON payload: ", id="not-json"),
        pytest.param('{"op":0,"channels":[]', "invalid JSON payload: ", id="truncated"),
        pytest.param("", "invalid JSON payload: ", id="empty"),
        pytest.param('[0,["status:api"]]', "payload must be a JSON object", id="array"),
        pytest.param("0", "payload must be a JSON object", id="number"),
        pytest.param('{"op":7,"channels":[]}', "unknown op 7", id="op-7"),
        pytest.param('{"op":1,"channels":[]}', "unknown op 1", id="server-op"),
        pytest.param('{"op":true,"channels":[]}', "unknown op True", id="op-true"),
        pytest.param('{"op":false,"channels":[]}', "unknown op False", id="op-false"),
        pytest.param('{"op":"0","channels":[]}', "unknown op '0'", id="op-string"),
        pytest.param('{"channels":[]}', "unknown op None", id="no-op"),
        pytest.param('{"op":0}', "'channels' must be a list of strings", id="no-channels"),
        pytest.param('{"op":0,"channels":"status:api"}', "'channels' must be a list of strings", id="string"),
        pytest.param('{"op":-1,"channels":[1]}', "'channels' must be a list of strings", id="numbers"),
        pytest.param('{"op":0,"channels":null}', "'channels' must be a list of strings", id="null"),
        pytest.param(b'{"op":0,"channels":[]}', "binary frame: Elstat payloads are JSON text", id="binary"),
        pytest.param(b"\xff\xfe", "invalid UTF-8 in a text frame", id="not-utf8"),
    ],
)
def test_invalid_payloads_close_4200(
    server: ElstatServer, clients: Callable[..., Raw], payload: str | bytes, reason: str
) -> None:
    client, bystander = clients(server), clients(server)
    bystander.subscribe("status:api")
    if payload == b"\xff\xfe":
        client.ws.send(payload, text=True)
    else:
        client.ws.send(payload)
    code, got = client.expect_close()
    assert code == 4200
    assert got.startswith(reason) if reason.endswith(": ") else got == reason
    server.wait_for(lambda s: len(s.connections) == 1)
    info = next(c for c in server.all_connections if not c.open)
    assert info.close_code == 4200 and info.frames_in == 1 and info.frames_out == 0
    # The server goes on serving the others.
    assert server.push_data("status:api", True, timestamp_ms=STAMP) == 1
    assert bystander.recv() == {"op": 3, "c": "status:api", "d": [STAMP, True]}


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1013, 3000, 4000, 4200, 4420, 4999])
def test_disconnect_with_each_code(server: ElstatServer, clients: Callable[..., Raw], code: int) -> None:
    client = clients(server)
    assert server.disconnect(code, f"bye {code}") == 1
    assert client.expect_close() == (code, f"bye {code}")
    closed_with(server, code)


def test_disconnect_defaults_to_1000_and_targets_one_cid(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    first, second = clients(server), clients(server)
    assert server.disconnect(cid=first.cid) == 1
    assert first.expect_close() == (1000, "")
    assert second.subscribe("status:api") == ["status:api"]
    with pytest.raises(KeyError):
        server.disconnect(cid=first.cid)  # no longer open


@pytest.mark.parametrize(("code", "reason"), [(1005, ""), (1006, ""), (999, ""), (5000, ""), (1000, "é" * 62)])
def test_disconnect_refuses_what_no_close_frame_carries(server: ElstatServer, code: int, reason: str) -> None:
    with pytest.raises(ValueError):
        server.disconnect(code, reason)


def test_drop_cuts_tcp_without_a_close_frame(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    dropped, kept = clients(server), clients(server)
    kept.subscribe("status:api")
    assert server.drop(cid=dropped.cid) == 1
    assert dropped.expect_close() == (None, "")
    server.wait_for(lambda s: len(s.connections) == 1)
    (gone,) = [c for c in server.all_connections if c.cid == dropped.cid]
    assert not gone.open and gone.close_code == 1006
    assert server.push_data("status:api", False, timestamp_ms=STAMP) == 1
    assert kept.recv() == {"op": 3, "c": "status:api", "d": [STAMP, False]}
    assert server.drop() == 1
    assert kept.expect_close() == (None, "")


def test_drop_delivers_what_was_queued_before(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    client.subscribe("status:api")
    assert server.push_data("status:api", True, timestamp_ms=STAMP) == 1
    assert server.drop() == 1
    assert client.recv()["d"] == [STAMP, True]
    assert client.expect_close() == (None, "")


def test_send_raw_text_and_binary(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    first, second = clients(server), clients(server)
    assert server.send_raw('{"op":99,"x":[]}') == 2
    assert server.send_raw(b"\x00\xffbinary", cid=first.cid) == 1
    assert server.send_raw("not json") == 2
    assert first.ws.recv(timeout=TIMEOUT) == '{"op":99,"x":[]}'
    assert first.ws.recv(timeout=TIMEOUT) == b"\x00\xffbinary"
    assert first.ws.recv(timeout=TIMEOUT) == "not json"
    assert second.ws.recv(timeout=TIMEOUT) == '{"op":99,"x":[]}'
    assert second.ws.recv(timeout=TIMEOUT) == "not json"
    with pytest.raises(KeyError):
        server.send_raw("x", cid="conn_unknown")


def test_close_codes_the_client_sends_are_recorded(server: ElstatServer) -> None:
    for code in (1000, 4001):
        open_raw(server).ws.close(code, "done")
    server.wait_for(lambda s: len(s.all_connections) == 2 and not any(c.open for c in s.all_connections))
    assert [c.close_code for c in server.all_connections] == [1000, 4001]


def test_pings_are_answered(server: ElstatServer, clients: Callable[..., Raw]) -> None:
    client = clients(server)
    for data in (b"", b"1234", b"x" * 125):
        pong = client.ws.ping(data)
        assert pong.wait(TIMEOUT)
    assert client.subscribe("status:api") == ["status:api"]  # a ping is no payload
    assert server.connections[0].frames_in == 1


# -- a client that stops reading ------------------------------------------------------------------

CONTROL_BUDGET = 1.0  # seconds any control call may take, whatever a client does


def stalled_client(srv: ElstatServer) -> Raw:
    """A client whose socket stops being read once one message is buffered
    (websockets' flow control, a 4 KiB receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    return open_raw(srv, sock=sock, max_queue=1)


def drain(client: Raw) -> None:
    """Let a stalled client read to the end, so its reading thread finishes."""
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            client.ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
    except (ConnectionClosed, TimeoutError):
        pass
    client.close()


def test_a_client_that_never_reads_is_shed_and_delays_nobody() -> None:
    """One client subscribes and stops reading; 16 KiB DATA frames are pushed until it
    is shed (1013, over ``send_queue_limit``). The other, which reads (the pushes wait
    for it to be at most ``WINDOW`` frames behind, never for the stalled one), receives
    every frame in order, its mid-burst SUBSCRIBE is answered within a second, and
    every push returns within a second."""
    window = 32  # 512 KiB: well under the limit
    with ElstatServer(channels=["graph:big", "status:api"], send_queue_limit=2 * 1024 * 1024) as srv:
        stalled = stalled_client(srv)
        healthy = open_raw(srv)
        consumer: threading.Thread | None = None
        try:
            assert stalled.subscribe("graph:big") == ["graph:big"]
            assert healthy.subscribe("graph:big") == ["graph:big"]
            received: list[int] = []
            others: list[Any] = []
            progress = threading.Condition()

            def consume() -> None:
                try:
                    while True:
                        frame = healthy.recv(timeout=10)
                        with progress:
                            if frame["op"] == 3:
                                received.append(frame["d"][1][0])
                            else:
                                others.append(frame)
                            progress.notify_all()
                except (ConnectionClosed, TimeoutError) as exc:
                    with progress:
                        others.append(exc)
                        progress.notify_all()

            consumer = threading.Thread(target=consume, name="test-elstat-consumer")
            consumer.start()
            took: list[float] = []
            pushed = 0
            blob = "x" * 16384

            def shed() -> bool:
                return any(c.cid == stalled.cid and c.close_code is not None for c in srv.all_connections)

            while pushed < 4000 and not shed():
                with progress:
                    assert progress.wait_for(lambda n=pushed: len(received) >= n - window, timeout=10), others
                started = time.monotonic()
                assert srv.push_data("graph:big", [pushed, blob], timestamp_ms=STAMP) in (1, 2)
                took.append(time.monotonic() - started)
                pushed += 1
                if pushed == 100:
                    started = time.monotonic()
                    healthy.send({"op": 0, "channels": ["status:api"]})
                    with progress:
                        assert progress.wait_for(lambda: bool(others), timeout=CONTROL_BUDGET)
                    assert time.monotonic() - started < CONTROL_BUDGET
            assert shed(), f"not shed after {pushed} frames"
            gone = next(c for c in srv.all_connections if c.cid == stalled.cid)
            assert gone.close_code == SLOW_CONSUMER_CLOSE_CODE == 1013 and not gone.open
            assert srv.push_data("graph:big", [pushed, "end"], timestamp_ms=STAMP) == 1
            with progress:
                assert progress.wait_for(lambda: len(received) == pushed + 1, timeout=10)
            assert received == list(range(pushed + 1))
            assert others == [{"op": 1, "channels": ["status:api"]}]
            assert max(took) < CONTROL_BUDGET, f"slowest push {max(took):.3f} s"
            assert [c.cid for c in srv.connections] == [healthy.cid]
        finally:
            healthy.close()
            if consumer is not None:
                consumer.join(10)
            drain(stalled)


# -- IPv6, TLS, close() ------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback() -> None:
    with ElstatServer("::1", channels=["status:api"]) as srv:
        assert srv.url == f"ws://[::1]:{srv.port}/api/streaming"
        assert srv.base_url == f"http://[::1]:{srv.port}"
        client = open_raw(srv)
        try:
            assert client.subscribe("status:api") == ["status:api"]
            assert srv.push_data("status:api", True, timestamp_ms=STAMP) == 1
            assert client.recv() == {"op": 3, "c": "status:api", "d": [STAMP, True]}
        finally:
            client.close()


def test_tls() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with ElstatServer(channels=["status:api"], ssl_context=server_context) as srv:
        assert srv.url == f"wss://127.0.0.1:{srv.port}/api/streaming"
        assert srv.base_url == f"https://127.0.0.1:{srv.port}"
        client = Raw(srv.url, ssl=client_context)
        try:
            assert client.subscribe("status:api") == ["status:api"]
            assert srv.push_incident("close", {"id": "7"}) == 1
            assert client.recv() == {"op": 6, "d": {"id": "7"}}
        finally:
            client.close()


def server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("leap-sync-server-elstat")]


def test_close_with_clients_connected_returns_within_a_second() -> None:
    """Two clients that answer, one that stopped reading with its socket full, and a
    TCP connection that never sent its upgrade request: close() returns within a
    second and leaves no thread."""
    srv = ElstatServer(channels=["graph:big"]).start()
    answering = [open_raw(srv), open_raw(srv)]
    stalled = stalled_client(srv)
    half_open = socket.create_connection(("127.0.0.1", srv.port))
    try:
        stalled.subscribe("graph:big")
        blob = "x" * 65536
        for _ in range(1000):  # until its socket takes no more (long before 16 MiB are queued)
            srv.push_data("graph:big", blob)
            if next(c for c in srv.connections if c.cid == stalled.cid).queued:
                break
        assert next(c for c in srv.connections if c.cid == stalled.cid).queued
        assert len(server_threads()) >= 4  # the listener and the three open connections
        started = time.monotonic()
        srv.close()
        assert time.monotonic() - started < 1.0
        assert server_threads() == []
        assert [client.expect_close() for client in answering] == [(1001, "")] * 2
        assert [(c.open, c.close_code) for c in srv.all_connections] == [(False, 1001)] * 3
        srv.close()  # idempotent
    finally:
        half_open.close()
        for client in answering:
            client.close()
        drain(stalled)


# -- the pytest fixtures ----------------------------------------------------------------------


def test_the_elstat_server_fixture(elstat_server: ElstatServer) -> None:
    assert elstat_server.running and elstat_server.channels == ()
    assert elstat_server.url == f"ws://127.0.0.1:{elstat_server.port}/api/streaming"
    elstat_server.add_channel("status:api")
    client = Raw(elstat_server.url)
    try:
        assert client.subscribe("status:api") == ["status:api"]
    finally:
        client.close()


def test_the_elstat_server_factory(elstat_server_factory: Callable[..., ElstatServer]) -> None:
    first = elstat_server_factory(channels=["status:a"])
    second = elstat_server_factory(channels=["status:b"], close_timeout=0.2)
    assert first.running and second.running and first.port != second.port
    assert (first.channels, second.channels) == (("status:a",), ("status:b",))
    # Both are closed after the test (the suite fails a test that leaves threads).
