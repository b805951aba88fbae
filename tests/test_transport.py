"""Transport: our frame reader on a real socket, one owner thread, sends queued from
many threads, TLS; and the opening handshake's options (TLS, proxies, headers)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from clientkit import in_thread
from rawws import RawServer, server_frame

from leap_sync.connection.opening import Attempt, open_socket
from leap_sync.connection.options import ConnectOptions
from leap_sync.connection.transport import Transport
from leap_sync.connection.wakeup import Wakeup
from leap_sync.errors import LeapConnectionError


def open_transport(url: str, **options: Any) -> Transport:
    """Open a transport the way the client's I/O thread does."""
    opts = ConnectOptions(**{"connect_timeout": 5, **options})
    wakeup = Wakeup()
    attempt = Attempt(opts.connect_timeout, threading.Event(), wakeup)
    try:
        sock, early = open_socket(
            opts.endpoint(url),
            attempt,
            headers=opts.headers,
            proxy=opts.proxy,
            no_proxy=opts.no_proxy,
            trust_env=opts.trust_env,
            tls_context=opts.tls_context,
            server_name=opts.server_name,
        )
    except BaseException:
        wakeup.close()
        raise
    transport = Transport(sock, wakeup, early=early, send_timeout=opts.send_timeout)
    transport.wakeup_for_test = wakeup  # type: ignore[attr-defined]
    return transport


def finish(transport: Transport) -> None:
    transport.close()
    transport.wakeup_for_test.close()  # type: ignore[attr-defined]


