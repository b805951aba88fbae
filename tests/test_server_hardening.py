"""Both embedded servers and the control endpoint against hostile or careless input:
client text that is not text (lone surrogates), ping floods from clients that stop
reading, endless continuation frames, request lines that are not ASCII, per-connection
setup failures (out of descriptors), bad HTTP bodies, control calls given values they
refuse, constructor options no connection could work with, and concurrent closes.
Raw sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import base64
import errno
import http.client
import json
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import PROJECT, TOKEN, RawClient, _no_server_errors, open_client

from leap_sync.errors import LeapEncodeError
from leap_sync.protocol.codec import Codec
from leap_sync.protocol.server_session import ServerSession
from leap_sync.testing import ControlServer, ElstatServer, LeapEdgeServer
from leap_sync.testing.websocket import connection as connection_module
from leap_sync.testing.websocket.frames_in import MAX_FRAGMENTS
from leap_sync.testing.websocket.outbox import Outbox, Put
from leap_sync.testing.websocket.sockets import check_close, fit_reason

__all__ = ["_no_server_errors"]  # the autouse fixture: no server thread may log an error

TIMEOUT = 10.0
MiB = 1024 * 1024
Server = LeapEdgeServer | ElstatServer


class Wire:
    """A raw websocket client socket: any frame out (masked), frames in one by one."""

    def __init__(self, port: int, path: str, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"no upgrade: {head!r}"
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.buf = bytearray(rest)

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        self.sock.sendall(frame(opcode, payload, fin=fin))

    def text(self, text: str) -> None:
        self.send(0x1, text.encode("utf-8", "surrogatepass"))  # lone surrogates as a peer may send them

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buf += chunk

    def read(self) -> tuple[int, bytes]:
        """``(opcode, payload)`` of the server's next frame (unmasked, unfragmented)."""
        self._need(2)
        length, offset = self.buf[1] & 0x7F, 2
        if length == 126:
            self._need(4)
            length, offset = struct.unpack("!H", self.buf[2:4])[0], 4
        elif length == 127:
            self._need(10)
            length, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(offset + length)
        opcode, payload = self.buf[0] & 0x0F, bytes(self.buf[offset : offset + length])
        del self.buf[: offset + length]
        return opcode, payload

    def read_close(self) -> tuple[int, str]:
        """Skip frames until the close frame: ``(code, reason)``."""
        while True:
            opcode, payload = self.read()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame (the zero mask: payload bytes unchanged)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


@pytest.fixture
def wires() -> Iterator[Callable[..., Wire]]:
    opened: list[Wire] = []

    def make(*args: Any, **kwargs: Any) -> Wire:
        wire = Wire(*args, **kwargs)
        opened.append(wire)
        return wire

    yield make
    for wire in opened:
        wire.close()


def leap_wire(server: LeapEdgeServer, wires: Callable[..., Wire], **kwargs: Any) -> Wire:
    """An identified raw Leap client (Hello and INIT read)."""
    wire = wires(server.port, "/ws?encoding=json&compression=none", **kwargs)
    assert json.loads(wire.read()[1])["op"] == 1
    wire.text(json.dumps({"op": 2, "d": {"project_id": PROJECT, "token": TOKEN}}))
    assert json.loads(wire.read()[1])["d"]["e"] == "INIT"
    return wire


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer(close_timeout=0.5) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room")
        yield server


@pytest.fixture
def elstat() -> Iterator[ElstatServer]:
    with ElstatServer(channels=["status:api"]) as server:
        yield server


# -- 1: client text that is not text -------------------------------------------------------


