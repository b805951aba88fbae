"""The embedded server's fault injection (disconnect, drop, pause_acks, silence,
raw sends), its shutdown (no thread left behind, even with clients in every state),
and its capacity (200 raw clients at once)."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from _leap_raw import (
    COMBOS,
    PROJECT,
    TOKEN,
    RawClient,
    _no_server_errors,
    available,
    decode_frame,
    dispatch,
    encode_frame,
    message,
    sub,
    wait_until,
)

from leap_sync.testing import LeapEdgeServer

__all__ = ["_no_server_errors"]

Combo = tuple[str, str]


@pytest.fixture
def edge(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> Callable[..., LeapEdgeServer]:
    def make(**options: Any) -> LeapEdgeServer:
        server = leap_edge_server_factory(**options)
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room")
        return server

    return make


@pytest.fixture
def connect() -> Iterator[Callable[..., RawClient]]:
    """``connect(server, combo, identify=True)``: a raw client past Hello (and INIT)."""
    opened: list[RawClient] = []

    def make(server: LeapEdgeServer, combo: Combo = ("json", "none"), *, identify: bool = True) -> RawClient:
        client = RawClient(server.url, *combo)
        opened.append(client)
        client.expect_hello(round(server.heartbeat_interval * 1000))
        if identify:
            client.identify()
        return client

    yield make
    for client in opened:
        client.close()


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def join_all(threads: list[threading.Thread], timeout: float = 5.0) -> list[str]:
    """Join with one shared deadline; the names of those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


# -- disconnect and drop -----------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("code", [4000, 4001, 4002, 4003, 4004, 4005, 4007, 1000, 1011])
def test_disconnect_closes_every_connection_with_the_code(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo, code: int
) -> None:
    server = edge()
    clients = [connect(server, combo), connect(server, combo)]
    assert server.disconnect(code, "bye") == 2
    for client in clients:
        assert client.expect_close() == (code, "bye")
    server.wait_for(lambda s: not s.connections, timeout=5)


