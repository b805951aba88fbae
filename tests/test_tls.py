"""TLS, proven with ``trustme`` certificates against the embedded server over wss.

- a CA the client trusts (``sslopt={"ca_certs": path}``, ``ssl_context=``,
  ``sslopt={"context": ctx}``) connects, and so does a certificate for the name given
  in ``server_hostname``;
- an untrusted certificate, and a certificate for another host, fail the attempt with a
  ``LeapConnectionError`` whose ``phase`` is ``"tls"`` and whose message names
  ``host:port`` and OpenSSL's verification failure; a redirect to such a server is
  refused the same way, and the client goes back to where it came from;
- verification is never off by accident: every odd-but-plausible ``sslopt`` still
  verifies, unknown keys are a ``ValueError`` at construction, and only an explicit
  ``cert_reqs=ssl.CERT_NONE`` (or a context the caller configured that way) accepts a
  certificate nobody vouches for;
- a TLS handshake that never completes is bounded by ``connect_timeout`` and
  interrupted at once by ``close()``;
- 8 threads sending while a wss stream flows in: no SSL error, every message in order,
  every send returned, the server got every send in each thread's order.
"""

from __future__ import annotations

import json
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer, leap_session

from leap_sync import (
    ConnectionState,
    LeapClient,
    LeapClosedError,
    LeapConnectionError,
    MessageEvent,
)
from leap_sync.elstat import ElstatClient
from leap_sync.protocol.models import ClientFrame, SendMessage
from leap_sync.testing import LeapEdgeServer
from leap_sync.wire.wsframes import OP_TEXT, unmasked_frame

pytestmark = pytest.mark.timeout(60)

CONNECTING, AUTHENTICATING, CONNECTED, ERRORED = (
    ConnectionState.CONNECTING,
    ConnectionState.AUTHENTICATING,
    ConnectionState.CONNECTED,
    ConnectionState.ERRORED,
)
UNTRUSTED = "unable to get local issuer certificate"
WRONG_IP = "IP address mismatch, certificate is not valid for '127.0.0.1'."


# -- certificates and servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """The CA the well-configured clients trust."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_path(ca: trustme.CA) -> Iterator[str]:
    with ca.cert_pem.tempfile() as path:
        yield path


@pytest.fixture(scope="module")
def other_ca_path() -> Iterator[str]:
    """A CA that signed nothing the servers present."""
    with trustme.CA().cert_pem.tempfile() as path:
        yield path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def wss_server(context: ssl.SSLContext, **options: Any) -> LeapEdgeServer:
    server = LeapEdgeServer(ssl_context=context, heartbeat_interval=5.0, **options).start()
    server.add_token(TOKEN, project_id=PROJECT)
    server.create_channel("room", project_id=PROJECT)
    return server


@pytest.fixture
def good_server(ca: trustme.CA) -> Iterator[LeapEdgeServer]:
    """wss with a certificate for 127.0.0.1 signed by ``ca``."""
    server = wss_server(server_context(ca, "127.0.0.1"))
    yield server
    server.close()


@pytest.fixture
def untrusted_server() -> Iterator[LeapEdgeServer]:
    """wss with a certificate for 127.0.0.1 signed by a CA no client trusts."""
    server = wss_server(server_context(trustme.CA(), "127.0.0.1"))
    yield server
    server.close()