class Owner:
    """Runs the transport's owner loop on a thread, collecting messages."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.messages: list[tuple[bytes, bool]] = []
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                batch = self.transport.receive(timeout=0.5)
                with self.cond:
                    self.messages += batch
                    self.cond.notify_all()
        except BaseException as exc:
            with self.cond:
                self.error = exc
                self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), f"not met: {self.messages[-3:]} {self.error!r}"

    def stop(self) -> None:
        self.transport.abort(LeapConnectionError("test over"))
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def raw() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


def test_text_and_binary_messages(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    conn.send(server_frame(1, b'{"op":1}') + server_frame(2, b"\x83j"))
    got: list[tuple[bytes, bool]] = []
    while len(got) < 2:
        got += transport.receive(timeout=5)
    assert got == [(b'{"op":1}', False), (b"\x83j", True)]
    finish(transport)
    conn.close()


def test_ping_is_answered_with_pong(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    conn.send(server_frame(9, b"are you there") + server_frame(1, b"after"))
    assert transport.receive(timeout=5) == [(b"after", False)]
    assert conn.read_frame() == (0xA, b"are you there")
    finish(transport)
    conn.close()


def test_fragments_with_a_ping_between_split_at_every_byte(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    stream = (
        server_frame(1, b'{"a":', fin=False)
        + server_frame(9, b"p")
        + server_frame(0, b'"long', fin=False)
        + server_frame(0, b'"}', fin=True)
        + server_frame(1, b"x" * 300)
        + server_frame(2, b"y" * 70000)
    )
    for i in range(len(stream)):
        conn.send(stream[i : i + 1]) if i < 400 else None
    conn.send(stream[400:])
    got: list[tuple[bytes, bool]] = []
    while len(got) < 3:
        got += transport.receive(timeout=5)
    assert got == [(b'{"a":"long"}', False), (b"x" * 300, False), (b"y" * 70000, True)]
    assert conn.read_frame() == (0xA, b"p")
    finish(transport)
    conn.close()


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [((4006).to_bytes(2, "big") + b"wss://elsewhere/ws", 4006, "wss://elsewhere/ws"), (b"", None, "")],
)
def test_close_frame_ends_after_earlier_messages_and_is_echoed(
    raw: RawServer, payload: bytes, code: int | None, reason: str
) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    conn.send(server_frame(1, b"last words") + server_frame(8, payload) + server_frame(1, b"ignored"))
    assert transport.receive(timeout=5) == [(b"last words", False)]
    with pytest.raises(LeapConnectionError) as ended:
        transport.receive(timeout=5)
    assert (ended.value.close_code, ended.value.close_reason) == (code, reason)
    echo_code = 1000 if code is None else code
    assert conn.read_frame() == (8, echo_code.to_bytes(2, "big"))
    finish(transport)
    conn.close()


def test_eof_without_close_frame(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    conn.close()
    with pytest.raises(LeapConnectionError) as ended:
        transport.receive(timeout=5)
    assert ended.value.close_code is None
    assert "without a close frame" in str(ended.value)
    finish(transport)


def test_abort_wakes_a_blocked_reader(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    reader, outcome = in_thread(transport.receive)
    transport.abort(LeapConnectionError("stop reading"))
    reader.join(5)
    assert not reader.is_alive()
    assert [str(e) for e in outcome] == ["stop reading"]
    finish(transport)
    conn.close()


def test_concurrent_senders_never_interleave_frames(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    owner = Owner(transport)  # the one thread that writes
    per_thread = 200

    def send(n: int) -> None:
        for i in range(per_thread):
            transport.send(json.dumps({"t": n, "i": i, "pad": "z" * (i * 7 % 300)}), False)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    seen: dict[int, list[int]] = {n: [] for n in range(4)}
    for _ in range(4 * per_thread):
        opcode, payload = conn.read_frame()
        assert opcode == 1
        message = json.loads(payload)
        seen[message["t"]].append(message["i"])
    for thread in threads:
        thread.join(5)
    assert seen == {n: list(range(per_thread)) for n in range(4)}
    owner.stop()
    finish(transport)
    conn.close()


def test_send_gives_up_when_the_peer_never_reads(raw: RawServer) -> None:
    transport = open_transport(raw.url, send_timeout=0.3)
    conn = raw.accept()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    owner = Owner(transport)
    queued = [transport.send(b"x" * 65536, True) for _ in range(100)]
    assert queued[-1].wait(5)
    assert isinstance(queued[-1].error, LeapConnectionError)
    owner.wait_for(lambda: owner.error is not None)
    assert "stayed full" in str(owner.error)
    assert transport.ended
    with pytest.raises(LeapConnectionError):
        transport.send(b"late", True)
    owner.thread.join(5)
    finish(transport)
    conn.close()


def test_refused_upgrade_and_unreachable_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LeapConnectionError, match=rf"TCP connect to 127\.0\.0\.1:{port} .*refused") as failed:
        open_transport(f"ws://127.0.0.1:{port}/ws")
    assert failed.value.phase == "tcp"


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_raw(ca: trustme.CA) -> Iterator[RawServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with RawServer(tls=context) as server:
        yield server


def test_tls_verification_is_on_by_default(tls_raw: RawServer) -> None:
    with pytest.raises(
        LeapConnectionError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate"
    ) as failed:
        open_transport(tls_raw.url)
    assert failed.value.phase == "tls"


def test_tls_burst_larger_than_one_read_is_fully_delivered(tls_raw: RawServer, ca: trustme.CA) -> None:
    with ca.cert_pem.tempfile() as ca_path:
        transport = open_transport(tls_raw.url, sslopt={"ca_certs": ca_path})
    conn = tls_raw.accept()
    # One write of ~1.2 MB: more than the transport reads at once, so decrypted bytes
    # stay buffered inside OpenSSL (pending()) where poll() cannot see them.
    frames = [server_frame(1, b'{"n":%d,"pad":"%s"}' % (i, b"p" * 180)) for i in range(6000)]
    conn.send(b"".join(frames))
    got: list[tuple[bytes, bool]] = []
    while len(got) < 6000:
        batch = transport.receive(timeout=5)
        assert batch, "receive timed out with data still buffered"
        got += batch
    assert [json.loads(p)["n"] for p, _ in got] == list(range(6000))
    # and sending works on the same TLS socket while reading
    transport.send('{"op":3}', False)
    assert transport.receive(timeout=1) == []  # the owner writes it
    assert conn.read_frame() == (1, b'{"op":3}')
    finish(transport)
    conn.close()


def test_tls_with_an_ssl_context(tls_raw: RawServer, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    transport = open_transport(tls_raw.url, sslopt={"context": context})
    conn = tls_raw.accept()
    conn.send(server_frame(1, b"secure"))
    assert transport.receive(timeout=5) == [(b"secure", False)]
    finish(transport)
    conn.close()


def test_proxy_environment_is_ignored_without_trust_env(raw: RawServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(LeapConnectionError, match=r"TCP connect to http proxy 127\.0\.0\.1:9 failed"):
        open_transport(raw.url)
    transport = open_transport(raw.url, trust_env=False)
    conn = raw.accept()
    conn.send(server_frame(1, b"direct"))
    assert transport.receive(timeout=5) == [(b"direct", False)]
    finish(transport)
    conn.close()


def test_header_option_is_sent(raw: RawServer) -> None:
    transport = open_transport(raw.url, header={"X-Leap-Test": "yes"})
    conn = raw.accept()
    assert b"x-leap-test: yes" in raw.requests[-1].lower()
    finish(transport)
    conn.close()


def test_reader_delivers_while_a_write_waits_for_room(raw: RawServer) -> None:
    transport = open_transport(raw.url)
    conn = raw.accept()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = transport.send(b"z" * 8_000_000, True)  # more than the socket buffers take
    assert transport.receive(timeout=0.3) == []
    assert not big.wait(0)  # still being written
    conn.send(server_frame(9, b"ping") + server_frame(1, b"hi"))
    # the reader neither waits for the writer nor loses what it read
    assert transport.receive(timeout=2) == [(b"hi", False)]
    finish(transport)
    conn.close()