def test_fit_reason_escapes_lone_surrogates_and_fits_123_bytes() -> None:
    assert fit_reason("unknown event \ud800") == "unknown event \\ud800"
    long = fit_reason("\udfff" * 100)
    assert long == "\\udfff" * 20 + "\\ud"
    assert len(long.encode("utf-8")) == 123
    assert fit_reason("é" * 100).encode("utf-8") == "é".encode() * 61  # never half a character
    with pytest.raises(ValueError, match="lone surrogates"):
        check_close(4000, "\ud800")
    with pytest.raises(TypeError):
        check_close("4000", "")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("identified", "payload", "expected"),
    [
        (True, '{"op":0,"d":{"e":"\\ud800"}}', (4005, "unknown event \\ud800")),
        (False, '{"op":0,"d":{"e":"\\ud800","c":5}}', (4005, None)),
        (True, '{"op":0,"d":{"e":"\ud800","c":null,"d":null}}', (1007, None)),  # raw surrogate: not UTF-8
    ],
    ids=["escaped-unknown-event", "escaped-before-identify", "raw-surrogate-bytes"],
)
def test_a_lone_surrogate_from_a_client_closes_with_the_protocol_code(
    leap: LeapEdgeServer, wires: Callable[..., Wire], identified: bool, payload: str, expected: tuple[int, str | None]
) -> None:
    if identified:
        wire = leap_wire(leap, wires)
    else:
        wire = wires(leap.port, "/ws")
        assert json.loads(wire.read()[1])["op"] == 1
    wire.text(payload)
    code, reason = wire.read_close()
    assert code == expected[0]
    if expected[1] is not None:
        assert reason == expected[1]
    leap.wait_for(lambda s: s.all_connections[-1].close_code is not None, TIMEOUT)
    assert leap.all_connections[-1].close_code == expected[0]


# -- 2: ping floods and overflow -----------------------------------------------------------


def test_the_outbox_keeps_only_the_latest_pong_and_none_once_closed() -> None:
    box = Outbox(100)
    assert box.put(b"data", count=1) is Put.QUEUED
    assert box.put_pong(b"\x8a\x01a") and box.put_pong(b"\x8a\x01b")
    assert box.queued == 4 + 3
    batch = box.take(1000)
    assert batch is not None and batch.data == b"\x8a\x01b" + b"data" and batch.frames == 1
    assert box.take(1000) is None
    box.close()
    assert not box.put_pong(b"\x8a\x01c")
    assert box.queued == 0


def flood_pings(wire: Wire, count: int) -> bytes:
    """Send ``count`` pings with distinct 125-byte payloads; returns the last one."""
    batch = 1000
    payload = b""
    for start in range(0, count, batch):
        pings = []
        for i in range(start, min(start + batch, count)):
            payload = f"{i:010d}".encode() + b"p" * 115
            pings.append(frame(0x9, payload))
        wire.sock.sendall(b"".join(pings))
    return payload


def read_pongs_until(wire: Wire, done: Callable[[int, bytes], bool]) -> tuple[int, bytes]:
    """Read frames until ``done(opcode, payload)``: ``(pongs read, last pong)``."""
    pongs, last = 0, b""
    while True:
        opcode, payload = wire.read()
        if opcode == 0xA:
            pongs, last = pongs + 1, payload
        if done(opcode, payload):
            return pongs, last


PINGS = 100_000  # 12.7 MB of pongs: far over the 1 MiB queue and any socket buffers


@pytest.mark.timeout(120)
def test_a_leap_client_that_floods_pings_without_reading_queues_one_pong(wires: Callable[..., Wire]) -> None:
    with LeapEdgeServer(send_queue_limit=MiB, close_timeout=0.5) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room")
        wire = leap_wire(server, wires, rcvbuf=4096)
        wire.text('{"op":0,"d":{"e":"SUBSCRIBE","c":"room","d":null}}')
        server.wait_for(lambda s: s.subscribers("room"), TIMEOUT)
        last = flood_pings(wire, PINGS)
        wire.text('{"op":3}')  # after every ping: once counted, every ping was read
        server.wait_for(lambda s: s.connections and s.connections[0].heartbeats == 1, 60)
        info = server.connections[0]
        assert info.open and info.close_code is None
        assert info.queued < 1024  # the heartbeat ack and one pong at most
        assert server.publish("room", "after", 1) == 1

        def after(opcode: int, payload: bytes) -> bool:
            return opcode == 0x1 and json.loads(payload).get("d", {}).get("e") == "MESSAGE"

        pongs, last_pong = read_pongs_until(wire, after)
        assert last_pong == last or read_pongs_until(wire, lambda op, p: p == last)[1] == last
        assert pongs < PINGS


