"""A connection attempt is bounded as a whole and close() interrupts it, in every phase
(kind 4); options mean what they say and errors name the phase and the cause (kind 7)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from conftest import leap_threads
from hostile import HostileServer, Peer, leap_session
from proxyserver import ConnectProxy

from leap_sync import (
    Backoff,
    ChannelClosed,
    ConnectionState,
    LeapClient,
    LeapClosedError,
    LeapConnectionError,
    LeapError,
)
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
CLOSED = ConnectionState.CLOSED

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def slow_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """``slow.test`` resolves to 127.0.0.1 only when the event is set (or after 8 s),
    like a resolver that takes 8 s; ``broken.test`` fails like an unknown name."""
    release = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.test":
            release.wait(8)
            return _real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        if host == "broken.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release
    release.set()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: a TCP connect to it never completes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def client_for(url: str, **options: Any) -> LeapClient:
    options.setdefault("backoff", fast_backoff())
    return LeapClient(PROJECT, TOKEN, url=url, **options)


def io_thread_of(client: LeapClient) -> list[threading.Thread]:
    return [t for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"]


# -- each phase is bounded by connect_timeout, and the error names it ---------------------------


def _silent_after(stage: str) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        if stage == "upgrade":
            peer.read_request()
        elif stage == "hello":
            peer.upgrade()
        elif stage == "init":
            peer.upgrade()
            peer.hello()
            peer.expect_identify()
        peer.wait()

    return script


@pytest.mark.parametrize(
    ("stage", "phase", "message"),
    [
        ("tcp", "tcp", r"could not connect: TCP connect to 127\.0\.0\.1:\d+ did not complete within 0\.5 s"),
        ("tls", "tls", r"could not connect: TLS handshake with 127\.0\.0\.1:\d+ did not complete within 0\.5 s"),
        ("upgrade", "upgrade", r"could not connect: no websocket upgrade within 0\.5 s from 127\.0\.0\.1:\d+"),
    ],
)
def test_connect_raises_at_the_deadline_naming_the_phase(stage: str, phase: str, message: str, blackhole: int) -> None:
    if stage == "tcp":
        url = f"ws://127.0.0.1:{blackhole}/ws"
        server = None
    else:
        server = HostileServer(_silent_after("upgrade") if stage == "upgrade" else lambda peer: peer.wait())
        url = server.url.replace("ws://", "wss://") if stage == "tls" else server.url
    client = client_for(url, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(LeapConnectionError, match=message) as failed:
            client.connect()
        assert 0.4 < time.monotonic() - started < 2.0
        assert failed.value.phase == phase
        assert client.state.connection_state is ConnectionState.ERRORED
        assert client.state.will_reconnect is False
    finally:
        client.close()
        if server is not None:
            server.close()


@pytest.mark.parametrize(("stage", "what"), [("hello", "Hello"), ("init", "INIT")])
def test_hello_and_init_share_the_attempts_deadline(stage: str, what: str) -> None:
    with HostileServer(_silent_after(stage)) as server:
        recorder = StateRecorder()
        client = client_for(server.url, connect_timeout=0.5)
        client.add_state_update_listener(recorder)
        started = time.monotonic()
        client.connect()
        infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ConnectionState.ERRORED)
        assert time.monotonic() - started < 2.0
        assert str(infos[-1].error) == f"no {what} within 0.5 s"
        assert infos[-1].error.phase == stage  # type: ignore[union-attr]
        assert infos[-1].will_reconnect is True
        client.close()


def _drop_before_hello(peer: Peer) -> None:
    peer.upgrade()
    peer.reset()


def _close_before_init(peer: Peer) -> None:
    peer.upgrade()
    peer.hello()
    peer.expect_identify()
    peer.close(4000, "busy")
    peer.drain(2)


@pytest.mark.parametrize(("script", "phase"), [(_drop_before_hello, "hello"), (_close_before_init, "init")])
def test_an_attempt_ended_by_the_server_in_its_handshake_names_the_phase(
    script: Callable[[Peer], None], phase: str
) -> None:
    with HostileServer(script) as server:
        recorder = StateRecorder()
        client = client_for(server.url)
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_count(ConnectionState.ERRORED, 1)
        error = next(info.error for info in infos if info.connection_state is ConnectionState.ERRORED)
        assert isinstance(error, LeapConnectionError) and error.phase == phase
        client.close()


def test_a_slow_dns_lookup_is_bounded_and_named(slow_dns: threading.Event) -> None:
    client = client_for("ws://slow.test:9/ws", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LeapConnectionError, match=r"DNS lookup of 'slow\.test' did not finish within 0\.5 s") as failed:
        client.connect()
    assert time.monotonic() - started < 1.5  # not the 8 s the lookup takes
    assert failed.value.phase == "dns"
    assert client.state.will_reconnect is False
    slow_dns.set()  # the lookup returns; the abandoned attempt ends without connecting
    for thread in io_thread_of(client):
        thread.join(5)
        assert not thread.is_alive()
    client.close()
    assert client.state.connection_state is CLOSED


def test_a_failed_dns_lookup_names_the_resolvers_error(slow_dns: threading.Event) -> None:
    client = client_for("ws://broken.test/ws")
    with pytest.raises(LeapConnectionError, match=r"DNS lookup of 'broken\.test' failed: Name or service not known"):
        client.connect()
    client.close()


def test_a_refused_upgrade_names_status_and_location() -> None:
    def redirecting(peer: Peer) -> None:
        peer.refuse(302, "Found", ["Location: https://elsewhere.example/ws"])

    with HostileServer(redirecting) as server:
        client = client_for(server.url)
        with pytest.raises(
            LeapConnectionError,
            match=r"websocket upgrade refused: HTTP 302 Found \(Location: https://elsewhere\.example/ws\) from 127",
        ) as failed:
            client.connect()
        assert (failed.value.phase, failed.value.status_code) == ("upgrade", 302)
        client.close()


@pytest.mark.parametrize(
    "retry_after", ["\u00b2", "\u00b9\u2070", "\u0663"], ids=["superscript", "superscripts", "arabic"]
)
def test_a_retry_after_in_digits_int_refuses_is_ignored(retry_after: str) -> None:
    """``str.isdigit`` takes these; ``int()`` does not: the refusal keeps its status."""

    def refusing(peer: Peer) -> None:
        peer.refuse(503, "Service Unavailable", [f"Retry-After: {retry_after}"])

    with HostileServer(refusing) as server:
        client = client_for(server.url)
        with pytest.raises(
            LeapConnectionError, match=r"websocket upgrade refused: HTTP 503 Service Unavailable"
        ) as failed:
            client.connect()
        assert (failed.value.phase, failed.value.status_code, failed.value.retry_after) == ("upgrade", 503, None)
        client.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n", "wrong"),
        (b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n", "Upgrade: websocket"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 101 OK\r\n" + b"X-Pad: " + b"p" * 70_000 + b"\r\n\r\n", "larger than"),
        (b"HTTP/1.1 101 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "more than 100 headers"),
        (b"HTTP/1.1 101 OK\r\nbad header line\r\n\r\n", "malformed HTTP header"),
        (b"HTTP/1.1 101", "closed"),
        ("HTTP/1.1 \u00b9\u2070\u00b9 OK\r\n\r\n".encode(), "not an HTTP/1.x response"),
    ],
    ids=[
        "wrong-accept",
        "no-upgrade",
        "not-http",
        "huge-head",
        "many-headers",
        "bad-header",
        "truncated",
        "odd-digits",
    ],
)
def test_a_bad_upgrade_answer_is_a_clear_error(answer: bytes, message: str) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(answer)

    with HostileServer(script) as server:
        client = client_for(server.url)
        with pytest.raises(LeapConnectionError, match=message) as failed:
            client.connect()
        assert failed.value.phase == "upgrade"
        client.close()


# -- close() interrupts every phase ------------------------------------------------------------


def _close_during(client: LeapClient, begun: Callable[[], bool]) -> float:
    """connect() on a thread; once ``begun()``, close(); return how long close() took."""
    outcome: list[BaseException] = []
    connector = threading.Thread(target=lambda: _capture(outcome, client.connect))
    channel = client.message_event_channel()
    connector.start()
    deadline = time.monotonic() + 5
    while not begun():
        assert time.monotonic() < deadline, "the phase never began"
        time.sleep(0.01)
    time.sleep(0.2)  # well inside the phase
    started = time.monotonic()
    client.close()
    took = time.monotonic() - started
    connector.join(5)
    assert not connector.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], LeapError)
    assert client.state.connection_state is CLOSED
    with pytest.raises(ChannelClosed):
        channel.get(timeout=1)
    return took


def _capture(outcome: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException as exc:
        outcome.append(exc)


def test_close_interrupts_a_tcp_connect_that_never_completes(blackhole: int) -> None:
    client = client_for(f"ws://127.0.0.1:{blackhole}/ws", connect_timeout=30)
    took = _close_during(client, lambda: bool(io_thread_of(client)))
    assert took < 1.0
    assert io_thread_of(client) == []  # ended before close() returned


@pytest.mark.parametrize("stage", ["tls", "upgrade", "hello", "init"])
def test_close_interrupts_every_later_phase(stage: str) -> None:
    script = (lambda peer: peer.wait()) if stage == "tls" else _silent_after(stage)
    with HostileServer(script) as server:
        url = server.url.replace("ws://", "wss://") if stage == "tls" else server.url
        client = client_for(url, connect_timeout=30)
        if stage in ("hello", "init"):  # connect() returns after the upgrade: close() while waiting
            client.connect()
            time.sleep(0.2)
            started = time.monotonic()
            client.close()
            took = time.monotonic() - started
            assert client.state.connection_state is CLOSED
        else:
            took = _close_during(client, lambda: server.accepted >= 1)
        assert took < 2.0
        assert io_thread_of(client) == []


def test_close_during_a_slow_dns_lookup_returns_at_once(slow_dns: threading.Event) -> None:
    client = client_for("ws://slow.test:9/ws", connect_timeout=30, close_timeout=0.5)
    outcome: list[BaseException] = []
    connector = threading.Thread(target=lambda: _capture(outcome, client.connect))
    connector.start()
    time.sleep(0.3)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 1.5  # the lookup cannot be interrupted: close() does not wait for it
    assert client.state.connection_state is CLOSED
    connector.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], LeapClosedError)
    slow_dns.set()  # the lookup returns; the thread sees it was abandoned and ends
    for thread in io_thread_of(client):
        thread.join(5)
        assert not thread.is_alive()


# -- proxies: options mean what they say ---------------------------------------------------------


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        yield server


def test_trust_env_false_ignores_the_environments_proxy_even_with_no_proxy_set(
    leap: LeapEdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as env_proxy:
        monkeypatch.setenv("http_proxy", env_proxy.url)
        client = client_for(leap.url, trust_env=False, http_no_proxy=["example.com"])
        client.connect(wait=True, timeout=10)
        client.close()
        assert env_proxy.requests == []  # never asked for a CONNECT


def test_an_explicit_proxy_is_used_even_with_no_proxy_star_in_the_environment(
    leap: LeapEdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with ConnectProxy() as proxy:
        client = client_for(leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port)
        client.connect(wait=True, timeout=10)
        client.close()
        assert [r.split(b"\r\n")[0] for r in proxy.requests] == [f"CONNECT 127.0.0.1:{leap.port} HTTP/1.1".encode()]


def test_the_environments_proxy_and_no_proxy_apply_with_trust_env(
    leap: LeapEdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        client = client_for(leap.url)
        client.connect(wait=True, timeout=10)
        client.close()
        assert len(proxy.requests) == 1
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.0/8")
        client = client_for(leap.url)
        client.connect(wait=True, timeout=10)
        client.close()
        assert len(proxy.requests) == 1  # bypassed


def test_explicit_proxy_with_basic_auth_and_its_own_no_proxy(leap: LeapEdgeServer) -> None:
    with ConnectProxy() as proxy:
        client = client_for(
            leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, http_proxy_auth=("user", "pw")
        )
        client.connect(wait=True, timeout=10)
        client.close()
        assert b"Proxy-Authorization: Basic dXNlcjpwdw==" in proxy.requests[0]
        client = client_for(
            leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, http_no_proxy=["127.0.0.1"]
        )
        client.connect(wait=True, timeout=10)
        client.close()
        assert len(proxy.requests) == 1


def test_a_proxy_refusing_connect_names_itself_and_the_status(leap: LeapEdgeServer) -> None:
    with ConnectProxy("refuse", 407) as proxy:
        client = client_for(leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port)
        with pytest.raises(
            LeapConnectionError, match=rf"http proxy 127\.0\.0\.1:{proxy.port} refused CONNECT to .*HTTP 407"
        ) as failed:
            client.connect()
        assert (failed.value.phase, failed.value.status_code) == ("proxy", 407)
        client.close()


def test_a_silent_proxy_is_bounded_and_interruptible(leap: LeapEdgeServer) -> None:
    with ConnectProxy("silent") as proxy:
        client = client_for(leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, connect_timeout=0.5)
        with pytest.raises(LeapConnectionError, match="proxy did not open a tunnel") as failed:
            client.connect()
        assert failed.value.phase == "proxy"
        client.close()
        client = client_for(leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, connect_timeout=30)
        assert _close_during(client, lambda: len(proxy.requests) >= 2) < 1.0


def test_bad_options_are_refused_at_construction() -> None:
    for options in (
        {"sslopt": {"ca_cert": "typo"}},
        {"connect_timeout": 0},
        {"connect_timeout": float("nan")},
        {"send_timeout": -1},
        {"http_proxy_port": 3128},
        {"http_proxy_host": "p", "http_proxy_port": 70000},
        {"http_proxy_host": "p", "proxy_type": "ftp"},
        {"header": ["X-Evil: a\r\nInjected: b"]},
        {"header": {"Bad Name ": "x"}},
        {"url": "ws://host:99999/ws"},
        {"url": "wss:///nohost"},
        {"http_proxy_host": "p", "proxy_type": "socks5", "http_proxy_auth": (b"user", b"pw")},
        {"http_proxy_host": "p", "proxy_type": "socks5", "http_proxy_auth": ("user", None)},
        {"http_proxy_host": "p", "proxy_type": "socks5", "http_proxy_auth": ("u" * 256, "pw")},
        {"http_proxy_host": "p", "proxy_type": "socks4", "http_proxy_auth": ("a\0b", "")},
        {"http_proxy_host": "p", "http_proxy_auth": ("a:b", "pw")},
        {"http_proxy_host": "p", "http_proxy_auth": ("\ud800", "pw")},
        {"sslopt": {"server_hostname": 123}},
        {"sslopt": {"server_hostname": ""}},
        {"sslopt": {"ciphers": 5}},
        {"sslopt": {"ca_certs": 5}},
        {"sslopt": {"certfile": ["a"]}},
        {"sslopt": {"cert_reqs": 1.0}},
        {"sslopt": {"cert_reqs": True}},
        {"sslopt": {"password": 5}},
        {"sslopt": {"server_hostname": "localhost\x00.evil"}},
        {"sslopt": {"server_hostname": "a b"}},
        {"max_message_size": 2**41},
        {"max_message_size": 1.5},
        {"backoff": 5},
        {"clock": 5},
    ):
        with pytest.raises((ValueError, TypeError)):
            LeapClient(PROJECT, TOKEN, **options)  # type: ignore[arg-type]


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_wss_through_a_proxy_verifies_the_target(ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with LeapEdgeServer(ssl_context=context) as server, ConnectProxy() as proxy:
        server.add_token(TOKEN, project_id=PROJECT)
        with ca.cert_pem.tempfile() as ca_path:
            client = client_for(
                server.url, sslopt={"ca_certs": ca_path}, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port
            )
            client.connect(wait=True, timeout=10)
            client.close()
        assert len(proxy.requests) == 1
        client = client_for(server.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port)
        with pytest.raises(LeapConnectionError, match="certificate") as failed:
            client.connect()  # the system trust store does not know this CA
        assert failed.value.phase == "tls"
        client.close()


def test_leap_session_helper_is_well_behaved() -> None:
    with HostileServer(lambda peer: (leap_session(peer), peer.drain(5))) as server:
        client = client_for(server.url)
        client.connect(wait=True, timeout=10)
        assert client.state.connection_state is CONNECTED
        client.close()


def test_close_waits_for_the_thread_after_a_failed_lookup(slow_dns: threading.Event) -> None:
    # The reconnect goes to a target whose lookup fails at once: the thread is then in a
    # backoff wait, not in a lookup, and close() joins it.
    def redirect_to_broken(peer: Peer) -> None:
        leap_session(peer)
        peer.close(4006, "ws://broken.test/ws")
        peer.drain(5)

    with HostileServer(redirect_to_broken) as server:
        for _ in range(5):
            recorder = StateRecorder()
            client = client_for(server.url, backoff=Backoff(base=5, cap=5, uniform=lambda low, high: high))
            client.add_state_update_listener(recorder)
            client.connect()
            recorder.wait_for(lambda infos: sum(i.connection_state is ConnectionState.ERRORED for i in infos) >= 2)
            client.close()
            assert io_thread_of(client) == []


def test_a_bad_tls_record_after_a_good_one_keeps_the_good_one(ca: trustme.CA) -> None:
    import base64
    import hashlib
    import json

    from leap_sync.wire.wsframes import OP_TEXT, unmasked_frame

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        raw, _ = listener.accept()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server_context.wrap_bio(incoming, outgoing, server_side=True)
        raw.settimeout(5)
        buffer = b""

        def pump(extra: bytes = b"") -> None:
            raw.sendall(outgoing.read() + extra)

        def read_until(predicate: Callable[[bytes], bool]) -> None:
            nonlocal buffer
            while not predicate(buffer):
                try:
                    buffer += tls.read(65536)
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))

        def send_json(obj: Any, extra: bytes = b"") -> None:
            tls.write(unmasked_frame(OP_TEXT, json.dumps(obj).encode()))
            pump(extra)

        try:
            while True:
                try:
                    tls.do_handshake()
                    pump()
                    break
                except ssl.SSLWantReadError:
                    pump()
                    incoming.write(raw.recv(65536))
            read_until(lambda b: b"\r\n\r\n" in b)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in buffer.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            buffer = b""
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            tls.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            pump()
            send_json({"op": 1, "d": {"heartbeat_interval": 30000}})
            read_until(lambda b: len(b) > 10)  # Identify
            init = {"cid": "c1", "connection_count": 1, "scope": "token", "channels": []}
            send_json({"op": 0, "d": {"c": None, "e": "INIT", "d": init}})
            bad_record = b"\x17\x03\x03\x00\x20" + b"\x42" * 32  # application data with a bad MAC
            message = {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "chat", "d": "must-arrive"}}}
            send_json(message, extra=bad_record)  # one TCP write: a good record, then a bad one
            done.wait(10)
        except (OSError, ssl.SSLError, StopIteration):
            pass
        finally:
            raw.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        recorder = StateRecorder()
        url = f"wss://127.0.0.1:{listener.getsockname()[1]}/ws"
        client = client_for(url, ssl_context=client_context, backoff=Backoff(base=30, cap=30))
        client.add_state_update_listener(recorder)
        messages = client.message_event_channel()
        client.connect(wait=True, timeout=10)
        assert messages.get(timeout=5).data == "must-arrive"
        recorder.wait_for(lambda infos: infos[-1].connection_state is ConnectionState.ERRORED)
        client.close()
    finally:
        done.set()
        listener.close()
        server.join(5)


# -- SOCKS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy_type", "version", "asked_host"),
    [("socks5", 5, "127.0.0.1"), ("socks5h", 5, "localhost"), ("socks4", 4, "127.0.0.1"), ("socks4a", 4, "localhost")],
)
def test_socks_proxies(leap: LeapEdgeServer, proxy_type: str, version: int, asked_host: str) -> None:
    from socksserver import SocksProxy

    url = leap.url.replace("127.0.0.1", "localhost")
    with SocksProxy() as proxy:
        client = client_for(url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, proxy_type=proxy_type)
        client.connect(wait=True, timeout=10)
        client.close()
        assert proxy.requests == [(version, asked_host, leap.port, "")]


def test_socks5_with_a_password(leap: LeapEdgeServer) -> None:
    from socksserver import SocksProxy

    with SocksProxy(credentials=("user", "pw")) as proxy:
        good = client_for(
            leap.url,
            http_proxy_host="127.0.0.1",
            http_proxy_port=proxy.port,
            proxy_type="socks5",
            http_proxy_auth=("user", "pw"),
        )
        good.connect(wait=True, timeout=10)
        good.close()
        bad = client_for(
            leap.url,
            http_proxy_host="127.0.0.1",
            http_proxy_port=proxy.port,
            proxy_type="socks5",
            http_proxy_auth=("user", "wrong"),
        )
        with pytest.raises(LeapConnectionError, match="refused the user name and password") as failed:
            bad.connect()
        assert failed.value.phase == "proxy"
        bad.close()


@pytest.mark.parametrize("proxy_type", ["socks5", "socks4"])
def test_a_socks_refusal_names_the_proxy_and_the_reason(leap: LeapEdgeServer, proxy_type: str) -> None:
    from socksserver import SocksProxy

    with SocksProxy("refuse") as proxy:
        client = client_for(leap.url, http_proxy_host="127.0.0.1", http_proxy_port=proxy.port, proxy_type=proxy_type)
        with pytest.raises(
            LeapConnectionError, match=rf"{proxy_type} proxy 127\.0\.0\.1:{proxy.port} could not connect"
        ) as failed:
            client.connect()
        assert failed.value.phase == "proxy"
        assert "refused" in str(failed.value)
        client.close()


def test_a_silent_socks_proxy_is_bounded_and_interruptible(leap: LeapEdgeServer) -> None:
    from socksserver import SocksProxy

    with SocksProxy("silent") as proxy:
        options = {"http_proxy_host": "127.0.0.1", "http_proxy_port": proxy.port, "proxy_type": "socks5"}
        client = client_for(leap.url, connect_timeout=0.5, **options)
        with pytest.raises(LeapConnectionError, match="proxy did not open a tunnel") as failed:
            client.connect()
        assert failed.value.phase == "proxy"
        client.close()
        client = client_for(leap.url, connect_timeout=30, **options)
        assert _close_during(client, lambda: len(proxy.requests) >= 2) < 1.0
        assert io_thread_of(client) == []
