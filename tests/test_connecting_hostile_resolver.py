"""A resolver's answer is untrusted, and a URL's port is what it says (issue 19, kinds 1,
10 and 11).

- A long answer: the 16-address cap is applied after duplicates are dropped and the
  families interleaved, so 20 IPv6 entries never hide the IPv4 one; the error counts the
  addresses not tried.
- A malformed entry (UDP, a cut tuple, a list, a family as text, a host name where an
  address belongs, port 0...) is skipped, never tried: the good ones still connect, and an
  answer without any usable entry is a ``phase="dns"`` error that says so.
- Port 0 (``ws://host:0/``) is refused at construction, in proxy URLs, and as a 4006
  redirect target; it never means the default port.

The resolver is the code's ``socket.getaddrinfo`` call, patched so that a ``*.test`` name
answers what a test chooses. A *refused* address is a bound port nothing listens on.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from resolving import STREAM, TCP, V4, V6, info, leap, resolver
from socksserver import SocksProxy

from leap_sync import ConnectionState, LeapClient, LeapConnectionError
from leap_sync.connection import eyeballs, opening
from leap_sync.connection.attempt import Attempt, Endpoint
from leap_sync.connection.eyeballs import MAX_ADDRESSES, connect_first, order, usable
from leap_sync.connection.proxy import parse_proxy_url
from leap_sync.connection.wakeup import Wakeup
from leap_sync.elstat import ElstatClient
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED


def odd_entries(port: int) -> dict[str, Any]:
    """Entries a resolver should never answer to a TCP lookup, each for ``port``."""
    return {
        "udp": (V4, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("127.0.0.1", port)),
        "raw": (V4, socket.SOCK_RAW, 0, "", ("127.0.0.1", port)),
        "short": (V4, STREAM),
        "long": (V4, STREAM, TCP, "", ("127.0.0.1", port), "extra"),
        "list-entry": [V4, STREAM, TCP, "", ("127.0.0.1", port)],
        "list-sockaddr": (V4, STREAM, TCP, "", ["127.0.0.1", port]),
        "str-family": ("AF_INET", STREAM, TCP, "", ("127.0.0.1", port)),
        "unix-family": (socket.AF_UNIX, STREAM, 0, "", ("127.0.0.1", port)),
        "host-name": (V4, STREAM, TCP, "", ("localhost", port)),
        "v6-in-v4": (V4, STREAM, TCP, "", ("::1", port)),
        "v6-short-sockaddr": (V6, STREAM, TCP, "", ("::1", port)),
        "v4-long-sockaddr": (V4, STREAM, TCP, "", ("127.0.0.1", port, 0, 0)),
        "port-0": (V4, STREAM, TCP, "", ("127.0.0.1", 0)),
        "port-too-big": (V4, STREAM, TCP, "", ("127.0.0.1", 70000)),
        "port-bool": (V4, STREAM, TCP, "", ("127.0.0.1", True)),
        "port-str": (V4, STREAM, TCP, "", ("127.0.0.1", str(port))),
        "flowinfo-too-big": (V6, STREAM, TCP, "", ("::1", port, 2**20, 0)),
        "nul-in-host": (V4, STREAM, TCP, "", ("127.0.0.1\0", port)),
        "none": None,
    }


ODD_KINDS = list(odd_entries(1))


@pytest.fixture
def refused_ports() -> Iterator[list[int]]:
    """20 ports on 127.0.0.1 and 20 on ::1, bound but not listening: ``[v4..., v6...]``."""
    holders = [socket.socket(V4) for _ in range(20)] + [socket.socket(V6) for _ in range(20)]
    try:
        for holder in holders:
            holder.bind(("127.0.0.1" if holder.family == V4 else "::1", 0))
        yield [holder.getsockname()[1] for holder in holders]
    finally:
        for holder in holders:
            holder.close()


class Recorder:
    """A ``new_socket`` for :func:`connect_first` that records what it made."""

    def __init__(self) -> None:
        self.made: list[tuple[int, int, int]] = []

    def __call__(self, family: int, kind: int, proto: int) -> socket.socket:
        self.made.append((family, kind, proto))
        return socket.socket(family, kind, proto)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Every socket the clients' TCP phase makes, in order."""
    recorder = Recorder()
    monkeypatch.setattr(opening, "connect_first", functools.partial(eyeballs.connect_first, new_socket=recorder))
    return recorder


def client_for(url: str, **options: Any) -> LeapClient:
    options.setdefault("backoff", fast_backoff())
    return LeapClient(PROJECT, TOKEN, url=url, **options)


