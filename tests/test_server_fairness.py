"""The embedded server under a client that stops reading (every other client is
served on time, the stalled one is shed with 4000, control calls return promptly),
binaries (ETF carries them, JSON connections are closed 4000), and IPv6 binding."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from _leap_raw import (
    PROJECT,
    TOKEN,
    RawClient,
    _no_server_errors,
    available,
    decode_frame,
    encode_frame,
    message,
    open_client,
    sub,
)
from clientkit import fast_backoff

from leap_sync import ConnectionState, LeapClient, StateInfo
from leap_sync.testing import LeapEdgeServer
from leap_sync.testing.leap.connection import SLOW_CONSUMER_CLOSE_CODE
from leap_sync.testing.leap.core import BINARY_IN_JSON_REASON

__all__ = ["_no_server_errors"]

erlpack = pytest.importorskip("erlpack")

CONTROL_BUDGET = 1.0  # seconds any control call may take, whatever a client does


def timed(call: Callable[[], Any], took: list[float]) -> Any:
    started = time.monotonic()
    result = call()
    took.append(time.monotonic() - started)
    return result


@pytest.fixture
def clients() -> Iterator[list[LeapClient]]:
    made: list[LeapClient] = []
    yield made
    for client in made:
        client.close()


def test_a_stalled_reader_is_shed_and_delays_nobody(clients: list[LeapClient]) -> None:
    """One raw client subscribes and never reads; 400 x 64 KB are published to its
    channel. Another client receives every message, subscribes mid-burst and keeps its
    heartbeats acknowledged; the stalled one is closed 4000 once its queue (16 MiB by
    default) overflows; every control call returns within a second."""
    with LeapEdgeServer(heartbeat_interval=0.5, close_timeout=0.5) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.add_token("leap_token_stalled", project_id=PROJECT)
        server.create_channel("room")
        server.create_channel("later")
        stalled = websocket.create_connection(
            server.url + "?encoding=json&compression=none",
            timeout=5,
            sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
        )
        try:
            stalled.recv()  # Hello
            stalled.send(encode_frame({"op": 2, "d": {"project_id": PROJECT, "token": "leap_token_stalled"}}, "json"))
            stalled_cid = decode_frame(stalled.recv(), "json", "none")["d"]["d"]["cid"]
            stalled.send(encode_frame(sub("room"), "json"))
            assert decode_frame(stalled.recv(), "json", "none") == available("room")

            states: list[StateInfo] = []
            healthy = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
            clients.append(healthy)
            healthy.add_state_update_listener(states.append)
            messages = healthy.message_event_channel()
            healthy.connect(wait=True, timeout=5)
            healthy.subscribe("room", timeout=5)

            took: list[float] = []
            received: list[int] = []
            payload = "x" * 65536

            def consume() -> None:
                for _ in range(400):
                    received.append(messages.get(timeout=10).data["n"])

            consumer = threading.Thread(target=consume, name="test-consumer")
            consumer.start()
            beats_before = timed(lambda: server.connections, took)[-1].heartbeats
            for n in range(400):
                assert timed(lambda n=n: server.publish("room", "blob", {"n": n, "p": payload}), took) in (1, 2)
                if n == 200:
                    # mid-burst: another subscribe is answered on time
                    started = time.monotonic()
                    healthy.subscribe("later", timeout=2)
                    assert time.monotonic() - started < 1.0
                    timed(lambda: server.subscribers("room"), took)
                    timed(lambda: server.send_event("MARK", None, cid=stalled_cid), took)
            consumer.join(20)
            assert received == list(range(400))
            # The stalled client was shed with the documented code, and cut.
            server.wait_for(
                lambda s: any(
                    c.cid == stalled_cid and c.close_code == SLOW_CONSUMER_CLOSE_CODE for c in s.all_connections
                ),
                timeout=5,
            )
            server.wait_for(lambda s: stalled_cid not in {c.cid for c in s.connections}, timeout=5)
            # The healthy client kept beating, acknowledged, and never left CONNECTED.
            server.wait_for(lambda s: s.connections[0].heartbeats >= beats_before + 2, timeout=5)
            assert [c.cid for c in timed(lambda: server.connections, took)] == [healthy.init_event.cid]  # type: ignore[union-attr]
            assert healthy.state.connection_state is ConnectionState.CONNECTED
            assert [s.connection_state for s in states] == [
                ConnectionState.CONNECTING,
                ConnectionState.AUTHENTICATING,
                ConnectionState.CONNECTED,
            ]
            assert len(server.all_connections) == 2
            timed(lambda: server.drop(), took)
            assert max(took) < CONTROL_BUDGET, f"slowest control call {max(took):.3f} s"
        finally:
            stalled.close(timeout=0.1)


def test_controls_and_faults_return_at_once_while_a_write_is_blocked() -> None:
    with LeapEdgeServer(send_queue_limit=256 * 1024 * 1024, close_timeout=5.0) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room")
        ws = websocket.create_connection(
            server.url + "?encoding=json&compression=none",
            timeout=5,
            sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
        )
        try:
            ws.recv()
            ws.send(encode_frame({"op": 2, "d": {"project_id": PROJECT, "token": TOKEN}}, "json"))
            ws.recv()
            ws.send(encode_frame(sub("room"), "json"))
            ws.recv()
            took: list[float] = []
            timed(lambda: server.publish_many("room", "blob", ["x" * 16384] * 1024), took)
            server.wait_for(lambda s: s.connections[0].queued > 8 * 1024 * 1024, timeout=5)
            timed(lambda: server.request_heartbeat("t"), took)
            timed(lambda: server.set_channel_state("room", {"k": 1}), took)
            timed(lambda: server.send_raw("raw"), took)
            timed(lambda: server.silence(), took)
            timed(lambda: server.disconnect(4000, "bye"), took)  # its close frame cannot be written
            timed(lambda: server.connections, took)
            assert max(took) < CONTROL_BUDGET, took
            assert server.connections == []
            (gone,) = server.all_connections
            assert gone.close_code == 4000
        finally:
            ws.close(timeout=0.1)


# -- binaries ------------------------------------------------------------------------------


def test_an_etf_binary_reaches_etf_subscribers_and_closes_json_ones_4000() -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.add_token("leap_token_json", project_id=PROJECT)
        server.add_token("leap_token_etf", project_id=PROJECT)
        server.create_channel("room")
        sender = open_client(server, ("etf", "none"))
        listener = open_client(server, ("etf", "zlib"), "leap_token_etf")
        json_listener = open_client(server, ("json", "none"), "leap_token_json")
        for client in (sender, listener, json_listener):
            client.send(sub("room"))
            assert client.recv()["d"]["e"] == "AVAILABLE"
        data = {"blob": b"\xff\x00\xfe", "text": "ok"}
        sender.send({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "bin", "d": data}}})
        for client in (sender, listener):
            raw = client.recv_raw()
            assert isinstance(raw, bytes)
            term = erlpack.unpack(raw if client.compression == "none" else __import__("zlib").decompress(raw))
            assert term[b"d"][b"d"][b"d"] == {b"blob": b"\xff\x00\xfe", b"text": b"ok"}
        assert json_listener.expect_close() == (4000, BINARY_IN_JSON_REASON)
        (gone,) = [c for c in server.all_connections if c.cid == json_listener.init["cid"]]
        assert gone.close_code == 4000
        # The sender was not punished: it still publishes.
        assert server.publish("room", "plain", 1) == 2
        assert sender.recv() == message("room", "plain", 1)


def test_publish_of_bytes_from_the_control_api() -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.add_token("leap_token_json", project_id=PROJECT)
        server.create_channel("room")
        etf = open_client(server, ("etf", "none"))
        plain = open_client(server, ("json", "zlib"), "leap_token_json")
        for client in (etf, plain):
            client.send(sub("room"))
            assert client.recv()["d"]["e"] == "AVAILABLE"
        assert server.publish("room", "bin", b"\x80\x81") == 1
        term = erlpack.unpack(etf.recv_raw())
        assert term[b"d"][b"d"] == {b"e": b"bin", b"d": b"\x80\x81"}
        assert plain.expect_close() == (4000, BINARY_IN_JSON_REASON)
        # Valid UTF-8 in a str still reaches everyone as text.
        assert server.publish("room", "text", "é") == 1
        assert etf.recv() == message("room", "text", "é")


# -- IPv6 ----------------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")


@ipv6
def test_a_leap_client_is_served_over_ipv6(clients: list[LeapClient]) -> None:
    with LeapEdgeServer(host="::1") as server:
        assert server.url == f"ws://[::1]:{server.port}/ws"
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room")
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
        clients.append(client)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=5)
        client.subscribe("room", timeout=5)
        assert server.publish("room", "chat", {"v": 6}) == 1
        assert messages.get(timeout=5).data == {"v": 6}
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 1.0


@ipv6
def test_dual_stack_serves_ipv4_and_ipv6() -> None:
    try:
        server = LeapEdgeServer(host="::").start()
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot bind [::]: {exc}")
    with server:
        server.add_token(TOKEN, project_id=PROJECT)
        for host in ("127.0.0.1", "[::1]"):
            client = RawClient(f"ws://{host}:{server.port}/ws")
            try:
                client.expect_hello(30000)
                assert client.identify()["scope"] == "token"
            finally:
                client.close()
