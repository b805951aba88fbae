"""The HTTP control endpoint, ``leap-sync serve`` as a subprocess (its output lines,
its endpoints, Ctrl-C), and the pytest fixtures the package registers."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _leap_raw import (
    COMBOS,
    PROJECT,
    TOKEN,
    RawClient,
    _no_server_errors,
    available,
    channel_obj,
    dispatch,
    message,
    serve_process,
    sub,
    unavailable,
)

from leap_sync.protocol.models import Channel
from leap_sync.testing import ControlServer, LeapEdgeServer

__all__ = ["_no_server_errors"]
pytest_plugins = ["pytester"]

Combo = tuple[str, str]


def call(method: str, url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request; ``(status, decoded JSON answer)``, error statuses included."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def leap(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> LeapEdgeServer:
    server = leap_edge_server_factory()
    server.add_token(TOKEN)
    server.create_channel("room")
    return server


@pytest.fixture
def control(leap: LeapEdgeServer) -> Iterator[str]:
    with ControlServer(leap) as ctl:
        assert ctl.url == f"http://127.0.0.1:{ctl.port}"
        yield ctl.url


@pytest.fixture
def connect(leap: LeapEdgeServer) -> Iterator[Callable[..., RawClient]]:
    opened: list[RawClient] = []

    def make(combo: Combo = ("json", "none"), token: str | None = TOKEN, url: str | None = None) -> RawClient:
        client = RawClient(url or leap.url, *combo)
        opened.append(client)
        client.expect_hello(30000)
        client.identify(token)
        return client

    yield make
    for client in opened:
        client.close()


# -- the HTTP control endpoint -----------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_post_channel_message_publishes(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient], combo: Combo
) -> None:
    client = connect(combo)
    client.send(sub("room"))
    assert client.recv() == available("room")
    assert call("POST", f"{control}/channels/room/messages", {"event": "chat", "data": {"text": "hi"}}) == (
        200,
        {"delivered": 1},
    )
    assert client.recv() == message("room", "chat", {"text": "hi"})
    # ``data`` may be any JSON value, or absent (null).
    assert call("POST", f"{control}/channels/room/messages", {"event": "n", "data": [1, "two"]}) == (
        200,
        {"delivered": 1},
    )
    assert client.recv() == message("room", "n", [1, "two"])
    assert call("POST", f"{control}/channels/room/messages", {"event": "bare"}) == (200, {"delivered": 1})
    assert client.recv() == message("room", "bare", None)


def test_post_to_an_unknown_channel_creates_it(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient]
) -> None:
    with pytest.raises(KeyError):
        leap.channel("fresh")
    assert call("POST", f"{control}/channels/fresh/messages", {"event": "first", "data": 1}) == (201, {"delivered": 0})
    assert leap.channel("fresh") == Channel("fresh", PROJECT, {}, "private", None)
    client = connect()
    client.send(sub("fresh"))
    assert client.recv() == available("fresh")
    assert call("POST", f"{control}/channels/fresh/messages", {"event": "second", "data": 2}) == (200, {"delivered": 1})
    assert client.recv() == message("fresh", "second", 2)


@pytest.mark.parametrize("combo", COMBOS)
def test_put_channel_state(leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient], combo: Combo) -> None:
    client = connect(combo)
    client.send(sub("room"))
    assert client.recv() == available("room")
    assert call("PUT", f"{control}/channels/room/state", {"topic": "new", "n": 2}) == (200, {"delivered": 1})
    assert client.recv() == dispatch("STATE_UPDATE", "room", {"state": {"topic": "new", "n": 2}})
    assert leap.channel("room").state == {"topic": "new", "n": 2}
    assert call("PUT", f"{control}/channels/other/state", {"a": 1}) == (201, {"delivered": 0})
    assert leap.channel("other") == Channel("other", PROJECT, {"a": 1}, "private", None)


@pytest.mark.parametrize("combo", COMBOS)
def test_post_token_message_sends_a_direct_message(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient], combo: Combo
) -> None:
    first = connect(combo)
    second = connect(combo)
    assert call("POST", f"{control}/tokens/{TOKEN}/messages", {"event": "dm", "data": {"k": "v"}}) == (
        200,
        {"delivered": 2},
    )
    expected = dispatch("DIRECT_MESSAGE", None, {"e": "dm", "d": {"k": "v"}}, u=False)
    assert first.recv() == expected
    assert second.recv() == expected
    assert call("POST", f"{control}/tokens/leap_token_nobody/messages", {"event": "dm"}) == (200, {"delivered": 0})


def test_get_connections_lists_them_without_tokens(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient]
) -> None:
    client = connect(("json", "zlib"))
    client.send(sub("room"))
    assert client.recv() == available("room")
    status, answer = call("GET", f"{control}/connections")
    assert status == 200
    assert answer == [
        {
            "cid": client.init["cid"],
            "project_id": PROJECT,
            "encoding": "json",
            "compression": "zlib",
            "subscriptions": ["room"],
        }
    ]
    assert TOKEN not in json.dumps(answer)


BAD_BODIES = [
    ("POST", "/channels/room/messages", b"{not json"),
    ("POST", "/channels/room/messages", b'{"event": "x", "data": NaN}'),
    ("POST", "/channels/room/messages", b'{"event": "x", "data": [Infinity]}'),
    ("POST", "/channels/room/messages", b"[1, 2]"),
    ("POST", "/channels/room/messages", b'"chat"'),
    ("POST", "/channels/room/messages", b"{}"),
    ("POST", "/channels/room/messages", b'{"data": 1}'),
    ("POST", "/channels/room/messages", b'{"event": 5}'),
    ("POST", "/channels/room/messages", b'{"event": ""}'),
    ("POST", "/channels/room/messages", b""),
    ("POST", "/channels/room/messages", b"\xff\xfe"),
    ("PUT", "/channels/room/state", b"[1]"),
    ("PUT", "/channels/room/state", b'"state"'),
    ("PUT", "/channels/room/state", b""),
    ("PUT", "/channels/room/state", b'{"v": NaN}'),
    ("POST", f"/tokens/{TOKEN}/messages", b'{"data": 1}'),
    ("POST", f"/tokens/{TOKEN}/messages", b"nope"),
]


@pytest.mark.parametrize(("method", "path", "raw"), BAD_BODIES)
def test_bad_bodies_answer_400_and_change_nothing(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient], method: str, path: str, raw: bytes
) -> None:
    client = connect()
    client.send(sub("room"))
    assert client.recv() == available("room")
    status, answer = call(method, control + path, raw=raw)
    assert status == 400
    assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]
    assert leap.channel("room").state == {}
    leap.send_event("MARK", None, cid=client.init["cid"])
    assert client.recv() == dispatch("MARK", None, None)  # nothing was delivered


def test_a_value_an_etf_subscriber_cannot_receive_answers_400_and_reaches_nobody(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient]
) -> None:
    pytest.importorskip("erlpack")
    etf = connect(("etf", "none"))
    plain = connect(("json", "none"))
    etf.send(sub("room"))
    assert etf.recv() == available("room")
    assert plain.recv() == available("room")
    status, answer = call(
        "POST", f"{control}/channels/room/messages", raw=f'{{"event": "big", "data": {2**100}}}'.encode()
    )
    assert status == 400 and "ETF" in answer["error"]
    for client in (etf, plain):
        leap.send_event("MARK", None, cid=client.init["cid"])
        assert client.recv() == dispatch("MARK", None, None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/channels/room/messages"),
        ("GET", "/drop"),
        ("PUT", "/disconnect"),
        ("POST", "/drop/extra"),
        ("POST", "/channels/room"),
        ("POST", "/channels/room/messages/extra"),
        ("POST", "/channels//messages"),
        ("PUT", "/channels/room/messages"),
        ("POST", "/channels/room/state"),
        ("POST", f"/tokens/{TOKEN}/state"),
        ("PUT", f"/tokens/{TOKEN}/messages"),
        ("POST", "/nope"),
        ("GET", "/connections/extra"),
    ],
)
def test_unknown_paths_answer_404(leap: LeapEdgeServer, control: str, method: str, path: str) -> None:
    body = None if method == "GET" else {"event": "x", "data": 1}
    assert call(method, control + path, body) == (404, {"error": "not found"})
    with pytest.raises(KeyError):
        leap.channel("")  # "/channels//messages" created nothing


def test_oversized_or_unmeasurable_bodies_answer_400_and_close(control: str) -> None:
    host, port = control.removeprefix("http://").split(":")
    for headers in ({"Content-Length": str(2 * 1024 * 1024)}, {"Content-Length": "abc"}, {"Content-Length": "-5"}):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.putrequest("POST", "/channels/room/messages")
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()  # the body never follows
            response = conn.getresponse()
            assert response.status == 400, headers
            assert "error" in json.loads(response.read())
            assert response.getheader("Connection") == "close"
        finally:
            conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(
    leap: LeapEdgeServer, control: str, connect: Callable[..., RawClient]
) -> None:
    client = connect()
    client.send(sub("room"))
    assert client.recv() == available("room")
    host, port = control.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for i, body in enumerate([b'{"event": "a", "data": 1}', b"{bad", b'{"event": "b", "data": 2}']):
            conn.request("POST", "/channels/room/messages", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == (400 if i == 1 else 200)
            response.read()
    finally:
        conn.close()
    assert client.recv() == message("room", "a", 1)
    assert client.recv() == message("room", "b", 2)


def test_control_server_close_joins_its_thread(leap: LeapEdgeServer) -> None:
    ctl = ControlServer(leap).start()
    assert call("GET", f"{ctl.url}/connections") == (200, [])
    ctl.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("leap-sync-control")]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ctl.port), timeout=2).close()


# -- leap-sync serve ---------------------------------------------------------------------


def test_serve_prints_both_endpoints_and_serves_them() -> None:
    with serve_process("--token", TOKEN, "--channel", "room", "--channel", "lobby") as served:
        assert served.lines == [f"leap edge: {served.ws_url}", f"control: {served.control_url}"]
        with RawClient(served.ws_url) as client:
            client.expect_hello(30000)
            init = client.identify()
            assert init["scope"] == "token" and init["channels"] == []
            for channel in ("room", "lobby"):
                client.send(sub(channel))
                assert client.recv() == available(channel)
            client.send(sub("missing"))
            assert client.recv() == unavailable("missing", "UNKNOWN")
            control = served.control_url
            assert call("POST", f"{control}/channels/room/messages", {"event": "chat", "data": {"n": 1}}) == (
                200,
                {"delivered": 1},
            )
            assert client.recv() == message("room", "chat", {"n": 1})
            assert call("PUT", f"{control}/channels/lobby/state", {"open": True}) == (200, {"delivered": 1})
            assert client.recv() == dispatch("STATE_UPDATE", "lobby", {"state": {"open": True}})
            assert call("POST", f"{control}/tokens/{TOKEN}/messages", {"event": "dm", "data": "x"}) == (
                200,
                {"delivered": 1},
            )
            assert client.recv() == dispatch("DIRECT_MESSAGE", None, {"e": "dm", "d": "x"}, u=False)
            assert call("POST", f"{control}/channels/newroom/messages", {"event": "e"}) == (201, {"delivered": 0})
            client.send(sub("newroom"))
            assert client.recv() == available("newroom")
            # Ctrl-C with a client connected: the client is closed 1001, exit status 0.
            started = time.monotonic()
            served.proc.send_signal(signal.SIGINT)
            assert served.proc.wait(10) == 0
            assert time.monotonic() - started < 5.0
            assert client.expect_close() == (1001, "")
        assert served.stderr() == ""


def test_serve_options_project_interval_and_identify_timeout() -> None:
    args = ["--project", "project_p", "--token", "leap_token_p", "--channel", "room"]
    args += ["--heartbeat-interval", "0.5", "--identify-timeout", "0.3"]
    with serve_process(*args) as served:
        with RawClient(served.ws_url, "json", "zlib") as client:
            client.expect_hello(500)
            assert client.identify("leap_token_p", project_id="project_p")["scope"] == "token"
            client.send(sub("room"))
            assert client.recv() == available("room", project_id="project_p")
        with RawClient(served.ws_url) as late:
            late.expect_hello(500)
            assert late.expect_close(timeout=3)[0] == 4002
        with RawClient(served.ws_url) as wrong:
            wrong.expect_hello(500)
            assert wrong.identify(None, project_id="project_p")["scope"] == "noauth"
        with RawClient(served.ws_url) as wrong:
            wrong.expect_hello(500)
            wrong.send({"op": 2, "d": {"project_id": PROJECT, "token": "leap_token_p"}})
            assert wrong.expect_close()[0] == 4001
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(10) == 0


def test_serve_exits_0_on_ctrl_c() -> None:
    with serve_process() as served:
        # Serving (a control request answered) before Ctrl-C: a SIGINT that lands
        # between the two printed lines and the wait in cli.py escapes its handler.
        assert call("GET", f"{served.control_url}/connections") == (200, [])
        started = time.monotonic()
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(10) == 0
        assert time.monotonic() - started < 5.0
        assert served.stderr() == ""


def test_serve_channel_objects_are_private_in_the_project() -> None:
    with serve_process("--token", TOKEN, "--channel", "room") as served:
        with RawClient(served.ws_url) as first:
            first.expect_hello(30000)
            first.identify()
            first.send(sub("room"))
            assert first.recv() == available("room")
        # The token's session keeps the subscription across the reconnect.
        with RawClient(served.ws_url) as again:
            again.expect_hello(30000)
            assert again.identify()["channels"] == [channel_obj("room")]
        with RawClient(served.ws_url) as tokenless:
            tokenless.expect_hello(30000)
            tokenless.identify(None)
            tokenless.send(sub("room"))
            assert tokenless.recv() == unavailable("room", "NOT_GRANTED")
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(10) == 0


# -- the pytest fixtures -----------------------------------------------------------------


def test_leap_edge_server_fixture_is_a_running_default_server(leap_edge_server: LeapEdgeServer) -> None:
    assert isinstance(leap_edge_server, LeapEdgeServer)
    assert leap_edge_server.url == f"ws://127.0.0.1:{leap_edge_server.port}/ws"
    assert leap_edge_server.project_id == PROJECT
    leap_edge_server.add_token(TOKEN)
    with RawClient(leap_edge_server.url) as client:
        client.expect_hello(30000)
        assert client.identify()["connection_count"] == 1


def test_leap_edge_server_factory_applies_options(
    leap_edge_server_factory: Callable[..., LeapEdgeServer],
) -> None:
    fast = leap_edge_server_factory(heartbeat_interval=0.25, project_id="project_f")
    default = leap_edge_server_factory()
    assert fast.port != default.port
    fast.add_token("leap_token_f")
    with RawClient(fast.url) as client:
        client.expect_hello(250)
        assert client.identify("leap_token_f", project_id="project_f")["scope"] == "token"
    with RawClient(default.url) as client:
        client.expect_hello(30000)


def test_fixtures_come_from_the_entry_point_and_close_their_servers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_uses_fixtures="""
        import socket
        import threading

        import pytest

        from leap_sync.testing import LeapEdgeServer

        SEEN = []


        def test_default(leap_edge_server):
            assert isinstance(leap_edge_server, LeapEdgeServer)
            assert "running" in repr(leap_edge_server)
            SEEN.append(leap_edge_server)


        def test_factory(leap_edge_server_factory):
            a = leap_edge_server_factory(heartbeat_interval=0.5, project_id="p")
            b = leap_edge_server_factory()
            assert (a.heartbeat_interval, a.project_id, b.heartbeat_interval) == (0.5, "p", 30.0)
            assert a.port != b.port
            SEEN.extend([a, b])


        def test_they_were_closed_after_their_tests():
            assert len(SEEN) == 3
            for server in SEEN:
                assert "stopped" in repr(server)
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            assert [t.name for t in threading.enumerate() if t.name.startswith("leap-sync-")] == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