@pytest.mark.timeout(120)
def test_an_elstat_client_that_floods_pings_without_reading_queues_one_pong(wires: Callable[..., Wire]) -> None:
    with ElstatServer(channels=["status:api"], send_queue_limit=MiB) as server:
        wire = wires(server.port, "/api/streaming", rcvbuf=4096)
        wire.text('{"op":0,"channels":["status:api"]}')
        assert json.loads(wire.read()[1]) == {"op": 1, "channels": ["status:api"]}
        last = flood_pings(wire, PINGS)
        wire.text('{"op":0,"channels":[]}')  # after every ping: once counted, every ping was read
        server.wait_for(lambda s: s.connections and s.connections[0].frames_in == 2, 60)
        info = server.connections[0]
        assert info.open and info.close_code is None
        assert info.queued < 1024
        assert server.push_data("status:api", True, timestamp_ms=1) == 1

        def data(opcode: int, payload: bytes) -> bool:
            return opcode == 0x1 and json.loads(payload) == {"op": 3, "c": "status:api", "d": [1, True]}

        pongs, last_pong = read_pongs_until(wire, data)
        assert last_pong == last or read_pongs_until(wire, lambda op, p: p == last)[1] == last
        assert pongs < PINGS


def test_heartbeat_acks_held_back_count_toward_the_queue_limit(wires: Callable[..., Wire]) -> None:
    with LeapEdgeServer(send_queue_limit=4096, heartbeat_ack_delay=60.0, close_timeout=0.2) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        wire = leap_wire(server, wires)
        for _ in range(1000):  # 1000 acks of 10 bytes, all held back 60 s
            wire.text('{"op":3}')
        assert wire.read_close() == (4000, "slow consumer: over 4096 bytes queued")


# -- fragments and request lines -----------------------------------------------------------


@pytest.mark.parametrize(("server_kind", "code"), [("leap", 1009), ("elstat", 4420)])
def test_a_message_of_too_many_frames_closes(
    leap: LeapEdgeServer, elstat: ElstatServer, wires: Callable[..., Wire], server_kind: str, code: int
) -> None:
    if server_kind == "leap":
        wire, server, start, end = leap_wire(leap, wires), leap, b'{"op":', b"3}"
    else:
        wire, server, start, end = wires(elstat.port, "/api/streaming"), elstat, b'{"op":0,', b'"channels":[]}'
    # Exactly MAX_FRAGMENTS frames: served.
    middle = frame(0x0, fin=False) * (MAX_FRAGMENTS - 2)
    wire.sock.sendall(frame(0x1, start, fin=False) + middle + frame(0x0, end))
    opcode, payload = wire.read()
    assert opcode == 0x1 and json.loads(payload)["op"] in (4, 1)  # heartbeat ack / SUBSCRIBED
    # One more: closed.
    wire.sock.sendall(frame(0x1, start, fin=False) + middle + frame(0x0, fin=False) + frame(0x0, end))
    assert wire.read_close() == (code, f"a message of over {MAX_FRAGMENTS} frames")
    server.wait_for(lambda s: s.all_connections[-1].close_code == code, TIMEOUT)


