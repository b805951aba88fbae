"""One deadline is never spent on one alternative while others wait (issue 16, kind 1):
the TCP phase tries a name's addresses by Happy Eyeballs (RFC 8305), for the server and
for a proxy's own addresses, in LeapClient and ElstatClient alike.

The resolver is the code's ``socket.getaddrinfo`` call, patched so that a ``*.test`` name
resolves to the addresses a test chooses (each with its own port). A *dead* address is a
loopback listener whose accept queue is full: Linux drops the SYN
(``net.ipv4.tcp_abort_on_overflow=0``, the default), so a connect to it never completes,
as on a blackholed route. A *refused* address is a bound port nothing listens on: RST.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, fast_backoff, in_thread
from conftest import leap_threads
from proxyserver import ConnectProxy
from resolving import TCP, V4, V6, info, leap, resolver
from socksserver import SocksProxy

from leap_sync import ConnectionState, LeapClient, LeapClosedError, LeapConnectionError
from leap_sync.connection import eyeballs, opening
from leap_sync.connection.attempt import Abandoned, Attempt
from leap_sync.connection.eyeballs import connect_first, order
from leap_sync.connection.wakeup import Wakeup
from leap_sync.elstat import ElstatClient
from leap_sync.testing import ElstatServer, LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED


# -- RFC 8305 section 4: the order (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # IPv6 first (as getaddrinfo sorted them): v6, v4, v6, v4, then the rest of v6
        (
            ["::1", "fd00::1", "fd00::2", "127.0.0.1", "10.0.0.1"],
            ["::1", "127.0.0.1", "fd00::1", "10.0.0.1", "fd00::2"],
        ),
        # IPv4 first stays first: the first family is the resolver's, not a preference
        (["127.0.0.1", "::1"], ["127.0.0.1", "::1"]),
        (["::1", "127.0.0.1"], ["::1", "127.0.0.1"]),
        (["10.0.0.1", "10.0.0.2", "::1"], ["10.0.0.1", "::1", "10.0.0.2"]),
        # one family only: the resolver's order; repeats dropped
        (["10.0.0.2", "10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.1"]),
        ([], []),
    ],
)
def test_addresses_interleave_families_starting_with_the_resolvers_first(given: list[str], expected: list[str]) -> None:
    assert [entry[4][0] for entry in order([info(host, 443) for host in given])] == expected


def test_the_same_address_on_two_ports_is_two_addresses() -> None:
    assert order([info("::1", 1), info("::1", 2), info("::1", 1)]) == [info("::1", 1), info("::1", 2)]


# -- addresses on loopback ------------------------------------------------------------------------


@pytest.fixture
def dead() -> Iterator[Callable[[str], int]]:
    """``dead(host)``: a port on ``host`` (127.0.0.1 or ::1) whose SYNs go unanswered."""
    opened: list[socket.socket] = []

    def make(host: str) -> int:
        listener = socket.socket(V6 if ":" in host else V4)
        opened.append(listener)
        listener.bind((host, 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(3):  # fill the accept queue (and the SYN that would overflow it)
            filler = socket.socket(listener.family)
            opened.append(filler)
            filler.setblocking(False)
            filler.connect_ex((host, port))
        probe = socket.socket(listener.family)  # a connect now never completes
        opened.append(probe)
        probe.settimeout(0.3)
        with pytest.raises(TimeoutError):
            probe.connect((host, port))
        return port

    yield make
    for sock in opened:
        sock.close()


@pytest.fixture
def refused() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound (so nobody else takes it) but not listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def client_for(url: str, **options: Any) -> LeapClient:
    options.setdefault("backoff", fast_backoff())
    return LeapClient(PROJECT, TOKEN, url=url, **options)


def io_threads(client: LeapClient) -> list[threading.Thread]:
    return [t for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"]


class Recorder:
    """A ``new_socket`` for :func:`connect_first` that keeps every socket it made;
    ``made`` is set once ``count`` sockets exist."""

    def __init__(self, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self.count = count
        self.made = threading.Event()

    def __call__(self, family: int, kind: int, proto: int) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        self.sockets.append(sock)
        if len(self.sockets) >= self.count:
            self.made.set()
        return sock

    def open(self) -> list[socket.socket]:
        return [sock for sock in self.sockets if sock.fileno() != -1]


def new_attempt(timeout: float) -> tuple[Attempt, threading.Event, Wakeup]:
    stop, wakeup = threading.Event(), Wakeup()
    return Attempt(timeout, stop, wakeup), stop, wakeup


# -- the race itself (connect_first on real loopback sockets) -----------------------------------


def test_a_dead_address_then_a_live_one_connects_to_the_live_one(dead: Callable[[str], int]) -> None:
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen(1)
        port = live.getsockname()[1]
        dead_port = dead("127.0.0.1")
        attempt, _, wakeup = new_attempt(30)
        made = Recorder(2)
        try:
            sock = connect_first(
                [info("127.0.0.1", dead_port), info("127.0.0.1", port)], "dual.test", port, attempt, new_socket=made
            )
        finally:
            wakeup.close()
        with sock:
            assert sock.getpeername() == ("127.0.0.1", port)
            assert made.open() == [sock]  # the dead address's socket, still in flight, is closed
            assert len(made.sockets) == 2
            assert attempt.phase == "tcp"


def test_a_refused_address_starts_the_next_one_at_once(refused: int) -> None:
    """With a connection attempt delay longer than the whole deadline, only an immediate
    fallback on the refusal can connect."""
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen(1)
        port = live.getsockname()[1]
        attempt, _, wakeup = new_attempt(10)
        made = Recorder(2)
        try:
            sock = connect_first(
                [info("127.0.0.1", refused), info("127.0.0.1", port)],
                "dual.test",
                port,
                attempt,
                delay=60,
                new_socket=made,
            )
        finally:
            wakeup.close()
        with sock:
            assert sock.getpeername() == ("127.0.0.1", port)
            assert made.open() == [sock]


def test_stop_during_the_race_abandons_it_and_closes_every_socket(dead: Callable[[str], int]) -> None:
    ports = [dead("127.0.0.1"), dead("::1")]
    attempt, stop, wakeup = new_attempt(30)
    made = Recorder(2)
    addresses = [info("127.0.0.1", ports[0]), info("::1", ports[1])]
    racer, outcome = in_thread(
        lambda: connect_first(addresses, "dead.test", 80, attempt, new_socket=made), name="test-racer"
    )
    try:
        assert made.made.wait(10)  # both addresses in flight
        stop.set()
        wakeup.notify()
        racer.join(10)
        assert not racer.is_alive()
    finally:
        stop.set()
        racer.join(10)
        wakeup.close()
    assert len(outcome) == 1 and isinstance(outcome[0], Abandoned)
    assert len(made.sockets) == 2 and made.open() == []


def test_a_socket_the_os_refuses_to_make_is_an_outcome_not_a_crash(leap: LeapEdgeServer) -> None:
    def no_ipv6(family: int, kind: int, proto: int) -> socket.socket:
        if family == V6:
            raise OSError(97, "Address family not supported by protocol")
        return socket.socket(family, kind, proto)

    attempt, _, wakeup = new_attempt(5)
    try:
        sock = connect_first(
            [info("::1", leap.port), info("127.0.0.1", leap.port)], "dual.test", leap.port, attempt, new_socket=no_ipv6
        )
    finally:
        wakeup.close()
    with sock:
        assert sock.getpeername() == ("127.0.0.1", leap.port)


# -- the clients --------------------------------------------------------------------------------


def test_leap_client_connects_past_a_dead_address(
    leap: LeapEdgeServer, dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Before Happy Eyeballs: every attempt timed out on the dead address (never connected)."""
    resolver["dual.test"] = [info("::1", dead("::1")), info("127.0.0.1", leap.port)]
    client = client_for(f"ws://dual.test:{leap.port}/ws", connect_timeout=20)
    try:
        started = time.monotonic()
        client.connect(wait=True, timeout=15)
        assert client.state.connection_state is CONNECTED
        assert time.monotonic() - started < 10  # not the dead address's 20 s
    finally:
        client.close()


