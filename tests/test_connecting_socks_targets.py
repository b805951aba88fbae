"""With ``socks5``/``socks4`` the client resolves the target, so trying the target's other
addresses is its job (issue 19, kind 13): when the proxy answers that it could not reach
one (refused, host or network unreachable, TTL expired; SOCKS4 0x5B), the next address,
in Happy Eyeballs order (``socks4``: the IPv4 ones), goes through a new proxy connection,
all under the attempt's one deadline and interrupted by ``close()``. Any other refusal
ends the attempt at once. The error lists each target address and the proxy's answer.

The target ``edge.test`` resolves (patched ``socket.getaddrinfo``) to addresses a test
chooses; the proxy (:class:`socksserver.SocksProxy`) answers per target address.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, fast_backoff, in_thread
from conftest import leap_threads
from resolving import info, leap, resolver
from socksserver import SocksProxy

from leap_sync import ConnectionState, LeapClient, LeapClosedError, LeapConnectionError
from leap_sync.testing import LeapEdgeServer


def client_for(leap: LeapEdgeServer, proxy: SocksProxy, proxy_type: str = "socks5", **options: Any) -> LeapClient:
    options.setdefault("backoff", fast_backoff())
    options.setdefault("connect_timeout", 20)
    return LeapClient(
        PROJECT,
        TOKEN,
        url=f"ws://edge.test:{leap.port}/ws",
        http_proxy_host="127.0.0.1",
        http_proxy_port=proxy.port,
        proxy_type=proxy_type,
        trust_env=False,
        **options,
    )


def fails(client: LeapClient) -> LeapConnectionError:
    try:
        with pytest.raises(LeapConnectionError) as failed:
            client.connect()
    finally:
        client.close()
    return failed.value


@pytest.mark.parametrize("reply", [3, 4, 5, 6], ids=["network", "host", "refused", "ttl"])
def test_socks5_tries_the_targets_next_address_when_the_proxy_cannot_reach_one(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]], reply: int
) -> None:
    """Before: only the first address (::1) was ever asked for, and every attempt failed."""
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"::1": reply}) as proxy:
        client = client_for(leap, proxy)
        try:
            client.connect(wait=True, timeout=15)
            assert client.state.connection_state is ConnectionState.CONNECTED
        finally:
            client.close()
        assert proxy.requests == [(5, "::1", leap.port, ""), (5, "127.0.0.1", leap.port, "")]


def test_socks5_an_honest_proxy_that_cannot_connect_to_ipv6_reaches_the_ipv4_address(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    """The proxy really tries ::1 (nothing listens there) and answers "refused"."""
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy() as proxy:
        client = client_for(leap, proxy)
        try:
            client.connect(wait=True, timeout=15)
        finally:
            client.close()
        assert proxy.requests == [(5, "::1", leap.port, ""), (5, "127.0.0.1", leap.port, "")]


def test_socks4_tries_the_targets_ipv4_addresses_in_turn(leap: LeapEdgeServer, resolver: dict[str, list[Any]]) -> None:
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.2", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"127.0.0.2": 5}) as proxy:
        client = client_for(leap, proxy, "socks4")
        try:
            client.connect(wait=True, timeout=15)
            assert client.state.connection_state is ConnectionState.CONNECTED
        finally:
            client.close()
        assert proxy.requests == [(4, "127.0.0.2", leap.port, ""), (4, "127.0.0.1", leap.port, "")]


def test_another_refusal_ends_the_attempt_at_once(leap: LeapEdgeServer, resolver: dict[str, list[Any]]) -> None:
    """A refusal by ruleset is the proxy's policy, not the address's: no second try."""
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"::1": 2}) as proxy:
        error = fails(client_for(leap, proxy))
        assert proxy.requests == [(5, "::1", leap.port, "")]
    assert error.phase == "proxy"
    assert str(error) == (
        f"could not connect: socks5 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port} "
        "(::1: the SOCKS5 proxy refused: connection not allowed by ruleset; 1 more not tried)"
    )


def test_every_target_address_unreachable_is_one_error_listing_each(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"::1": 5, "127.0.0.1": 4}) as proxy:
        error = fails(client_for(leap, proxy))
        assert len(proxy.requests) == 2
    assert error.phase == "proxy"
    assert str(error) == (
        f"could not connect: socks5 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port} "
        "(::1: the SOCKS5 proxy refused: connection refused; 127.0.0.1: the SOCKS5 proxy refused: host unreachable)"
    )


def test_socks4_every_ipv4_address_refused_lists_each(leap: LeapEdgeServer, resolver: dict[str, list[Any]]) -> None:
    resolver["edge.test"] = [info("127.0.0.2", leap.port), info("::1", leap.port), info("127.0.0.3", leap.port)]
    with SocksProxy(answers={"127.0.0.2": 5, "127.0.0.3": 5}) as proxy:
        error = fails(client_for(leap, proxy, "socks4"))
        assert [request[1] for request in proxy.requests] == ["127.0.0.2", "127.0.0.3"]
    assert str(error) == (
        f"could not connect: socks4 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port} "
        "(127.0.0.2: the SOCKS4 proxy refused (code 0x5b); 127.0.0.3: the SOCKS4 proxy refused (code 0x5b))"
    )


def test_target_addresses_beyond_the_cap_are_counted(leap: LeapEdgeServer, resolver: dict[str, list[Any]]) -> None:
    hosts = [f"127.0.1.{n}" for n in range(1, 19)]
    resolver["edge.test"] = [info(host, leap.port) for host in hosts]
    with SocksProxy(answers=dict.fromkeys(hosts, 5)) as proxy:
        error = fails(client_for(leap, proxy))
        assert [request[1] for request in proxy.requests] == hosts[:16]
    refused = "; ".join(f"{host}: the SOCKS5 proxy refused: connection refused" for host in hosts[:16])
    assert str(error) == (
        f"could not connect: socks5 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port} "
        f"({refused}; 2 more not tried (at most 16 addresses are tried))"
    )


def test_the_deadline_covers_every_target_address_and_the_error_lists_them(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"::1": 5, "127.0.0.1": None}) as proxy:  # the second: no answer
        error = fails(client_for(leap, proxy, connect_timeout=1))
        assert len(proxy.requests) == 2
    assert error.phase == "proxy"
    assert str(error) == (
        f"could not connect: proxy did not open a tunnel to edge.test:{leap.port} through the socks5 proxy "
        f"127.0.0.1:{proxy.port} within 1 s (::1: the SOCKS5 proxy refused: connection refused; 127.0.0.1: no answer)"
    )


def test_close_while_the_second_target_address_waits_returns_promptly(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    resolver["edge.test"] = [info("::1", leap.port), info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"::1": 5, "127.0.0.1": None}) as proxy:
        client = client_for(leap, proxy, connect_timeout=60)
        connector, outcome = in_thread(client.connect, name="test-connector")
        try:
            assert proxy.wait_requests(2)  # the second proxy connection is waiting for its answer
            client.close()
            connector.join(10)
            assert not connector.is_alive()
        finally:
            client.close()
            connector.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], LeapClosedError)
    assert client.state.connection_state is ConnectionState.CLOSED
    assert [t for t in leap_threads() if t.name == f"leap-sync-io-{client._number}"] == []


def test_a_names_only_address_refused_names_the_address(leap: LeapEdgeServer, resolver: dict[str, list[Any]]) -> None:
    resolver["edge.test"] = [info("127.0.0.1", leap.port)]
    with SocksProxy(answers={"127.0.0.1": 5}) as proxy:
        error = fails(client_for(leap, proxy))
    assert error.phase == "proxy"
    assert str(error) == (
        f"could not connect: socks5 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port} "
        "(127.0.0.1): the SOCKS5 proxy refused: connection refused"
    )


def test_socks4_with_a_target_without_ipv4_asks_the_proxy_nothing(
    leap: LeapEdgeServer, resolver: dict[str, list[Any]]
) -> None:
    resolver["edge.test"] = [info("::1", leap.port)]
    with SocksProxy() as proxy:
        error = fails(client_for(leap, proxy, "socks4"))
        assert proxy.requests == []
    assert error.phase == "proxy"
    assert str(error) == (
        f"could not connect: socks4 proxy 127.0.0.1:{proxy.port} could not connect to edge.test:{leap.port}: "
        "the target has no IPv4 address (use socks4a)"
    )