def connects(url: str, **options: Any) -> None:
    client = client_for(url, **options)
    try:
        client.connect(wait=True, timeout=15)
        assert client.state.connection_state is CONNECTED
    finally:
        client.close()


def fails(url: str, **options: Any) -> LeapConnectionError:
    client = client_for(url, **options)
    try:
        with pytest.raises(LeapConnectionError) as failed:
            client.connect()
    finally:
        client.close()
    return failed.value


# -- kind 1: the cap comes after duplicates and the interleave ----------------------------------


def test_the_cap_is_taken_from_the_interleaved_list() -> None:
    answer = [info("::1", port) for port in range(1000, 1020)] + [info("127.0.0.1", 80)]
    ordered = order(answer)
    assert len(ordered) == 21
    assert ordered[:3] == [info("::1", 1000), info("127.0.0.1", 80), info("::1", 1001)]


def test_a_live_ipv4_address_after_twenty_ipv6_ones_is_tried_second(
    leap: LeapEdgeServer, refused_ports: list[int], resolver: dict[str, list[Any]], made: Recorder
) -> None:
    """Before: the answer was cut to its first 16 entries (all IPv6), so the IPv4
    address was never tried and every attempt failed."""
    resolver["many.test"] = [info("::1", port) for port in refused_ports[20:]] + [info("127.0.0.1", leap.port)]
    connects(f"ws://many.test:{leap.port}/ws", connect_timeout=20)
    assert [family for family, _, _ in made.made[:2]] == [V6, V4]


def test_twenty_copies_of_one_refused_address_are_one_address(
    leap: LeapEdgeServer, refused_ports: list[int], resolver: dict[str, list[Any]], made: Recorder
) -> None:
    resolver["dup.test"] = [info("::1", refused_ports[20])] * 20 + [info("127.0.0.1", leap.port)]
    connects(f"ws://dup.test:{leap.port}/ws", connect_timeout=20)
    assert made.made == [(V6, STREAM, TCP), (V4, STREAM, TCP)]


def test_addresses_beyond_the_cap_are_counted_in_the_error(
    refused_ports: list[int], resolver: dict[str, list[Any]]
) -> None:
    """10 IPv6 then 10 IPv4 addresses, all refused: the 16 tried alternate families (the
    last 4 IPv6 ones are cut), and the error says 4 were not tried and why."""
    v4, v6 = refused_ports[:10], refused_ports[20:30]
    resolver["many.test"] = [info("::1", port) for port in v6] + [info("127.0.0.1", port) for port in v4]
    error = fails("ws://many.test:80/ws", connect_timeout=20)
    assert error.phase == "tcp"
    tried = []
    for n in range(MAX_ADDRESSES // 2):
        tried += [f"[::1]:{v6[n]}: Connection refused", f"127.0.0.1:{v4[n]}: Connection refused"]
    assert str(error) == (
        "could not connect: TCP connect to many.test:80 failed at every address ("
        + "; ".join(tried)
        + "; 4 more not tried (at most 16 addresses are tried))"
    )


# -- kind 10: malformed entries are skipped ----------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        info("127.0.0.1", 443),
        info("::1", 443),
        (V6, STREAM, TCP, "", ("fe80::1%1", 443, 0, 1)),
        (V4, STREAM, 0, "canonical.example", ("10.0.0.1", 1)),
        (V6, STREAM, TCP, "", ("::ffff:127.0.0.1", 65535, 2**20 - 1, 2**32 - 1)),
    ],
)
def test_well_formed_tcp_entries_are_usable(entry: tuple[Any, ...]) -> None:
    assert usable(entry) is True


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_malformed_entries_are_not_usable_and_left_out_of_the_order(kind: str) -> None:
    entry = odd_entries(443)[kind]
    assert usable(entry) is False
    assert order([entry, info("127.0.0.1", 443), entry]) == [info("127.0.0.1", 443)]


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_one_malformed_entry_before_a_live_address_is_skipped(
    leap: LeapEdgeServer, refused_ports: list[int], resolver: dict[str, list[Any]], made: Recorder, kind: str
) -> None:
    """Before: a UDP entry "connected" and then failed the attempt; the others raised
    IndexError/TypeError out of the race: the live address was never tried."""
    other = refused_ports[0]  # where an odd entry points, so trying it would show
    resolver["odd.test"] = [odd_entries(other)[kind], info("127.0.0.1", leap.port)]
    connects(f"ws://odd.test:{leap.port}/ws", connect_timeout=20)
    assert made.made == [(V4, STREAM, TCP)]  # the live address only