@pytest.fixture
def wrong_host_server(ca: trustme.CA) -> Iterator[LeapEdgeServer]:
    """wss on 127.0.0.1 with a certificate, signed by ``ca``, for leap.example.com only."""
    server = wss_server(server_context(ca, "leap.example.com"))
    yield server
    server.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., LeapClient]]:
    made: list[LeapClient] = []

    def make(url: str, **options: Any) -> LeapClient:
        options.setdefault("backoff", fast_backoff())
        client = LeapClient(PROJECT, TOKEN, url=url, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def assert_tls_failure(client: LeapClient, server: LeapEdgeServer, cause: str) -> LeapConnectionError:
    """``connect()`` fails in the TLS phase with ``cause``, for good, and the server never
    saw a websocket."""
    with pytest.raises(LeapConnectionError) as failed:
        client.connect()
    error = failed.value
    assert type(error) is LeapConnectionError
    assert error.phase == "tls"
    assert str(error) == f"could not connect: TLS handshake with 127.0.0.1:{server.port} failed: {cause}"
    assert error.close_code is None and error.status_code is None
    state = client.state
    assert (state.connection_state, state.will_reconnect, state.error) == (ERRORED, False, error)
    assert server.all_connections == []  # no websocket was ever opened
    return error


def roundtrip(client: LeapClient, server: LeapEdgeServer, count: int = 50) -> None:
    """Subscribe, receive ``count`` published messages in order, and send one back."""
    messages = client.message_event_channel()
    client.subscribe("room", timeout=5)
    assert server.publish_many("room", "n", range(count)) == 1
    assert [messages.get(timeout=5).data for _ in range(count)] == list(range(count))
    client.send_message("room", "back", {"ok": True})
    echo = messages.get(timeout=5)
    assert (echo.channel_id, echo.event_name, echo.data) == ("room", "back", {"ok": True})


# -- a trusted CA ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sslopt_ca_certs", "ssl_context", "sslopt_context"])
def test_wss_with_a_trusted_ca_connects(
    how: str, ca: trustme.CA, ca_path: str, good_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    options: dict[str, Any] = {
        "sslopt_ca_certs": {"sslopt": {"ca_certs": ca_path}},
        "ssl_context": {"ssl_context": trusting(ca)},
        "sslopt_context": {"sslopt": {"context": trusting(ca)}},
    }[how]
    assert good_server.url.startswith("wss://127.0.0.1:")
    client = clients(good_server.url, **options)
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    roundtrip(client, good_server)
    assert recorder.states == [CONNECTING, AUTHENTICATING, CONNECTED]
    (conn,) = good_server.connections
    assert conn.identified and conn.token == TOKEN


def test_server_hostname_names_the_certificate_to_verify(
    ca_path: str, wrong_host_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    """The certificate is for leap.example.com, the socket goes to 127.0.0.1: naming the
    host in ``server_hostname`` is how a client reaches it, with verification on."""
    client = clients(wrong_host_server.url, sslopt={"ca_certs": ca_path, "server_hostname": "leap.example.com"})
    client.connect(wait=True, timeout=10)
    roundtrip(client, wrong_host_server, count=5)


# -- untrusted and wrong-host certificates ---------------------------------------------------------


@pytest.mark.parametrize("trust", ["system_store", "another_ca"])
def test_an_untrusted_certificate_fails_in_the_tls_phase(
    trust: str, other_ca_path: str, untrusted_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    options = {} if trust == "system_store" else {"sslopt": {"ca_certs": other_ca_path}}
    client = clients(untrusted_server.url, **options)
    assert_tls_failure(client, untrusted_server, UNTRUSTED)


def test_a_certificate_for_another_host_fails_in_the_tls_phase(
    ca_path: str, wrong_host_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    client = clients(wrong_host_server.url, sslopt={"ca_certs": ca_path})
    assert_tls_failure(client, wrong_host_server, WRONG_IP)


def test_a_server_hostname_the_certificate_does_not_name_fails(
    ca_path: str, good_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    client = clients(good_server.url, sslopt={"ca_certs": ca_path, "server_hostname": "leap.example.com"})
    assert_tls_failure(client, good_server, "Hostname mismatch, certificate is not valid for 'leap.example.com'.")


def test_a_redirect_to_an_untrusted_server_is_refused_and_the_client_goes_home(
    ca_path: str, good_server: LeapEdgeServer, untrusted_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    """Verification holds on reconnects too: a 4006 to a server whose certificate nobody
    vouches for fails in the TLS phase, and the next attempt returns to the origin."""
    client = clients(good_server.url, sslopt={"ca_certs": ca_path})
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=10)
    assert good_server.disconnect(4006, untrusted_server.url) == 1
    infos = recorder.wait_count(CONNECTED, 2)
    errors = [i.error for i in infos if i.connection_state is ERRORED]
    assert [type(e) for e in errors] == [LeapConnectionError, LeapConnectionError]
    redirected, refused = errors
    assert isinstance(redirected, LeapConnectionError) and isinstance(refused, LeapConnectionError)
    assert redirected.close_code == 4006
    assert refused.phase == "tls"
    assert (
        str(refused) == f"could not connect: TLS handshake with 127.0.0.1:{untrusted_server.port} failed: {UNTRUSTED}"
    )
    assert untrusted_server.all_connections == []
    assert client.url.startswith(good_server.url + "?")
    assert len(good_server.all_connections) == 2 and len(good_server.connections) == 1


# -- verification is never off by accident -------------------------------------------------------


@pytest.mark.parametrize(
    "sslopt",
    [
        None,
        {},
        {"check_hostname": True},
        {"check_hostname": False},  # turns off the name check only: the chain is still verified
        {"cert_reqs": ssl.CERT_REQUIRED},
        {"cert_reqs": ssl.CERT_OPTIONAL},  # a client requires a certificate either way
        {"ca_certs": None},
        {"ca_cert_path": None},
        {"context": None},
        {"do_handshake_on_connect": False},
        {"suppress_ragged_eofs": True},
        {"ciphers": "DEFAULT"},
        {"server_hostname": "127.0.0.1"},
    ],
    ids=repr,
)
def test_plausible_options_still_verify_the_chain(
    sslopt: dict[str, Any] | None, untrusted_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    client = clients(untrusted_server.url, sslopt=sslopt)
    assert_tls_failure(client, untrusted_server, UNTRUSTED)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"check_hostname": True},
        {"check_hostname": "false"},  # a string from a config file is not False
        {"cert_reqs": ssl.CERT_REQUIRED},
        {"cert_reqs": ssl.CERT_OPTIONAL},
        {"check_hostname": None},  # unset: the default, which verifies
    ],
    ids=repr,
)
def test_plausible_options_still_verify_the_host_name(
    extra: dict[str, Any], ca_path: str, wrong_host_server: LeapEdgeServer, clients: Callable[..., LeapClient]
) -> None:
    """A trusted CA, a certificate for another host: either the options are refused at
    construction, or the attempt fails in the TLS phase; never a connection."""
    try:
        client = clients(wrong_host_server.url, sslopt={"ca_certs": ca_path, **extra})
    except ValueError:
        return  # refusing an ambiguous value outright is as good as verifying
    assert_tls_failure(client, wrong_host_server, WRONG_IP)


@pytest.mark.parametrize(
    "sslopt",
    [
        {"verify": False},
        {"verify_mode": ssl.CERT_NONE},
        {"cert_req": ssl.CERT_NONE},
        {"check_hostnme": False},
        {"CERT_REQS": ssl.CERT_NONE},
        {"insecure": True},
        {"ssl_version": ssl.PROTOCOL_TLS_CLIENT},
        {"ca_certs": None, "verify": False},
    ],
    ids=repr,
)
def test_unknown_sslopt_keys_are_a_value_error_at_construction(sslopt: dict[str, Any], ca: trustme.CA) -> None:
    unknown = sorted(set(sslopt) - {"ca_certs"})
    with pytest.raises(ValueError, match=rf"^unsupported sslopt keys: {re.escape(', '.join(unknown))} \(supported: "):
        LeapClient(PROJECT, TOKEN, url="wss://127.0.0.1:9/ws", sslopt=sslopt)
    with pytest.raises(ValueError, match=r"^unsupported sslopt keys: "):  # ssl_context= does not bypass the check
        LeapClient(PROJECT, TOKEN, url="wss://127.0.0.1:9/ws", sslopt=sslopt, ssl_context=trusting(ca))


@pytest.mark.parametrize("value", ["required", -1, 3, None, 2.5])
def test_a_cert_reqs_that_is_not_a_verify_mode_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match=r"cert_reqs"):
        LeapClient(PROJECT, TOKEN, url="wss://127.0.0.1:9/ws", sslopt={"cert_reqs": value})


def test_ssl_context_must_be_an_ssl_context() -> None:
    with pytest.raises(TypeError, match="SSLContext"):
        LeapClient(PROJECT, TOKEN, url="wss://127.0.0.1:9/ws", ssl_context={"cert_reqs": ssl.CERT_NONE})


@pytest.mark.parametrize("server_name", ["untrusted", "wrong_host"])
def test_only_an_explicit_cert_none_turns_verification_off(
    server_name: str,
    untrusted_server: LeapEdgeServer,
    wrong_host_server: LeapEdgeServer,
    clients: Callable[..., LeapClient],
) -> None:
    server = untrusted_server if server_name == "untrusted" else wrong_host_server
    client = clients(server.url, sslopt={"cert_reqs": ssl.CERT_NONE})
    client.connect(wait=True, timeout=10)
    roundtrip(client, server, count=5)
    # The same, through a context the caller configured that way (used as it is).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    other = clients(server.url, ssl_context=context)
    other.connect(wait=True, timeout=10)
    assert len(server.connections) == 2


# -- a handshake that never completes ---------------------------------------------------------------


def stalled_tls(first_bytes: queue.Queue[bytes], answer: bytes = b"") -> Callable[[Peer], None]:
    """A "TLS server" that reads the ClientHello, sends ``answer`` (nothing, or the start
    of a record) and then never says anything more."""

    def script(peer: Peer) -> None:
        peer.sock.settimeout(10)
        first_bytes.put(peer.sock.recv(65536))
        if answer:
            peer.send(answer)
        while not peer.stop.is_set() and peer.sock.recv(65536):
            pass  # until the client goes away

    return script


@pytest.mark.parametrize("answer", [b"", b"\x16\x03\x03\x00"], ids=["silent", "half_a_record_header"])
def test_a_handshake_that_never_completes_is_bounded_by_connect_timeout(answer: bytes) -> None:
    hellos: queue.Queue[bytes] = queue.Queue()
    with HostileServer(stalled_tls(hellos, answer)) as server:
        url = f"wss://127.0.0.1:{server.port}/ws"
        client = LeapClient(PROJECT, TOKEN, url=url, connect_timeout=0.5, backoff=fast_backoff())
        try:
            started = time.monotonic()
            with pytest.raises(LeapConnectionError) as failed:
                client.connect()
            elapsed = time.monotonic() - started
            assert hellos.get(timeout=1)[:1] == b"\x16"  # a ClientHello did arrive: the stall is in TLS
            assert failed.value.phase == "tls"
            assert str(failed.value) == (
                f"could not connect: TLS handshake with 127.0.0.1:{server.port} did not complete within 0.5 s"
            )
            assert 0.5 <= elapsed < 1.5
            assert client.state.connection_state is ERRORED and not client.state.will_reconnect
            assert server.accepted == 1  # one attempt, no retry behind the caller's back
        finally:
            client.close()


def test_close_interrupts_a_stalled_handshake_at_once() -> None:
    hellos: queue.Queue[bytes] = queue.Queue()
    with HostileServer(stalled_tls(hellos)) as server:
        client = LeapClient(PROJECT, TOKEN, url=f"wss://127.0.0.1:{server.port}/ws", connect_timeout=30)
        outcome: queue.Queue[BaseException | None] = queue.Queue()

        def connect() -> None:
            try:
                client.connect()
                outcome.put(None)
            except BaseException as exc:
                outcome.put(exc)

        thread = threading.Thread(target=connect, name="test-connect")
        thread.start()
        try:
            assert hellos.get(timeout=5)[:1] == b"\x16"
            started = time.monotonic()
            client.close()
            error = outcome.get(timeout=5)
            assert time.monotonic() - started < 1.0
        finally:
            client.close()
            thread.join(5)
        assert isinstance(error, LeapClosedError)
        assert client.state.connection_state is ConnectionState.CLOSED


# -- sending from many threads while a wss stream flows -----------------------------------------------


class WarningRecorder:
    """A logger that keeps every warn and error call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def debug(self, message: str, metadata: Any = None) -> None:
        pass

    def info(self, message: str, metadata: Any = None) -> None:
        pass

    def warn(self, message: str, metadata: Any = None) -> None:
        self.calls.append(("warn", message, metadata))

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self.calls.append(("error", message, err))


SENDERS = 8
SENDS_EACH = 250
STREAM = 5000
CHUNK = 250  # stream messages published at a time
SENDS_PER_CHUNK = SENDERS * SENDS_EACH * CHUNK // STREAM  # 100: the server must see these before the next chunk
STREAM_PER_SEND = 19  # a thread's k-th send waits for (k + 1) * 19 stream messages (< 20: the lockstep has slack)


@pytest.mark.timeout(120)
def test_eight_threads_send_while_a_wss_stream_flows(ca: trustme.CA, ca_path: str) -> None:
    """Reads (the I/O thread) and sends (8 threads) share one TLS socket.

    The stream and the sends advance in lockstep, so they genuinely overlap: the
    publisher queues the next chunk of the stream only once the server has received
    100 more sends, and each sender's k-th send waits until the client has received
    ``(k + 1) * 19`` stream messages. Each send echoes back from the server (the client
    is subscribed to the sink channel), so the client reads the echoes too.
    """
    received: list[ClientFrame] = []
    received_lock = threading.Lock()

    def on_frame(cid: str, frame: ClientFrame) -> None:
        if isinstance(frame, SendMessage):
            with received_lock:
                received.append(frame)

    server = wss_server(server_context(ca, "127.0.0.1"), on_frame=on_frame)
    server.create_channel("sink", project_id=PROJECT)
    warnings = WarningRecorder()
    client = LeapClient(PROJECT, TOKEN, warnings, url=server.url, sslopt={"ca_certs": ca_path})
    states = StateRecorder()
    client.add_state_update_listener(states)
    messages = client.message_event_channel()
    stream: list[Any] = []
    echoes: list[Any] = []
    progress = threading.Condition()
    failures: list[BaseException] = []
    sent_at: list[int] = []  # stream messages received when each send returned

    def consume() -> None:
        try:
            while len(stream) < STREAM or len(echoes) < SENDERS * SENDS_EACH:
                event: MessageEvent = messages.get(timeout=30)
                with progress:
                    (stream if event.channel_id == "room" else echoes).append(event.data)
                    progress.notify_all()
        except BaseException as exc:
            failures.append(exc)
            with progress:
                progress.notify_all()

    def send(thread_number: int) -> None:
        try:
            for k in range(SENDS_EACH):
                with progress:
                    if not progress.wait_for(lambda k=k: len(stream) >= (k + 1) * STREAM_PER_SEND or failures, 30):
                        raise AssertionError(f"sender {thread_number} starved at {k}")
                client.send_message("sink", "s", {"t": thread_number, "k": k})
                with progress:
                    sent_at.append(len(stream))
        except BaseException as exc:
            failures.append(exc)

    try:
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        client.subscribe("sink", timeout=5)
        consumer = threading.Thread(target=consume, name="test-consumer")
        senders = [threading.Thread(target=send, args=(n,), name=f"test-sender-{n}") for n in range(SENDERS)]
        consumer.start()
        for thread in senders:
            thread.start()
        for chunk in range(STREAM // CHUNK):
            server.wait_for(lambda s, chunk=chunk: len(received) >= chunk * SENDS_PER_CHUNK or bool(failures), 30)
            assert not failures, failures
            assert server.publish_many("room", "n", range(chunk * CHUNK, (chunk + 1) * CHUNK)) == 1
        for thread in senders:
            thread.join(60)
        consumer.join(60)
        assert not any(t.is_alive() for t in [*senders, consumer])
        assert failures == []
        # every message delivered in order
        assert stream == list(range(STREAM))
        for n in range(SENDERS):
            assert [e["k"] for e in echoes if e["t"] == n] == list(range(SENDS_EACH))
        assert len(echoes) == SENDERS * SENDS_EACH
        # every send returned and reached the server, each thread's in order
        assert len(sent_at) == SENDERS * SENDS_EACH
        assert min(sent_at) < STREAM  # sends completed while the stream was still arriving
        with received_lock:
            frames = list(received)
        assert len(frames) == SENDERS * SENDS_EACH
        for n in range(SENDERS):
            assert [f.data["k"] for f in frames if f.data["t"] == n] == list(range(SENDS_EACH))
        # one connection throughout: no SSL error, no reconnect, nothing worth a warning
        assert states.states == [CONNECTING, AUTHENTICATING, CONNECTED]
        assert warnings.calls == []
        (conn,) = server.all_connections
        assert conn.open and conn.close_code is None
    finally:
        client.close()
        server.close()


# -- a TLS peer that ends its session but keeps TCP open ---------------------------------------


def send_with_close_notify(peer: Peer, frame: bytes) -> None:
    """Send ``frame`` (one TLS record) and a ``close_notify`` right behind it, without
    waiting for the client's; TCP stays open."""
    peer.sock.settimeout(0)
    peer.sock.send(frame)
    try:
        peer.sock.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass


def test_close_notify_behind_a_message_ends_the_connection_at_once(ca: trustme.CA) -> None:
    """A TLS terminator writes a message and its ``close_notify`` in one go, then keeps
    TCP open: the message is delivered, then the client leaves CONNECTED at once (the
    heartbeat interval is 30 s: zombie detection would take 45) and reconnects."""
    context = server_context(ca, "127.0.0.1")

    def ends_its_session(peer: Peer) -> None:
        peer.sock = context.wrap_socket(peer.sock, server_side=True)
        leap_session(peer, channels=["room"])
        payload = json.dumps({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "last", "d": 1}}}).encode()
        send_with_close_notify(peer, unmasked_frame(OP_TEXT, payload))
        peer.wait()

    def serves(peer: Peer) -> None:
        peer.sock = context.wrap_socket(peer.sock, server_side=True)
        leap_session(peer, channels=["room"])
        peer.wait()

    with HostileServer([ends_its_session, serves]) as server:
        client = LeapClient(
            PROJECT, TOKEN, url=f"wss://127.0.0.1:{server.port}/ws", ssl_context=trusting(ca), backoff=fast_backoff()
        )
        states = StateRecorder()
        client.add_state_update_listener(states)
        messages = client.message_event_channel()
        try:
            client.connect(wait=True, timeout=10)
            event = messages.get(timeout=10)
            assert (event.channel_id, event.event_name, event.data) == ("room", "last", 1)
            infos = states.wait_count(CONNECTED, 2, timeout=10)  # well before zombie detection (45 s)
            assert [i.connection_state for i in infos] == [
                CONNECTING,
                AUTHENTICATING,
                CONNECTED,
                ERRORED,
                CONNECTING,
                AUTHENTICATING,
                CONNECTED,
            ]
            errored = infos[3]
            assert errored.will_reconnect
            assert str(errored.error) == "connection lost: closed without a close frame"
            assert messages.empty()  # that one message, once
        finally:
            client.close()
        assert server.accepted == 2 and server.errors == []


def test_elstat_close_notify_behind_data_ends_the_connection_at_once(ca: trustme.CA) -> None:
    """The same for ElstatClient (which has no heartbeats: only its pings, 20 s apart,
    would have noticed): the data is delivered, then the connection is replaced."""
    context = server_context(ca, "127.0.0.1")

    def ends_its_session(peer: Peer) -> None:
        peer.sock = context.wrap_socket(peer.sock, server_side=True)
        peer.upgrade()
        data = json.dumps({"op": 3, "c": "status:api", "d": [1531339962000, True]}).encode()
        send_with_close_notify(peer, unmasked_frame(OP_TEXT, data))
        peer.wait()

    def serves(peer: Peer) -> None:
        peer.sock = context.wrap_socket(peer.sock, server_side=True)
        peer.upgrade()
        peer.wait()

    with HostileServer([ends_its_session, serves]) as server:
        client = ElstatClient(f"https://127.0.0.1:{server.port}", ssl_context=trusting(ca), backoff=fast_backoff())
        states = StateRecorder()
        client.add_state_update_listener(states)
        data = client.data_channel()
        try:
            client.connect(wait=True, timeout=10)
            event = data.get(timeout=10)
            assert (event.channel, event.value) == ("status:api", True)
            infos = states.wait_count(CONNECTED, 2, timeout=10)
            assert [i.connection_state for i in infos] == [CONNECTING, CONNECTED, ERRORED, CONNECTING, CONNECTED]
            assert str(infos[2].error) == "connection lost: closed without a close frame"
        finally:
            client.close()
        assert server.accepted == 2 and server.errors == []