@pytest.mark.parametrize("path", ["/ws", "/api/streaming"])
@pytest.mark.parametrize(
    "request_line",
    [b"GET {path}?x=\xff HTTP/1.1", b"G\xc3\xa9T {path} HTTP/1.1", b"GET {path}", b"GET {path} HTTP/2.0"],
    ids=["non-ascii-path", "non-ascii-method", "no-version", "bad-version"],
)
def test_an_unparsable_upgrade_request_is_answered_400(
    leap: LeapEdgeServer, elstat: ElstatServer, path: str, request_line: bytes
) -> None:
    port = leap.port if path == "/ws" else elstat.port
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(
            request_line.replace(b"{path}", path.encode()) + b"\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer


# -- 3: per-connection setup failures ------------------------------------------------------


@pytest.mark.parametrize(
    "error", [OSError(errno.EMFILE, "Too many open files"), RuntimeError("no wakeup")], ids=["emfile", "other"]
)
@pytest.mark.parametrize("kind", ["leap", "elstat"])
def test_the_accepting_thread_survives_a_connection_it_cannot_set_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception, kind: str
) -> None:
    real = connection_module.Wakeup
    failures = [error]

    def flaky() -> Any:
        if failures:
            raise failures.pop()
        return real()

    deaths: list[str] = []
    monkeypatch.setattr(connection_module, "Wakeup", flaky)
    monkeypatch.setattr(threading, "excepthook", lambda args: deaths.append(str(args.exc_value)))
    caplog.set_level(logging.WARNING, "leap_sync.testing")
    server: Server = LeapEdgeServer() if kind == "leap" else ElstatServer()
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as refused:
            assert refused.recv(1) == b""  # closed at once, not left hanging
        if isinstance(server, LeapEdgeServer):
            with RawClient(server.url) as client:
                client.expect_hello(30000)
        else:
            with Wire(server.port, "/api/streaming") as wire:
                wire.text('{"op":0,"channels":[]}')
                assert json.loads(wire.read()[1]) == {"op": 1, "channels": []}
    assert deaths == []
    assert [r.getMessage() for r in caplog.records if r.name == "leap_sync.testing"] == [
        f"cannot serve a connection ({type(error).__name__}: {error}); retrying in 0.1 s"
    ]


# -- 4 and 5: the HTTP control endpoint ----------------------------------------------------


@pytest.fixture
def control(leap: LeapEdgeServer) -> Iterator[ControlServer]:
    with ControlServer(leap) as ctl:
        yield ctl


