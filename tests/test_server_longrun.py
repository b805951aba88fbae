"""The embedded servers run for days: a bounded history of closed connections (memory
flat over 10,000 connect/close cycles), frame totals that survive the history, a clear
error for a push to an undeclared Elstat channel, no token in the servers' websockets
debug log, and the control endpoint's index, ``/disconnect`` and ``/drop``."""

from __future__ import annotations

import gc
import json
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import PROJECT, TOKEN, RawClient, _no_server_errors, open_client
from test_server_control import call
from websockets.sync.client import connect

from leap_sync.testing import ControlServer, ElstatServer, LeapEdgeServer
from leap_sync.testing.elstat.connection import ElstatConnection
from leap_sync.testing.leap.connection import LeapConnection
from leap_sync.testing.leap.control import ROUTES

__all__ = ["_no_server_errors"]

TIMEOUT = 10.0


def _upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def _cycles(port: int, path: str, count: int) -> None:
    """``count`` websocket connections, each upgraded (the server lists it) and then
    reset (no close frame, no TIME_WAIT left on this side)."""
    request = _upgrade_request(path)
    reset = struct.pack("ii", 1, 0)
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 101 "), answer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)


def _instances(kind: type, server: object) -> int:
    """How many connection objects of ``server`` are alive (other tests' servers may
    still have theirs, waiting for the garbage collector)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind and obj.host is server)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["leap", "elstat"])
def test_memory_stays_flat_over_10000_connections(kind: str) -> None:
    limit = 50
    server: LeapEdgeServer | ElstatServer
    if kind == "leap":
        server, path, conn_type = LeapEdgeServer(history_limit=limit), "/ws", LeapConnection
    else:
        server, path, conn_type = ElstatServer(history_limit=limit), "/api/streaming", ElstatConnection
    with server:
        _cycles(server.port, path, 10_000)
        server.wait_for(lambda s: not s._live and not s._conns, timeout=TIMEOUT)
        assert len(server._history) == limit
        assert len(server._closed) == limit
        assert len(server.all_connections) == limit
        assert all(info.close_code == 1006 and not info.open for info in server.all_connections)
        # Nothing else holds on to a connection: exactly the history is alive.
        assert _instances(conn_type, server) == limit


def test_history_keeps_the_last_closed_connections_and_every_frame_count() -> None:
    with LeapEdgeServer(history_limit=3) as server:
        server.add_token(TOKEN)
        cids = []
        for _ in range(7):
            client = open_client(server)  # Identify in; Hello and INIT out
            cids.append(client.init["cid"])
            client.close()
        live = open_client(server)
        server.wait_for(lambda s: len(s._closed) == 7 - 4 and not s._live - set(s._conns.values()))
        listed = server.all_connections
        assert [info.cid for info in listed] == [*cids[-3:], live.init["cid"]]
        assert [info.open for info in listed] == [False, False, False, True]
        assert [c.cid for c in server.connections] == [live.init["cid"]]
        assert server.frames_in == 8  # seven forgotten or listed, one live
        assert server.frames_out == 16
        live.close()


def test_history_limit_zero_lists_only_open_connections() -> None:
    with ElstatServer(channels=["status:api"], history_limit=0) as server:
        with connect(server.url) as ws:
            ws.send(json.dumps({"op": 0, "channels": ["status:api"]}))
            assert json.loads(ws.recv(timeout=TIMEOUT)) == {"op": 1, "channels": ["status:api"]}
            assert len(server.all_connections) == 1
        server.wait_for(lambda s: not s._live)
        assert server.all_connections == []
        assert (server.frames_in, server.frames_out) == (1, 1)


@pytest.mark.parametrize("factory", [LeapEdgeServer, ElstatServer])
@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (10_000_001, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_history_limit_is_checked(factory: Callable[..., Any], value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="history_limit"):
        factory(history_limit=value)


def test_push_to_an_undeclared_elstat_channel_says_how_to_declare_it() -> None:
    with ElstatServer() as server:
        with pytest.raises(KeyError) as caught:
            server.push_data("status:api", True)
        assert caught.value.args == (
            "no channel 'status:api': declare it first, with ElstatServer(channels=['status:api'])"
            " or server.add_channel('status:api')",
        )
        server.add_channel("status:api")
        assert server.push_data("status:api", True) == 0


# -- tokens never reach a log line -------------------------------------------------------

SECRET = "leap_token_secret_ABCDEFGHIJKLMNOP"


def test_server_websockets_debug_log_never_shows_a_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with LeapEdgeServer() as server:
        server.add_token(SECRET, project_id=PROJECT)
        client = RawClient(server.url)
        client.expect_hello(30000)
        client.identify(SECRET)
        client.close()
        server.wait_for(lambda s: not s._live)
    messages = [r.getMessage() for r in caplog.records if r.name != "websockets.client"]  # the test's own client
    frames = [m for m in messages if m.startswith("< TEXT [")]
    assert frames, messages  # the frame log is on, and shows the Identify by its size
    assert not [m for m in messages if SECRET in m or SECRET[-12:] in m]
    assert {r.name for r in caplog.records if r.getMessage() in frames} == {"leap_sync.testing.websockets"}


def test_server_websockets_debug_log_redacts_credential_headers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ElstatServer() as server:
        headers = {"Authorization": f"Bearer {SECRET}", "Cookie": f"t={SECRET}"}
        with connect(server.url, additional_headers=headers) as ws:
            ws.send(json.dumps({"op": 0, "channels": [SECRET[:20] + ":x"]}))
            ws.recv(timeout=TIMEOUT)
        server.wait_for(lambda s: not s._live)
    messages = [r.getMessage() for r in caplog.records if r.name != "websockets.client"]  # the test's own client
    assert "< Authorization: [redacted]" in messages
    assert "< Cookie: [redacted]" in messages
    assert not [m for m in messages if SECRET[:20] in m]


# -- the control endpoint: index, disconnect, drop --------------------------------------


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        yield server


@pytest.fixture
def control(leap: LeapEdgeServer) -> Iterator[str]:
    with ControlServer(leap) as ctl:
        yield ctl.url


def test_control_index_lists_every_route(control: str) -> None:
    assert call("GET", f"{control}/") == (200, {"routes": ROUTES})
    assert set(ROUTES) == {
        "GET /",
        "GET /connections",
        "POST /channels/{id}/messages",
        "PUT /channels/{id}/state",
        "POST /tokens/{token}/messages",
        "POST /disconnect",
        "POST /drop",
    }


def test_control_disconnect_closes_with_the_code_asked(leap: LeapEdgeServer, control: str) -> None:
    first, second = open_client(leap), open_client(leap)
    cid = first.init["cid"]
    assert call("POST", f"{control}/disconnect", {"code": 4006, "reason": "ws://elsewhere/ws", "cid": cid}) == (
        200,
        {"closed": 1},
    )
    assert first.expect_close() == (4006, "ws://elsewhere/ws")
    assert call("POST", f"{control}/disconnect") == (200, {"closed": 1})  # every one, 4000 by default
    assert second.expect_close() == (4000, "")
    assert call("POST", f"{control}/disconnect", {"cid": cid}) == (404, {"error": "no live connection with that cid"})


def test_control_drop_cuts_without_a_close_frame(leap: LeapEdgeServer, control: str) -> None:
    client = open_client(leap)
    assert call("POST", f"{control}/drop", {}) == (200, {"dropped": 1})
    assert client.expect_close() == (None, "")
    assert call("POST", f"{control}/drop") == (200, {"dropped": 0})


@pytest.mark.parametrize(
    ("route", "body", "error"),
    [
        ("drop", {"code": 4000}, "the body must be a JSON object with only ['cid'] (or empty)"),
        ("drop", [1], "the body must be a JSON object with only ['cid'] (or empty)"),
        ("drop", {"cid": 5}, "cid must be a string"),
        ("disconnect", {"code": "4000"}, "code must be an integer and reason a string"),
        ("disconnect", {"code": 1005}, None),
        ("disconnect", {"reason": "x" * 124}, "a close reason holds at most 123 bytes of UTF-8"),
    ],
)
def test_control_fault_routes_refuse_a_bad_body(
    leap: LeapEdgeServer, control: str, route: str, body: Any, error: str | None
) -> None:
    client = open_client(leap)
    status, answer = call("POST", f"{control}/{route}", body)
    assert status == 400
    if error is not None:
        assert answer == {"error": error}
    assert [c.cid for c in leap.connections] == [client.init["cid"]]
    client.close()


def _every_byte_encoded(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


def test_server_debug_log_redacts_registered_tokens_in_the_request_line_and_every_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A registered token in the upgrade request's query string (as is and
    # percent-encoded) and in headers outside the credential list, and a removed one.
    caplog.set_level(logging.DEBUG)
    removed = "leap_token_removed_0123456789"
    with LeapEdgeServer() as server:
        server.add_token(SECRET, project_id=PROJECT)
        server.add_token(removed, project_id=PROJECT)
        server.remove_token(removed)
        query = f"?token={SECRET}&x={SECRET}&y={_every_byte_encoded(SECRET)}&keep=1"
        headers = {"X-Leap-Token": SECRET, "X-Trace": f"id {SECRET} end", "X-Old": removed}
        with connect(server.url + query, additional_headers=headers):
            pass
        server.wait_for(lambda s: not s._live)
    messages = [r.getMessage() for r in caplog.records if r.name == "leap_sync.testing.websockets"]
    path = server.url.split(str(server.port), 1)[1]
    assert f"< GET {path}?token=[redacted]&x=[redacted]&y=[redacted]&keep=1 HTTP/1.1" in messages
    assert "< X-Leap-Token: [redacted]" in messages
    assert "< X-Trace: id [redacted] end" in messages
    assert "< X-Old: [redacted]" in messages
    shown = [r.getMessage() for r in caplog.records if r.name != "websockets.client"]  # the test's own client
    leaks = (SECRET, SECRET[-12:], _every_byte_encoded(SECRET)[:36], removed[-12:])
    assert [m for m in shown if any(leak in m for leak in leaks)] == []


def test_server_log_tracebacks_redact_registered_tokens(caplog: pytest.LogCaptureFixture) -> None:
    # The servers' own logger (a failed connection or control request logs its
    # traceback; a warning here: an error would fail the test's no-server-errors check):
    # a registered token in the message or the exception becomes [redacted].
    with LeapEdgeServer() as server, caplog.at_level(logging.WARNING, logger="leap_sync.testing"):
        server.add_token(SECRET, project_id=PROJECT)
        try:
            raise KeyError(SECRET)
        except KeyError:
            logging.getLogger("leap_sync.testing").warning("control request for %s failed", SECRET, exc_info=True)
    [record] = [r for r in caplog.records if r.name == "leap_sync.testing"]
    assert record.getMessage() == "control request for [redacted] failed"
    assert record.exc_info is None
    assert record.exc_text is not None and record.exc_text.endswith("KeyError: '[redacted]'")
    assert SECRET not in caplog.text