@pytest.mark.parametrize("combo", COMBOS)
def test_disconnect_4006_carries_the_new_endpoint_as_reason(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = connect(server, combo)
    new_url = "ws://127.0.0.1:9/ws"
    assert server.disconnect(4006, new_url) == 1
    assert client.expect_close() == (4006, new_url)


@pytest.mark.parametrize("combo", COMBOS)
def test_disconnect_one_connection_by_cid(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    target = connect(server, combo)
    spared = connect(server, combo)
    assert server.disconnect(4000, cid=target.init["cid"]) == 1
    assert target.expect_close() == (4000, "")
    server.wait_for(lambda s: len(s.connections) == 1, timeout=5)
    assert server.send_event("MARK", None) == 1
    assert spared.recv() == dispatch("MARK", None, None)


def test_disconnect_reaches_a_connection_that_has_not_identified(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]
) -> None:
    server = edge()
    client = connect(server, identify=False)
    server.wait_for_connections(1, identified=False)
    assert server.disconnect(4000, "early") == 1
    assert client.expect_close() == (4000, "early")


@pytest.mark.parametrize("combo", COMBOS)
def test_drop_cuts_tcp_without_a_close_frame(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    dropped = connect(server, combo)
    kept = connect(server, combo)
    assert server.drop(cid=dropped.init["cid"]) == 1
    assert dropped.expect_close() == (None, "")
    server.wait_for(lambda s: len(s.connections) == 1, timeout=5)
    gone = next(c for c in server.all_connections if c.cid == dropped.init["cid"])
    assert not gone.open and gone.close_code == 1006
    assert server.publish("room", "chat", 1) == 0
    assert server.send_event("MARK", None) == 1
    assert kept.recv() == dispatch("MARK", None, None)
    # drop() without cid cuts every connection, identified or not.
    pending = connect(server, combo, identify=False)
    server.wait_for(lambda s: len(s.connections) == 2, timeout=5)
    assert server.drop() == 2
    assert kept.expect_close() == (None, "")
    assert pending.expect_close() == (None, "")


def _stalled_reader(server: LeapEdgeServer) -> tuple[websocket.WebSocket, str]:
    """A client subscribed to ``room`` that never reads again (a 4 KiB receive buffer)."""
    ws = websocket.create_connection(
        server.url + "?encoding=json&compression=none",
        timeout=5,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    ws.recv()  # Hello
    ws.send(encode_frame({"op": 2, "d": {"project_id": PROJECT, "token": TOKEN}}, "json"))
    cid = decode_frame(ws.recv(), "json", "none")["d"]["d"]["cid"]
    ws.send(encode_frame(sub("room"), "json"))
    assert decode_frame(ws.recv(), "json", "none") == available("room")
    return ws, cid


def test_drop_cuts_a_connection_whose_writes_are_blocked(edge: Callable[..., LeapEdgeServer]) -> None:
    """A client that stops reading blocks the server's writes to it: the burst is
    queued (publish returns at once) and drop() still cuts it."""
    server = edge(send_queue_limit=256 * 1024 * 1024)
    ws, cid = _stalled_reader(server)
    try:
        started = time.monotonic()
        assert server.publish_many("room", "blob", ["x" * 16384] * 2048) == 1
        assert time.monotonic() - started < 2.0
        # The socket takes no more: most of the 32 MiB stays queued.
        server.wait_for(lambda s: s.connections[0].queued > 16 * 1024 * 1024, timeout=5)
        started = time.monotonic()
        assert server.drop(cid=cid) == 1
        assert time.monotonic() - started < 0.5
        server.wait_for(lambda s: not s.all_connections[0].open and s.all_connections[0].close_code == 1006)
        assert server.connections == []
    finally:
        ws.close(timeout=0.1)


# -- heartbeat faults --------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_pause_acks_stops_and_resumes_heartbeat_acks(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.5, heartbeat_tolerance=0.2)
    client = connect(server, combo, identify=False)
    start = time.monotonic()
    client.identify()
    server.pause_acks(True)
    wait_until(start + 0.5)
    client.beat()
    server.wait_for(lambda s: s.connections[0].heartbeats == 1, timeout=5)
    cid = server.connections[0].cid
    assert server.send_event("MARK", None, cid=cid) == 1
    assert client.recv() == dispatch("MARK", None, None)  # no ack before the marker
    client.expect_nothing(0.2)  # ...nor after it
    server.pause_acks(False)
    wait_until(start + 1.0)
    client.beat()
    assert client.recv() == {"op": 4}
    assert server.connections[0].heartbeats == 2


# -- silence -----------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_silence_sends_nothing_ignores_everything_and_enforces_nothing(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge(heartbeat_interval=0.2, identify_timeout=0.3)
    client = connect(server, combo, identify=False)
    client.identify()
    client.send(sub("room"))
    assert client.recv() == available("room")
    (info,) = server.connections
    assert server.silence() == 1
    # Nothing is written to it, what it sends is counted but ignored.
    assert server.publish("room", "chat", 1) == 0
    client.send({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "x", "d": None}}})
    client.send({"op": 77})  # would be 4004
    server.wait_for(lambda s: s.connections[0].frames_in == info.frames_in + 2, timeout=5)
    # No heartbeats for five intervals, and nothing is enforced.
    client.expect_nothing(1.0)
    (still,) = server.connections
    assert still.open and still.close_code is None and still.frames_out == info.frames_out
    # New connections are served normally.
    fresh = connect(server, combo)
    assert fresh.init["connection_count"] == 2
    fresh.send(sub("room"))
    assert fresh.recv() == available("room")
    # close() still closes the silenced connection properly.
    server.close()
    assert client.expect_close() == (1001, "")


def test_disconnect_of_a_silenced_connection_uses_the_given_code(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]
) -> None:
    """A silenced connection whose heartbeats are long overdue still closes with the
    code asked for (it must not wake up and enforce 4007 on the way out)."""
    server = edge(heartbeat_interval=0.1)
    client = connect(server)
    server.silence()
    client.expect_nothing(0.5)  # five intervals without a beat
    assert server.disconnect(4000, "fault") == 1
    assert client.expect_close() == (4000, "fault")


def test_a_silenced_connection_with_overdue_deadlines_does_not_spin(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]
) -> None:
    """Its heartbeat and tagged-request deadlines pass while silenced: the connection
    thread must keep sleeping, not poll the socket in a busy loop."""
    server = edge(heartbeat_interval=0.05, heartbeat_request_timeout=0.05)
    client = connect(server)
    server.silence()
    server.request_heartbeat("never-answered")
    client.expect_nothing(0.3)  # every deadline is overdue now
    cpu = time.process_time()
    client.expect_nothing(0.6)
    used = time.process_time() - cpu
    assert used < 0.3, f"{used:.2f} s of CPU in 0.6 s while idle"
    assert server.connections[0].open


def test_silence_one_connection_by_cid(edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]) -> None:
    server = edge()
    quiet = connect(server)
    loud = connect(server)
    for client in (quiet, loud):
        client.send(sub("room"))
    assert quiet.recv() == available("room")
    assert loud.recv() == available("room")
    assert loud.recv() == available("room")  # the session's other connection subscribed
    assert quiet.recv() == available("room")
    assert server.silence(cid=quiet.init["cid"]) == 1
    assert server.publish("room", "chat", 1) == 1
    assert loud.recv() == message("room", "chat", 1)
    quiet.expect_nothing(0.3)