def test_an_answer_without_a_usable_entry_is_a_dns_error(resolver: dict[str, list[Any]]) -> None:
    entries = odd_entries(80)
    resolver["odd.test"] = [entries["udp"], entries["short"], entries["host-name"]]
    error = fails("ws://odd.test:80/ws", connect_timeout=20)
    assert error.phase == "dns"
    assert str(error) == (
        "could not connect: DNS lookup of 'odd.test' found no usable address "
        "(3 entries are not TCP addresses over IPv4 or IPv6)"
    )


def test_skipped_entries_are_counted_when_the_usable_ones_fail(
    refused_ports: list[int], resolver: dict[str, list[Any]]
) -> None:
    port = refused_ports[0]
    resolver["odd.test"] = [odd_entries(port)["udp"], info("127.0.0.1", port)]
    error = fails("ws://odd.test:80/ws", connect_timeout=20)
    assert error.phase == "tcp"
    assert str(error) == (
        f"could not connect: TCP connect to odd.test:80 failed at every address "
        f"(127.0.0.1:{port}: Connection refused; 1 unusable resolver entry skipped)"
    )


def test_the_race_given_no_usable_entry_is_a_tcp_error() -> None:
    attempt = Attempt(5, threading.Event(), Wakeup())
    try:
        with pytest.raises(LeapConnectionError) as failed:
            connect_first([odd_entries(80)["udp"]], "odd.test", 80, attempt)
    finally:
        attempt.wakeup.close()
    assert failed.value.phase == "tcp"
    assert str(failed.value) == (
        "could not connect: no usable address for odd.test:80 "
        "(the resolver's 1 entry is not a TCP address over IPv4 or IPv6)"
    )


def test_a_malformed_entry_in_a_socks5_targets_answer_is_never_sent_to_the_proxy(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    resolver["edge.test"] = [odd_entries(leap.port)["v6-in-v4"], info("127.0.0.1", leap.port)]
    with SocksProxy() as proxy:
        connects(
            f"ws://edge.test:{leap.port}/ws",
            http_proxy_host="127.0.0.1",
            http_proxy_port=proxy.port,
            proxy_type="socks5",
            trust_env=False,
        )
        assert proxy.requests == [(5, "127.0.0.1", leap.port, "")]


# -- kind 11: port 0 is no port -----------------------------------------------------------------


@pytest.mark.parametrize("url", ["ws://127.0.0.1:0/ws", "wss://edge.example:0/ws", "ws://[::1]:0/ws"])
def test_a_leap_url_with_port_0_is_refused_at_construction(url: str) -> None:
    """Before: port 0 became 80 (443 for wss://) and the client connected there."""
    with pytest.raises(ValueError, match="URL port 0 is not a port a connection can go to"):
        LeapClient(PROJECT, TOKEN, url=url)


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:0/api/streaming", "https://status.example:0", "http://127.0.0.1:0/base"]
)
def test_an_elstat_url_with_port_0_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="URL port 0 is not a port a connection can go to"):
        ElstatClient(url)


def test_an_empty_port_is_still_the_default_port() -> None:
    assert Endpoint.parse("ws://edge.example:/ws").port == 80
    assert Endpoint.parse("wss://edge.example/ws").port == 443


@pytest.mark.parametrize("url", ["socks5://127.0.0.1:0", "http://proxy.example:0", "127.0.0.1:0"])
def test_a_proxy_url_with_port_0_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="proxy URL port 0 is not a port a connection can go to"):
        parse_proxy_url(url)


def test_a_proxy_port_0_in_the_environment_fails_the_attempt_naming_it(
    leap: LeapEdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the proxy's default port (8080) was used instead."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:0")
    error = fails(leap.url, connect_timeout=20)
    assert error.phase == "proxy"
    assert str(error) == (
        "could not connect: bad proxy setting in the environment: proxy URL port 0 is not a port a connection can go to"
    )


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_an_explicit_proxy_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ValueError, match=r"http_proxy_port must be a port number \(1-65535\)"):
        LeapClient(PROJECT, TOKEN, http_proxy_host="127.0.0.1", http_proxy_port=port)


def test_a_4006_redirect_to_port_0_is_ignored(leap: LeapEdgeServer) -> None:
    """Before: the client followed it to port 80, failed there, and only then went back
    to the configured endpoint (two errors in between, not one)."""
    recorder = StateRecorder()
    client = client_for(leap.url, connect_timeout=20)
    try:
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        url = client.url
        leap.disconnect(4006, "ws://127.0.0.1:0/ws")
        infos = recorder.wait_count(CONNECTED, 2)
        assert client.url == url
    finally:
        client.close()
    errors = [i.error for i in infos if i.connection_state is ConnectionState.ERRORED]
    assert len(errors) == 1
    assert isinstance(errors[0], LeapConnectionError) and errors[0].close_code == 4006