def test_elstat_client_connects_past_a_dead_address(
    dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    with ElstatServer() as server:
        resolver["dual.test"] = [info("127.0.0.1", dead("127.0.0.1")), info("127.0.0.1", server.port)]
        client = ElstatClient(server.url.replace("127.0.0.1", "dual.test"), connect_timeout=20, backoff=fast_backoff())
        try:
            client.connect(wait=True, timeout=15)
            assert client.state.connection_state is CONNECTED
        finally:
            client.close()


def test_leap_client_falls_back_at_once_past_a_refused_address(
    leap: LeapEdgeServer, refused: int, resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    resolver["dual.test"] = [info("127.0.0.1", refused), info("127.0.0.1", leap.port)]
    client = client_for(f"ws://dual.test:{leap.port}/ws", connect_timeout=20)
    try:
        client.connect(wait=True, timeout=15)
        assert client.state.connection_state is CONNECTED
    finally:
        client.close()


def test_every_address_dead_is_one_error_naming_each_address_and_its_outcome(
    dead: Callable[[str], int], refused: int, resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    first, second = dead("127.0.0.1"), dead("::1")
    # interleaved: 127.0.0.1:first (IPv4 came first), [::1]:second, 127.0.0.1:refused
    resolver["dead.test"] = [info("127.0.0.1", first), info("127.0.0.1", refused), info("::1", second)]
    client = client_for("ws://dead.test:80/ws", connect_timeout=1.5)
    try:
        with pytest.raises(LeapConnectionError) as failed:
            client.connect()
        assert failed.value.phase == "tcp"
        assert str(failed.value) == (
            "could not connect: TCP connect to dead.test:80 did not complete within 1.5 s "
            f"(127.0.0.1:{first}: no answer; [::1]:{second}: no answer; 127.0.0.1:{refused}: Connection refused)"
        )
    finally:
        client.close()


def test_every_address_refused_is_one_error_naming_each(resolver: dict[str, list[tuple[Any, ...]]]) -> None:
    holders = [socket.socket(V4), socket.socket(V6)]
    try:
        holders[0].bind(("127.0.0.1", 0))
        holders[1].bind(("::1", 0))
        v4, v6 = (holder.getsockname()[1] for holder in holders)
        resolver["dead.test"] = [info("::1", v6), info("127.0.0.1", v4)]
        client = client_for("ws://dead.test:80/ws", connect_timeout=20)
        try:
            with pytest.raises(LeapConnectionError) as failed:
                client.connect()
            assert failed.value.phase == "tcp"
            assert str(failed.value) == (
                "could not connect: TCP connect to dead.test:80 failed at every address "
                f"([::1]:{v6}: Connection refused; 127.0.0.1:{v4}: Connection refused)"
            )
        finally:
            client.close()
    finally:
        for holder in holders:
            holder.close()


def test_addresses_the_deadline_left_untried_are_counted(
    dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    port = dead("127.0.0.1")
    resolver["dead.test"] = [info("127.0.0.1", port)] + [info(f"127.0.0.{n}", port) for n in range(2, 6)]
    attempt, _, wakeup = new_attempt(0.3)
    try:
        with pytest.raises(LeapConnectionError) as failed:
            connect_first(resolver["dead.test"], "dead.test", 80, attempt, delay=60)
    finally:
        wakeup.close()
    assert failed.value.phase == "tcp"
    assert str(failed.value) == (
        "could not connect: TCP connect to dead.test:80 did not complete within 0.3 s "
        f"(127.0.0.1:{port}: no answer; 4 more not tried)"
    )


def test_close_during_the_race_returns_promptly_leaving_no_socket_or_thread(
    dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver["dead.test"] = [info("::1", dead("::1")), info("127.0.0.1", dead("127.0.0.1"))]
    made = Recorder(2)
    monkeypatch.setattr(opening, "connect_first", functools.partial(eyeballs.connect_first, new_socket=made))
    client = client_for("ws://dead.test:80/ws", connect_timeout=30)
    connector, outcome = in_thread(client.connect, name="test-connector")
    try:
        assert made.made.wait(10)  # both addresses in flight
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 5  # not the 30 s deadline
        connector.join(10)
        assert not connector.is_alive()
    finally:
        client.close()
        connector.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], LeapClosedError)
    assert client.state.connection_state is ConnectionState.CLOSED
    assert io_threads(client) == []
    assert len(made.sockets) == 2 and made.open() == []


# -- a proxy's own addresses --------------------------------------------------------------------


def test_an_http_proxys_own_addresses_are_raced(
    leap: LeapEdgeServer, dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    with ConnectProxy() as proxy:
        resolver["proxy.test"] = [info("::1", dead("::1")), info("127.0.0.1", proxy.port)]
        client = client_for(
            leap.url, http_proxy_host="proxy.test", http_proxy_port=proxy.port, connect_timeout=20, trust_env=False
        )
        try:
            client.connect(wait=True, timeout=15)
            assert client.state.connection_state is CONNECTED
        finally:
            client.close()
        assert [request.split(b"\r\n")[0] for request in proxy.requests] == [
            f"CONNECT 127.0.0.1:{leap.port} HTTP/1.1".encode()
        ]


def test_a_dead_proxy_is_one_tcp_error_naming_the_proxys_addresses(
    leap: LeapEdgeServer, dead: Callable[[str], int], refused: int, resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    port = dead("127.0.0.1")
    resolver["proxy.test"] = [info("127.0.0.1", port), info("127.0.0.1", refused)]
    client = client_for(leap.url, http_proxy_host="proxy.test", http_proxy_port=port, connect_timeout=1)
    try:
        with pytest.raises(LeapConnectionError) as failed:
            client.connect()
    finally:
        client.close()
    assert failed.value.phase == "tcp"
    assert str(failed.value) == (
        f"could not connect: TCP connect to http proxy proxy.test:{port} did not complete within 1 s "
        f"(127.0.0.1: no answer; 127.0.0.1:{refused}: Connection refused)"
    )


def test_socks5h_races_the_proxys_addresses_and_sends_the_target_name_unresolved(
    leap: LeapEdgeServer, dead: Callable[[str], int], resolver: dict[str, list[tuple[Any, ...]]]
) -> None:
    resolver["leap.test"] = [info("127.0.0.1", leap.port)]  # for the proxy's own lookup
    with SocksProxy() as proxy:
        resolver["proxy.test"] = [info("::1", dead("::1")), info("127.0.0.1", proxy.port)]
        client = client_for(
            f"ws://leap.test:{leap.port}/ws",
            http_proxy_host="proxy.test",
            http_proxy_port=proxy.port,
            proxy_type="socks5h",
            connect_timeout=20,
        )
        try:
            client.connect(wait=True, timeout=15)
            assert client.state.connection_state is CONNECTED
        finally:
            client.close()
        assert proxy.requests == [(5, "leap.test", leap.port, "")]
    # the client looked up the proxy only; the proxy looked up the target
    assert resolver["<asked>"] == [("proxy.test",), ("leap.test",)]