# -- raw sends ---------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_send_raw_sends_the_exact_payload(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = connect(server, combo)
    assert server.send_raw("{not json") == 1
    assert client.recv_raw() == "{not json"
    assert server.send_raw(b"\x00\x01binary") == 1
    assert client.recv_raw() == b"\x00\x01binary"


@pytest.mark.parametrize("combo", COMBOS)
def test_send_raw_bytes_writes_straight_to_tcp(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = connect(server, combo)
    frame = b"\x81\x05hello"  # one unmasked text frame
    assert server.send_raw_bytes(frame[:3]) == 1
    assert server.send_raw_bytes(frame[3:]) == 1  # a frame split across writes
    assert client.recv_raw() == "hello"
    fragmented = b"\x02\x03abc" + b"\x80\x02de"  # binary "abc" + continuation "de"
    assert server.send_raw_bytes(fragmented) == 1
    assert client.recv_raw() == b"abcde"


@pytest.mark.parametrize("combo", COMBOS)
def test_send_frame_uses_each_connections_codec(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient], combo: Combo
) -> None:
    server = edge()
    client = connect(server, combo)
    other = connect(server, ("json", "none") if combo != ("json", "none") else ("json", "zlib"))
    assert server.send_frame({"op": 9, "d": {"x": [1, None]}}) == 2
    assert client.recv() == {"op": 9, "d": {"x": [1, None]}}
    assert other.recv() == {"op": 9, "d": {"x": [1, None]}}


def test_raw_sends_reach_connections_before_identify(
    edge: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]
) -> None:
    server = edge()
    client = connect(server, identify=False)
    server.wait_for_connections(1, identified=False)
    assert server.send_raw("early") == 1
    assert client.recv_raw() == "early"
    assert server.send_frame({"op": 3, "d": {"tag": "t"}}) == 1
    assert client.recv() == {"op": 3, "d": {"tag": "t"}}


# -- shutdown ----------------------------------------------------------------------------


def _raw_ws(server: LeapEdgeServer, combo: Combo = ("json", "none")) -> websocket.WebSocket:
    return websocket.create_connection(f"{server.url}?encoding={combo[0]}&compression={combo[1]}", timeout=5)


def _identify_ws(ws: websocket.WebSocket, combo: Combo, token: str | None = TOKEN) -> dict[str, Any]:
    assert decode_frame(ws.recv(), *combo)["op"] == 1
    payload = encode_frame({"op": 2, "d": {"project_id": PROJECT, "token": token}}, combo[0])
    if isinstance(payload, str):
        ws.send(payload)
    else:
        ws.send_binary(payload)
    init = decode_frame(ws.recv(), *combo)
    assert init["d"]["e"] == "INIT"
    data: dict[str, Any] = init["d"]["d"]
    return data


def _close_code(ws: websocket.WebSocket) -> int | None:
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, (opcode, data)
    return int.from_bytes(data[:2], "big")


def test_close_with_clients_in_every_state_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    server = LeapEdgeServer(heartbeat_interval=30.0, close_timeout=0.5).start()
    server.add_token(TOKEN)
    server.create_channel("room")
    sockets: list[socket.socket] = []
    sessions: list[websocket.WebSocket] = []
    try:
        identified = _raw_ws(server)
        _identify_ws(identified, ("json", "none"))
        compressed = _raw_ws(server, ("etf", "zlib"))
        _identify_ws(compressed, ("etf", "zlib"))
        unidentified = _raw_ws(server)
        assert decode_frame(unidentified.recv(), "json", "none")["op"] == 1
        silenced = _raw_ws(server)
        silenced_cid = _identify_ws(silenced, ("json", "none"))["cid"]
        server.silence(cid=silenced_cid)
        deaf = _raw_ws(server)  # identified, then never reads again (nor answers the close)
        _identify_ws(deaf, ("json", "none"))
        sessions += [identified, compressed, unidentified, silenced, deaf]
        tcp_only = socket.create_connection(("127.0.0.1", server.port))  # no HTTP request at all
        half_request = socket.create_connection(("127.0.0.1", server.port))
        half_request.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finished
        sockets += [tcp_only, half_request]
        server.wait_for(lambda s: len(s.connections) == 5, timeout=5)

        started = time.monotonic()
        server.close()
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"close() took {elapsed:.2f} s"
        # close() joined its own threads before returning.
        assert [t.name for t in new_threads(before) if t.name.startswith("leap-sync-")] == []
        assert join_all(new_threads(before)) == []
        for ws in (identified, compressed, unidentified, silenced):
            assert _close_code(ws) == 1001
        for sock in sockets:
            sock.settimeout(5)
            try:  # the server hung up: EOF, or a reset when our request bytes were unread
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert server.connections == []
        server.close()  # idempotent
    finally:
        server.close()
        for ws in sessions:
            ws.close(timeout=0.1)
        for sock in sockets:
            sock.close()
    assert join_all(new_threads(before)) == []


