"""The fault proxy on its own: each fault's exact effect on a raw socket pair.

A pair is a client socket connected to the proxy and the server socket the target
accepted for it. Absence ("nothing arrives") is checked with ``select`` for a bounded
quiet period, after positive evidence that the proxy already handled the bytes (its
counters) where the proxy reads them at all.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from faultproxy import FaultProxy, LinkInfo

QUIET = 0.5  # seconds a socket must stay silent to show that nothing arrives


class Pair:
    def __init__(self, client: socket.socket, server: socket.socket, link: int) -> None:
        self.client = client
        self.server = server
        self.link = link

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture
def target() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    yield listener
    listener.close()


@pytest.fixture
def proxy(target: socket.socket) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", target.getsockname()[1]) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def open_pair(proxy: FaultProxy, target: socket.socket) -> Iterator[Callable[[], Pair]]:
    pairs: list[Pair] = []

    def open_() -> Pair:
        before = {link.id for link in proxy.links}
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        server, _ = target.accept()
        server.settimeout(10)
        links = proxy.wait_for(lambda links: any(lk.connected and lk.id not in before for lk in links))
        [link] = [lk.id for lk in links if lk.id not in before]
        pair = Pair(client, server, link)
        pairs.append(pair)
        return pair

    yield open_
    for pair in pairs:
        pair.close()


def recv_exactly(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    got = 0
    while got < size:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(min(65536, size - got))
        if not chunk:
            raise AssertionError(f"EOF after {got} of {size} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def assert_quiet(*socks: socket.socket, seconds: float = QUIET) -> None:
    """Nothing (no byte, no EOF, no reset) arrives on ``socks`` for ``seconds``."""
    readable, _, errored = select.select(list(socks), [], list(socks), seconds)
    assert (readable, errored) == ([], [])


def link_info(proxy: FaultProxy, link: int) -> LinkInfo:
    [info] = [lk for lk in proxy.links if lk.id == link]
    return info


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_relays_both_ways_in_order_and_forwards_fin(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    up = os.urandom(1 << 20)
    down = os.urandom(1 << 20)
    senders = [
        threading.Thread(target=pair.client.sendall, args=(up,), name="test-send-up"),
        threading.Thread(target=pair.server.sendall, args=(down,), name="test-send-down"),
    ]
    for sender in senders:
        sender.start()
    got_down: list[bytes] = []
    reader = threading.Thread(target=lambda: got_down.append(recv_exactly(pair.client, len(down))), name="test-recv")
    reader.start()
    assert recv_exactly(pair.server, len(up)) == up
    reader.join(10)
    for sender in senders:
        sender.join(10)
    assert got_down == [down]
    # FIN from the client reaches the server; the other direction still works.
    pair.client.shutdown(socket.SHUT_WR)
    assert pair.server.recv(10) == b""
    pair.server.sendall(b"bye")
    assert recv_exactly(pair.client, 3) == b"bye"
    pair.server.shutdown(socket.SHUT_WR)
    assert pair.client.recv(10) == b""
    # Both directions ended: the proxy closed the link.
    proxy.wait_for(lambda links: not links)
    assert proxy.accepted == 1
    assert proxy.resets == 0


def test_latency_delays_one_direction(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    assert proxy.set_latency(2.0, "down", link=pair.link) == 1
    start = time.monotonic()
    pair.server.sendall(b"a")
    pair.client.sendall(b"b")
    assert recv_exactly(pair.server, 1) == b"b"  # the up direction is not delayed
    if time.monotonic() - start < 1.5:  # a loaded machine may take longer to get here
        info = link_info(proxy, pair.link)
        assert info.held["down"] == 1 and info.forwarded["down"] == 0
    for byte in (b"c", b"d", b"e"):
        pair.server.sendall(byte)
    assert recv_exactly(pair.client, 4) == b"acde"  # in order
    assert time.monotonic() - start >= 2.0
    # Latency back to zero: bytes read from now on are not delayed.
    proxy.set_latency(0.0, "down", link=pair.link)
    pair.server.sendall(b"f")
    assert recv_exactly(pair.client, 1) == b"f"


def test_bandwidth_limits_one_direction(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    rate = 100_000
    proxy.set_bandwidth(rate, "down", link=pair.link)
    payload = os.urandom(2 * rate)
    start = time.monotonic()
    sender = threading.Thread(target=pair.server.sendall, args=(payload,), name="test-send")
    sender.start()
    assert recv_exactly(pair.client, len(payload)) == payload
    elapsed = time.monotonic() - start
    sender.join(10)
    # The first 20 ms quantum goes at once, the rest at the rate.
    assert elapsed >= (len(payload) - rate * 0.02) / rate
    # The up direction is not limited: 4 MiB in well under the 40 s 100 kB/s would take.
    big = os.urandom(4 << 20)
    start = time.monotonic()
    sender = threading.Thread(target=pair.client.sendall, args=(big,), name="test-send")
    sender.start()
    assert recv_exactly(pair.server, len(big), timeout=20) == big
    sender.join(10)
    assert time.monotonic() - start < 20
    # Unlimited again.
    proxy.set_bandwidth(None, link=pair.link)
    sender = threading.Thread(target=pair.server.sendall, args=(big,), name="test-send")
    sender.start()
    assert recv_exactly(pair.client, len(big), timeout=20) == big
    sender.join(10)


def test_blackhole_discards_one_direction_and_heal_resets(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    # Bytes in flight (delayed) when the blackhole starts are lost too.
    proxy.set_latency(5.0, "up", link=pair.link)
    pair.client.sendall(b"in flight")
    proxy.wait_for(lambda links: links[0].held["up"] == 9)
    assert proxy.blackhole("up", link=pair.link) == 1
    pair.client.sendall(b"lost")
    info = proxy.wait_for(lambda links: links[0].discarded["up"] == 13)[0]
    assert (info.held["up"], info.forwarded["up"]) == (0, 0)
    assert_quiet(pair.server)
    # The other direction works.
    pair.server.sendall(b"ok")
    assert recv_exactly(pair.client, 2) == b"ok"
    # A stream with bytes missing cannot resume: heal resets it, both ways.
    assert proxy.heal(link=pair.link) == 1
    with pytest.raises(ConnectionResetError):
        pair.client.recv(10)
    with pytest.raises(ConnectionResetError):
        pair.server.recv(10)
    assert proxy.links == []
    assert proxy.resets == 1


def test_blackhole_that_lost_nothing_heals_in_place(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    proxy.blackhole("down", link=pair.link)
    pair.client.sendall(b"up works")
    assert recv_exactly(pair.server, 8) == b"up works"
    assert proxy.heal(link=pair.link) == 0
    pair.server.sendall(b"down works")
    assert recv_exactly(pair.client, 10) == b"down works"
    assert proxy.resets == 0


def test_reset_sends_rst_to_both_sides(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    other = open_pair()
    assert proxy.reset(link=pair.link) == 1
    with pytest.raises(ConnectionResetError):
        pair.client.recv(10)
    with pytest.raises(ConnectionResetError):
        pair.server.recv(10)
    # The other link is untouched.
    other.client.sendall(b"still here")
    assert recv_exactly(other.server, 10) == b"still here"
    assert [link.id for link in proxy.links] == [other.link]
    assert proxy.reset() == 1
    with pytest.raises(ConnectionResetError):
        other.client.recv(10)


def test_half_open_holds_everything_and_heal_delivers_it(proxy: FaultProxy, open_pair: Callable[[], Pair]) -> None:
    pair = open_pair()
    assert proxy.half_open(link=pair.link) == 1
    pair.client.sendall(b"b")
    # The server keeps writing into a network that answers nothing: its buffer fills.
    pair.server.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    for _ in range(1024):  # at most 64 MiB
        try:
            sent += pair.server.send(chunk)
        except BlockingIOError:
            break
    else:
        raise AssertionError("the server's writes never blocked")
    pair.server.settimeout(10)
    # No byte, no EOF, no reset either way; the proxy read nothing.
    assert_quiet(pair.client, pair.server)
    info = link_info(proxy, pair.link)
    assert (info.forwarded, info.held, info.half_open) == ({"up": 0, "down": 0}, {"up": 0, "down": 0}, True)
    # Healed, what was held flows: nothing was lost.
    proxy.heal(link=pair.link)
    assert recv_exactly(pair.server, 1) == b"b"
    assert recv_exactly(pair.client, sent, timeout=20) == b"x" * sent
    assert proxy.resets == 0


def test_network_wide_conditions_reach_new_links_until_heal(
    proxy: FaultProxy, open_pair: Callable[[], Pair], target: socket.socket
) -> None:
    old = open_pair()
    assert proxy.half_open() == 1
    new = open_pair()  # accepted and connected to the target, but silent
    new.client.sendall(b"new")
    old.client.sendall(b"old")
    assert_quiet(new.server, old.server)
    assert all(link.half_open for link in proxy.links)
    assert proxy.heal() == 0
    assert recv_exactly(new.server, 3) == b"new"
    assert recv_exactly(old.server, 3) == b"old"
    # A condition on one link leaves the others and new links alone.
    proxy.blackhole("up", link=old.link)
    fresh = open_pair()
    for pair in (new, fresh):
        pair.client.sendall(b"ping")
        assert recv_exactly(pair.server, 4) == b"ping"
    assert [link.blackhole for link in proxy.links] == [frozenset({"up"}), frozenset(), frozenset()]


def test_peer_reset_reaches_the_other_side_after_what_it_was_owed(
    proxy: FaultProxy, open_pair: Callable[[], Pair]
) -> None:
    pair = open_pair()
    proxy.set_latency(1.0, "down", link=pair.link)
    pair.server.sendall(b"last words")
    proxy.wait_for(lambda links: links[0].held["down"] == 10)
    rst(pair.server)
    assert recv_exactly(pair.client, 10) == b"last words"
    with pytest.raises(ConnectionResetError):
        pair.client.recv(10)
    proxy.wait_for(lambda links: not links)


def test_refused_target_resets_the_client() -> None:
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there now
    with FaultProxy("127.0.0.1", port) as proxy:
        # The reset may arrive before connect() returns: it then fails with it.
        with pytest.raises(ConnectionResetError):
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            try:
                client.recv(10)
            finally:
                client.close()
        proxy.wait_for(lambda links: proxy.accepted == 1)
        assert proxy.links == []


def test_close_resets_links_and_joins_its_thread(target: socket.socket) -> None:
    proxy = FaultProxy("127.0.0.1", target.getsockname()[1])
    [thread] = [t for t in threading.enumerate() if t.name == f"faultproxy-{proxy.number}"]
    assert thread.daemon
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    server, _ = target.accept()
    server.settimeout(10)
    proxy.wait_for_links(1)
    proxy.close()
    assert not thread.is_alive()
    with pytest.raises(ConnectionResetError):
        client.recv(10)
    with pytest.raises(ConnectionResetError):
        server.recv(10)
    proxy.close()  # idempotent
    with pytest.raises(RuntimeError):
        proxy.reset()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    client.close()
    server.close()


def test_arguments_and_addresses(proxy: FaultProxy) -> None:
    assert proxy.url_for("ws://127.0.0.1:1234/ws?encoding=etf") == f"ws://127.0.0.1:{proxy.port}/ws?encoding=etf"
    with pytest.raises(ValueError):
        proxy.set_latency(-1)
    with pytest.raises(ValueError):
        proxy.set_bandwidth(0)
    with pytest.raises(ValueError):
        proxy.blackhole("sideways")
    with pytest.raises(KeyError):
        proxy.reset(link=12345)
    assert not any(t.name.startswith("leap-sync-") for t in threading.enumerate())