def raw_http(port: int, request: bytes, *, shut: bool = False) -> tuple[int, dict[str, str], Any]:
    """Send raw request bytes; ``(status, headers, JSON body)`` of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), json.loads(response.read())


DEEP = ("[" * 50_000 + "]" * 50_000).encode()
GOOD = b'{"event": "e", "data": 1}'
NOT_UTF8 = b'{"event": "\xff"}'


def post(headers: str, body: bytes, path: str = "/channels/room/messages", method: str = "POST") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


@pytest.mark.parametrize(
    ("request_bytes", "error", "closes"),
    [
        (post(f"Content-Length: {20 + len(DEEP)}\r\n", b'{"event":"e","data":' + DEEP), "nested too deeply", False),
        (
            post(f"Content-Length: {6 + len(DEEP)}\r\n", b'{"a":' + DEEP + b"}", "/channels/room/state", "PUT"),
            "nested too deeply",
            False,
        ),
        (post(f"Content-Length: {len(NOT_UTF8)}\r\n", NOT_UTF8), "invalid JSON body: not UTF-8", False),
        (post("Content-Length: \uff12\uff15\r\n", GOOD), "ASCII digits expected", True),  # fullwidth 25
        (post(f"Content-Length: +{len(GOOD)}\r\n", GOOD), "ASCII digits expected", True),
        (post("Content-Length: -1\r\n", b""), "ASCII digits expected", True),
        (post(f"Content-Length: {len(GOOD)}\r\nContent-Length: 25\r\n", GOOD), "more than one Content-Length", True),
        (post("Transfer-Encoding: chunked\r\n", b"19\r\n" + GOOD + b"\r\n0\r\n\r\n"), "Transfer-Encoding", True),
        (post(f"Content-Length: {2 * MiB}\r\n", b""), "request body too large", True),
    ],
    ids=["deep-post", "deep-put", "not-utf8", "fullwidth-digits", "plus-sign", "negative", "two", "chunked", "big"],
)
def test_control_bad_bodies_answer_400_with_an_error(
    leap: LeapEdgeServer, control: ControlServer, request_bytes: bytes, error: str, closes: bool
) -> None:
    status, headers, body = raw_http(control.port, request_bytes)
    assert status == 400
    assert set(body) == {"error"} and error in body["error"]
    assert (headers.get("Connection") == "close") is closes
    assert leap.channel("room").state == {}
    assert raw_http(control.port, b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"DELETE /connections HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /connections HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"NOT A REQUEST\r\n\r\n", 400),
    ],
    ids=["delete", "options", "too-many-headers", "no-request-line"],
)
def test_control_refusals_of_http_itself_are_json_too(
    control: ControlServer, request_bytes: bytes, status: int
) -> None:
    answered, headers, body = raw_http(control.port, request_bytes)
    assert answered == status and headers["Content-Type"] == "application/json"
    assert set(body) == {"error"} and body["error"]


def test_control_a_body_cut_short_answers_400(control: ControlServer) -> None:
    status, headers, body = raw_http(control.port, post("Content-Length: 25\r\n", b'{"event"'), shut=True)
    assert (status, body, headers["Connection"]) == (
        400,
        {"error": "request body shorter than its Content-Length"},
        "close",
    )


def test_control_a_bad_state_creates_no_channel(leap: LeapEdgeServer, control: ControlServer) -> None:
    body = b'{"v": "\\ud800"}'
    status, _headers, answer = raw_http(
        control.port, post(f"Content-Length: {len(body)}\r\n", body, "/channels/fresh/state", "PUT")
    )
    assert status == 400 and "lone surrogate" in answer["error"]
    with pytest.raises(KeyError):
        leap.channel("fresh")


def test_control_close_ends_every_connection_thread(leap: LeapEdgeServer) -> None:
    before = set(threading.enumerate())
    ctl = ControlServer(leap).start()
    idle = socket.create_connection(("127.0.0.1", ctl.port), timeout=TIMEOUT)  # says nothing
    keep = socket.create_connection(("127.0.0.1", ctl.port), timeout=TIMEOUT)
    try:
        keep.sendall(b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n")
        assert keep.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
        started = [t for t in threading.enumerate() if t not in before]
        names = sorted(t.name for t in started)
        assert names == [f"leap-sync-control-{ctl._number}"] + [f"leap-sync-control-{ctl._number}-conn"] * 2
        assert all(t.daemon for t in started)
        ctl.close()
        assert [t.name for t in started if t.is_alive()] == []
        for sock in (keep, idle):  # both cut: the rest of the answer, then EOF
            while sock.recv(4096):
                pass
        ctl.close()  # idempotent
    finally:
        idle.close()
        keep.close()


# -- 6: control calls refuse before changing anything --------------------------------------


def test_server_session_refuses_a_tag_before_recording_it() -> None:
    session = ServerSession(Codec("json"), interval=30.0, identify_timeout=10.0, now=0.0)
    with pytest.raises(LeapEncodeError):
        session.request_heartbeat("\ud800", 0.0)
    with pytest.raises(TypeError):
        session.request_heartbeat(5, 0.0)  # type: ignore[arg-type]
    assert session.deadline == 10.0  # the identify timeout alone: no request awaits an answer
    session.check(9.0)
    assert session.request_heartbeat("ok", 1.0) == {"op": 3, "d": {"tag": "ok"}}
    assert session.deadline == 1.0 + session.request_timeout


def test_request_heartbeat_with_a_tag_no_encoding_carries_sends_and_expects_nothing() -> None:
    with LeapEdgeServer(heartbeat_request_timeout=0.2) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        with open_client(server) as client:
            with pytest.raises(LeapEncodeError):
                server.request_heartbeat(tag="\ud800")
            with pytest.raises(TypeError):
                server.request_heartbeat(tag=7)  # type: ignore[arg-type]
            assert server.request_heartbeat(tag="ok") == [client.init["cid"]]
            assert client.recv() == {"op": 3, "d": {"tag": "ok"}}  # the refused one never came
            client.beat("ok")
            assert client.recv()["d"]["tag"] == "ok"
            client.expect_nothing(0.6)  # three request timeouts: no 4007
            assert server.connections[0].open


def tokenless_identify(server: LeapEdgeServer, project: str) -> int | str:
    """4001 when the project does not exist, "INIT" when it does."""
    with RawClient(server.url) as client:
        client.expect_hello(30000)
        client.send({"op": 2, "d": {"project_id": project, "token": None}})
        try:
            return str(client.recv()["d"]["e"])
        except Exception:
            code = client.ws.close_code
            assert code is not None
            return code


def test_registry_calls_refuse_before_changing_anything(leap: LeapEdgeServer) -> None:
    with pytest.raises(TypeError):
        leap.add_token("t2", project_id="p_grants", grants=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        leap.add_token("t3", project_id="p_grants", grants="room")
    with pytest.raises(TypeError):
        leap.create_channel("c", project_id="p_state", state=["x"])  # type: ignore[arg-type]
    with pytest.raises(LeapEncodeError):
        leap.create_channel("c\ud800", project_id="p_name")
    assert tokenless_identify(leap, "p_grants") == 4001
    assert tokenless_identify(leap, "p_state") == 4001
    assert tokenless_identify(leap, "p_name") == 4001
    with pytest.raises(LeapEncodeError):
        leap.create_pipe_room("stage\ud800")
    with pytest.raises(TypeError):
        leap.send_raw_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        leap.send_raw(5)  # type: ignore[arg-type]


def test_update_pipe_room_refuses_before_changing_the_room(leap: LeapEdgeServer) -> None:
    leap.create_pipe_room("stage", room_id="pipe_room_1", join_token="join_abc")
    with open_client(leap) as client:
        client.send({"op": 0, "d": {"c": None, "e": "PIPE_ROOM_SUBSCRIBE", "d": {"join_token": "join_abc"}}})
        assert client.recv()["d"]["e"] == "PIPE_ROOM_AVAILABLE"
        with pytest.raises(LeapEncodeError):
            leap.update_pipe_room("pipe_room_1", state="live", connection={"x": "\ud800"})
        with pytest.raises(TypeError):
            leap.update_pipe_room("pipe_room_1", state="live", connection=["x"])  # type: ignore[arg-type]
        room = leap.update_pipe_room("pipe_room_1")
        assert room.state == "offline"
        update = client.recv()
        assert update["d"]["e"] == "PIPE_ROOM_UPDATE" and update["d"]["d"]["pipe_room"]["state"] == "offline"


def test_elstat_refuses_channel_names_utf8_cannot_carry(elstat: ElstatServer) -> None:
    with pytest.raises(ValueError):
        elstat.add_channel("status:\ud800")
    with pytest.raises(ValueError):
        ElstatServer(channels=["status:\ud800"])
    assert elstat.channels == ("status:api",)


# -- 7: constructor options ----------------------------------------------------------------

NAN, INF = math.nan, math.inf
LEAP_BAD: list[tuple[dict[str, Any], type[Exception]]] = [
    *[({"heartbeat_interval": v}, ValueError) for v in (NAN, INF, -INF, 1e300, 0, -1.0, 0.0009, 86_401)],
    *[({"heartbeat_interval": v}, TypeError) for v in ("30", True, None)],
    *[({"identify_timeout": v}, ValueError) for v in (NAN, INF, 1e300, 0, -1)],
    *[({"heartbeat_tolerance": v}, ValueError) for v in (NAN, -1.0, 0.0, INF)],
    *[({"heartbeat_request_timeout": v}, ValueError) for v in (NAN, 0, -2.0, 1e9)],
    *[({"heartbeat_ack_delay": v}, ValueError) for v in (NAN, -0.001, INF)],
    *[({"session_ttl": v}, ValueError) for v in (NAN, -1, INF)],
    *[({"open_timeout": v}, ValueError) for v in (NAN, 0, INF)],
    *[({"close_timeout": v}, ValueError) for v in (NAN, -0.5, INF)],
    *[({"max_message_size": v}, ValueError) for v in (0, -1, 2**41)],
    *[({"max_message_size": v}, TypeError) for v in (1.5, True, "1")],
    *[({"send_queue_limit": v}, ValueError) for v in (0, -1, 2**41)],
    *[({"send_queue_limit": v}, TypeError) for v in (1e6, None)],
    ({"port": -1}, ValueError),
    ({"port": 65536}, ValueError),
    ({"port": "80"}, TypeError),
    ({"port": True}, TypeError),
    ({"host": 127}, TypeError),
    ({"project_id": ""}, ValueError),
    ({"project_id": "p\ud800"}, ValueError),
    ({"project_id": 5}, TypeError),
    ({"strict_heartbeats": "yes"}, TypeError),
    ({"ssl_context": object()}, TypeError),
    ({"on_frame": 5}, TypeError),
]
ELSTAT_BAD: list[tuple[dict[str, Any], type[Exception]]] = [
    *[({"send_queue_limit": v}, ValueError) for v in (0, -1, 2**41)],
    ({"send_queue_limit": 1.5}, TypeError),
    *[({"open_timeout": v}, ValueError) for v in (NAN, 0, INF, 1e300)],
    *[({"close_timeout": v}, ValueError) for v in (NAN, -0.1, 86_401)],
    ({"close_timeout": "1"}, TypeError),
    ({"port": 70000}, ValueError),
    ({"host": None}, TypeError),
    ({"channels": "status:api"}, TypeError),
    ({"ssl_context": "tls"}, TypeError),
]


@pytest.mark.parametrize(("options", "error"), LEAP_BAD, ids=[repr(o) for o, _ in LEAP_BAD])
def test_leap_edge_server_refuses_bad_options_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        LeapEdgeServer(**options)


@pytest.mark.parametrize(("options", "error"), ELSTAT_BAD, ids=[repr(o) for o, _ in ELSTAT_BAD])
def test_elstat_server_refuses_bad_options_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ElstatServer(**options)


def test_control_server_refuses_bad_arguments(leap: LeapEdgeServer) -> None:
    with pytest.raises(TypeError):
        ControlServer(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ControlServer(leap, port=-1)


def test_options_at_their_bounds_serve_a_client() -> None:
    with LeapEdgeServer(
        heartbeat_interval=86_400,
        identify_timeout=86_400,
        heartbeat_tolerance=86_400,
        heartbeat_request_timeout=0.001,
        heartbeat_ack_delay=0,
        session_ttl=0,
        max_message_size=1 << 40,
        send_queue_limit=1 << 40,
        open_timeout=86_400,
        close_timeout=0,
    ) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        with RawClient(server.url) as client:
            client.expect_hello(86_400_000)
            client.identify()
    with ElstatServer(send_queue_limit=1 << 40, open_timeout=0.001, close_timeout=0) as elstat:
        assert elstat.running


# -- 8: concurrent closes ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["leap", "elstat"])
def test_a_concurrent_close_returns_only_once_the_server_is_closed(kind: str) -> None:
    server: Server = LeapEdgeServer(close_timeout=1.0) if kind == "leap" else ElstatServer(close_timeout=1.0)
    server.start()
    # A client that never answers the close frame: the first close() waits for it.
    with Wire(server.port, "/ws" if kind == "leap" else "/api/streaming"):
        server.wait_for(lambda s: len(s.connections) == 1, TIMEOUT)
        first = threading.Thread(target=server.close, name="test-first-close")
        first.start()
        server.wait_for(lambda s: not s.all_connections[0].open, TIMEOUT)  # the first close() is under way
        started = time.monotonic()
        server.close()
        took = time.monotonic() - started
        assert [t.name for t in threading.enumerate() if t.name.startswith("leap-sync-server")] == []
        first.join(TIMEOUT)
        assert not first.is_alive()
        assert took < 1.0 + 3.0