def test_close_while_a_write_is_blocked_on_a_stalled_reader() -> None:
    before = set(threading.enumerate())
    server = LeapEdgeServer(close_timeout=0.3, send_queue_limit=256 * 1024 * 1024).start()
    server.add_token(TOKEN)
    server.create_channel("room")
    ws, _cid = _stalled_reader(server)
    try:
        assert server.publish_many("room", "blob", ["x" * 16384] * 2048) == 1
        server.wait_for(lambda s: s.connections[0].queued > 16 * 1024 * 1024, timeout=5)
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 1.5  # close_timeout, then the cut
        assert server.all_connections[0].close_code == 1001
    finally:
        server.close()
        ws.close(timeout=0.1)
    assert join_all(new_threads(before)) == []


def test_fixture_servers_close_their_connections(
    leap_edge_server_factory: Callable[..., LeapEdgeServer], connect: Callable[..., RawClient]
) -> None:
    server = leap_edge_server_factory()
    server.add_token(TOKEN)
    client = connect(server)
    server.close()
    assert client.expect_close() == (1001, "")
    assert server.connections == []


def test_a_server_restarts_on_its_port_after_close() -> None:
    server = LeapEdgeServer()
    server.close()  # never started: a no-op
    with server:
        port = server.port
        with pytest.raises(Exception, match="already running"):
            server.start()
    assert port != 0
    with server:
        assert server.port == port
        server.add_token(TOKEN)
        ws = _raw_ws(server)
        try:
            assert _identify_ws(ws, ("json", "none"))["connection_count"] == 1
        finally:
            ws.close(timeout=0.1)


# -- capacity ----------------------------------------------------------------------------


def test_200_raw_clients_at_once_are_all_served(edge: Callable[..., LeapEdgeServer]) -> None:
    server = edge()
    combos = [p.values[0] for p in COMBOS if not p.marks]
    count = 200
    for i in range(count):
        server.add_token(f"leap_token_{i}")  # one session each

    def join(i: int) -> tuple[websocket.WebSocket, Combo, str]:
        combo = combos[i % len(combos)]
        ws = _raw_ws(server, combo)
        try:
            init = _identify_ws(ws, combo, f"leap_token_{i}")
            assert init["connection_count"] == 1
            cid = init["cid"]
            ws.send(encode_frame(sub("room"), combo[0]), opcode=2 if combo[0] == "etf" else 1)
            assert decode_frame(ws.recv(), *combo) == available("room")
        except BaseException:
            ws.close(timeout=0.1)
            raise
        return ws, combo, cid

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(join, i) for i in range(count)]
        done, _ = concurrent.futures.wait(futures, timeout=60)
    joined = [f.result() for f in futures if f in done and f.exception() is None]
    try:
        assert len(done) == count and len(joined) == count, [f.exception() for f in done if f.exception()]
        assert len({cid for _, _, cid in joined}) == count
        assert len(server.connections) == count
        assert {c.cid for c in server.connections} == {cid for _, _, cid in joined}
        assert server.publish("room", "fanout", {"n": 1}) == count
        for ws, combo, _cid in joined:
            assert decode_frame(ws.recv(), *combo) == message("room", "fanout", {"n": 1})
        assert {c.frames_out for c in server.connections} == {4}  # Hello, INIT, AVAILABLE, MESSAGE
    finally:
        for ws, _combo, _cid in joined:
            ws.close(timeout=0.1)
    server.wait_for(lambda s: not s.connections, timeout=20)


# -- TLS ---------------------------------------------------------------------------------


def test_tls_connections_are_served_dropped_and_closed(
    leap_edge_server_factory: Callable[..., LeapEdgeServer],
) -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = leap_edge_server_factory(ssl_context=server_context, close_timeout=0.5)
    server.add_token(TOKEN)
    assert server.url == f"wss://127.0.0.1:{server.port}/ws"

    def open_tls() -> websocket.WebSocket:
        return websocket.create_connection(
            server.url + "?encoding=json&compression=zlib", timeout=5, sslopt={"context": client_context}
        )

    dropped, closed = open_tls(), open_tls()
    pending = socket.create_connection(("127.0.0.1", server.port))  # TCP only: no TLS handshake
    try:
        assert _identify_ws(dropped, ("json", "zlib"))["scope"] == "token"
        (cid,) = [c.cid for c in server.connections if c.identified]
        _identify_ws(closed, ("json", "zlib"))
        assert server.drop(cid=cid) == 1
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            dropped.recv()  # the TCP connection ended without a close frame
        server.wait_for(lambda s: len(s.connections) == 1, timeout=5)
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 3.0
        assert _close_code(closed) == 1001
    finally:
        for ws in (dropped, closed):
            ws.close(timeout=0.1)
        pending.close()
