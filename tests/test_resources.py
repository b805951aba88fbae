"""Resource bounds: memory stays flat over a long stream, connect/close cycles leave no
file descriptor or thread behind (also when ``close()`` interrupts every phase of the
opening handshake), and a bounded event channel keeps its bound under a fast stream with
each overflow policy.
"""

from __future__ import annotations

import collections
import gc
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer

from leap_sync import (
    ChannelOverflowError,
    ConnectionState,
    LeapClient,
    LeapClosedError,
    MessageEvent,
)
from leap_sync.testing import LeapEdgeServer
from leap_sync.wire.wsframes import OP_CLOSE

pytestmark = pytest.mark.timeout(60)

CONNECTED = ConnectionState.CONNECTED
HAS_PROC_FDS = os.path.isdir("/proc/self/fd") and os.path.isdir("/proc/self/task")


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (for resources that signal
    nothing when released: file descriptors, native threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(poll)
    return True


# -- memory -----------------------------------------------------------------------------------------

STREAM = 200_000
CHUNK = 10_000
FIRST = 20_000
# Measured at quiet points (everything published so far consumed, and the client's last
# read a lone tick message, so the I/O thread holds no big batch in its locals), the
# traced size moves by about 1 KiB over the whole stream. A leak of one 8-byte reference
# per message would add 1.4 MB between the two points: 64 KiB catches any leak of half a
# byte per message and more, with 60x headroom over the noise.
MEMORY_TOLERANCE = 64 * 1024

# The server runs in a child process, so tracemalloc measures the client alone (and the
# stream is not slowed by tracing the server too). It reads "FIRST END" lines and
# publishes range(FIRST, END) to "room" (a single "tick" for "-1 -1"), then says "ok".
SERVER_PROCESS = r"""
import sys
from leap_sync.testing import LeapEdgeServer

with LeapEdgeServer(heartbeat_interval=30.0) as server:
    server.add_token(sys.argv[1], project_id=sys.argv[2])
    server.create_channel("room", project_id=sys.argv[2])
    print(server.url, flush=True)
    for line in sys.stdin:
        first, end = map(int, line.split())
        if first < 0:
            server.publish("room", "tick", None)
        else:
            server.publish_many("room", "n", range(first, end), chunk=1000)
        print("ok", flush=True)
"""


class ServerProcess:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_PROCESS, TOKEN, PROJECT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self._line()

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line, f"the server process ended (exit code {self.process.poll()})"
        return line

    def publish(self, first: int, end: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{first} {end}\n")
        self.process.stdin.flush()
        assert self._line() == "ok"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.mark.timeout(120)
def test_memory_stays_flat_over_a_200000_message_stream() -> None:
    server = ServerProcess()
    client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
    messages = client.message_event_channel()
    progress = threading.Condition()
    consumed = [0, 0]  # messages, ticks
    out_of_order: list[tuple[int, Any]] = []
    stop = threading.Event()

    def consume() -> None:
        expected = 0
        while not stop.is_set():
            try:
                event: MessageEvent = messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if event.event_name == "tick":
                with progress:
                    consumed[1] += 1
                    progress.notify_all()
                continue
            if event.data != expected and len(out_of_order) < 10:
                out_of_order.append((expected, event.data))
            expected += 1
            if expected % CHUNK == 0:
                with progress:
                    consumed[0] = expected
                    progress.notify_all()

    consumer = threading.Thread(target=consume, name="test-consumer")
    sizes: dict[int, int] = {}
    tracemalloc.start()
    try:
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        consumer.start()
        ticks = 0
        for first in range(0, STREAM, CHUNK):
            server.publish(first, first + CHUNK)
            with progress:
                assert progress.wait_for(lambda first=first: consumed[0] >= first + CHUNK, 30)
            if first + CHUNK in (FIRST, STREAM):
                server.publish(-1, -1)  # the client's last read is this lone message
                ticks += 1
                with progress:
                    assert progress.wait_for(lambda ticks=ticks: consumed[1] >= ticks, 30)
                assert messages.qsize() == 0  # the consumer kept up
                gc.collect()
                sizes[first + CHUNK] = tracemalloc.get_traced_memory()[0]
        assert client.state.connection_state is CONNECTED
    finally:
        tracemalloc.stop()
        stop.set()
        if consumer.is_alive():
            consumer.join(10)
        client.close()
        server.close()
    assert consumed[0] == STREAM and out_of_order == []
    growth = sizes[STREAM] - sizes[FIRST]
    assert growth <= MEMORY_TOLERANCE, (
        f"traced memory grew {growth} bytes between message {FIRST} and {STREAM} "
        f"({sizes[FIRST]} -> {sizes[STREAM]}; tolerance {MEMORY_TOLERANCE})"
    )


# -- file descriptors and threads -------------------------------------------------------------------

CYCLES = 500


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Resources:
    """A snapshot of open file descriptors and threads (Python and native)."""

    def __init__(self) -> None:
        self.fds = fd_count()
        self.threads = sorted(t.name for t in threading.enumerate())
        self.native = native_threads()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resources) and (self.fds, self.threads, self.native) == (
            other.fds,
            other.threads,
            other.native,
        )

    def __repr__(self) -> str:
        return f"Resources(fds={self.fds}, native threads={self.native}, threads={self.threads})"


def settled() -> Resources:
    """A snapshot once no server connection thread is ending and every native thread is
    a Python thread we can name (bounded wait), for a baseline."""
    wait_until(
        lambda: (
            native_threads() == threading.active_count()
            and not any(t.name.endswith("-conn") for t in threading.enumerate())
        ),
        10,
    )
    return Resources()


def assert_back_to(baseline: Resources) -> None:
    """Released resources signal nothing: wait (bounded) until the snapshot matches."""
    wait_until(lambda: Resources() == baseline, 10)
    assert Resources() == baseline


@pytest.mark.skipif(not HAS_PROC_FDS, reason="counts /proc/self/fd and /proc/self/task")
def test_no_fd_or_thread_left_after_500_connect_close_cycles() -> None:
    with LeapEdgeServer(heartbeat_interval=30.0) as server:
        server.add_token(TOKEN, project_id=PROJECT)

        def cycle() -> None:
            client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
            client.connect(wait=True, timeout=10)
            assert client.state.connection_state is CONNECTED
            client.close()
            assert client.state.connection_state is ConnectionState.CLOSED

        for _ in range(3):  # warm up: lazily opened descriptors, caches, the first thread names
            cycle()
        server.wait_for(lambda s: not s.connections)
        baseline = settled()
        for _ in range(CYCLES):
            cycle()
        server.wait_for(lambda s: not s.connections)
        assert_back_to(baseline)
        closed = server.all_connections
        assert len(closed) == CYCLES + 3
        assert {c.close_code for c in closed} == {1000}  # every one closed by the client, cleanly


PHASES = ("tls", "upgrade", "hello", "init")


def answer_close(peer: Peer) -> None:
    """Read the client's frames until its close frame, answer it, end."""
    while True:
        opcode, payload = peer.read_frame(10)
        if opcode == OP_CLOSE:
            peer.frame(OP_CLOSE, payload[:2])
            return


def read_until_gone(peer: Peer) -> None:
    peer.sock.settimeout(10)
    while peer.sock.recv(65536):
        pass


@pytest.mark.skipif(not HAS_PROC_FDS, reason="counts /proc/self/fd and /proc/self/task")
def test_no_fd_or_thread_left_when_close_interrupts_each_handshake_500_times() -> None:
    """Each cycle a raw server stalls one phase of the opening (the TLS handshake, the
    upgrade answer, Hello, INIT), signals once the client is in it, and ``close()`` ends
    the attempt; the four phases take turns."""
    reached: queue.Queue[int] = queue.Queue()

    def script(peer: Peer) -> None:
        phase = PHASES[(peer.number - 1) % len(PHASES)]
        if phase == "tls":
            peer.sock.settimeout(10)
            assert peer.sock.recv(65536)[:1] == b"\x16"  # the ClientHello
            reached.put(peer.number)
            read_until_gone(peer)
            return
        if phase == "upgrade":
            peer.read_request()
            reached.put(peer.number)
            read_until_gone(peer)
            return
        peer.upgrade()
        if phase == "init":
            peer.hello(30000)
            peer.expect_identify()
        reached.put(peer.number)
        answer_close(peer)

    context = ssl.create_default_context()
    baseline = settled()
    with HostileServer(script) as server:
        outcomes: list[str] = []

        def cycle(number: int) -> None:
            phase = PHASES[(number - 1) % len(PHASES)]
            scheme = "wss" if phase == "tls" else "ws"
            client = LeapClient(
                PROJECT,
                TOKEN,
                url=f"{scheme}://127.0.0.1:{server.port}/ws",
                connect_timeout=30,
                backoff=fast_backoff(),
                ssl_context=context,  # one context: loading the system trust store each cycle is slow
            )
            failure: queue.Queue[BaseException | None] = queue.Queue()
            connecting: threading.Thread | None = None
            if phase in ("tls", "upgrade"):  # connect() blocks in the phase: from another thread

                def connect() -> None:
                    try:
                        client.connect()
                        failure.put(None)
                    except BaseException as exc:
                        failure.put(exc)

                connecting = threading.Thread(target=connect, name="test-connect")
                connecting.start()
            else:
                client.connect()  # returns once upgraded
            try:
                assert reached.get(timeout=10) == number
                if phase != "hello":  # (in "hello", connect() may return a moment before AUTHENTICATING)
                    expected = ConnectionState.CONNECTING if connecting is not None else ConnectionState.AUTHENTICATING
                    assert client.state.connection_state is expected
                client.close()
            finally:
                client.close()
                if connecting is not None:
                    connecting.join(10)
            if connecting is not None:
                error = failure.get_nowait()
                assert isinstance(error, LeapClosedError), repr(error)
            assert client.state.connection_state is ConnectionState.CLOSED
            outcomes.append(phase)

        for number in range(1, CYCLES + 1):
            cycle(number)
        assert server.accepted == CYCLES
        assert server.errors == []
        assert {p: outcomes.count(p) for p in PHASES} == dict.fromkeys(PHASES, CYCLES // len(PHASES))
    assert_back_to(baseline)


# -- bounded channels ----------------------------------------------------------------------------

BURST = 20_000
MAXSIZE = 100


@pytest.fixture
def streaming() -> Iterator[tuple[LeapEdgeServer, LeapClient]]:
    with LeapEdgeServer(heartbeat_interval=30.0) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
        try:
            yield server, client
        finally:
            client.close()


def run_burst(server: LeapEdgeServer, client: LeapClient, before_publish: Callable[[], None] = lambda: None) -> None:
    """Publish BURST messages and return once the client delivered all of them. The
    channel that proves it is created last: the client feeds channels in the order they
    were made, so the channels under test have had every message by then."""
    everything = client.message_event_channel()
    states = StateRecorder()
    client.add_state_update_listener(states)
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    before_publish()
    assert server.publish_many("room", "n", range(BURST)) == 1
    assert [everything.get(timeout=10).data for _ in range(BURST)] == list(range(BURST))
    assert client.state.connection_state is CONNECTED  # an overflow never costs the connection
    assert [i.connection_state for i in states.infos] == [
        ConnectionState.CONNECTING,
        ConnectionState.AUTHENTICATING,
        CONNECTED,
    ]
    (conn,) = server.all_connections
    assert conn.open


def test_drop_oldest_keeps_the_newest_maxsize_events(streaming: tuple[LeapEdgeServer, LeapClient]) -> None:
    server, client = streaming
    bounded = client.message_event_channel(maxsize=MAXSIZE, overflow="drop_oldest")
    run_burst(server, client)
    assert bounded.qsize() == MAXSIZE
    assert bounded.dropped == BURST - MAXSIZE
    assert [bounded.get_nowait().data for _ in range(MAXSIZE)] == list(range(BURST - MAXSIZE, BURST))
    with pytest.raises(queue.Empty):
        bounded.get_nowait()
    assert not bounded.closed  # it goes on receiving
    server.publish("room", "n", BURST)
    assert bounded.get(timeout=5).data == BURST


def test_error_keeps_the_first_maxsize_events_then_raises(streaming: tuple[LeapEdgeServer, LeapClient]) -> None:
    server, client = streaming
    bounded = client.message_event_channel(maxsize=MAXSIZE, overflow="error")
    run_burst(server, client)
    assert bounded.qsize() == MAXSIZE
    assert bounded.closed and bounded.dropped == 0
    assert [event.data for event in list(_take(bounded, MAXSIZE))] == list(range(MAXSIZE))
    for _ in range(2):  # every later get raises, never a silent end
        with pytest.raises(ChannelOverflowError, match=rf"^event channel overflowed its maxsize of {MAXSIZE}: "):
            bounded.get(timeout=1)
    with pytest.raises(ChannelOverflowError):
        list(bounded)


def _take(channel: Any, count: int) -> Iterator[Any]:
    for _ in range(count):
        yield channel.get_nowait()


def test_drop_oldest_with_a_busy_consumer_accounts_for_every_event(
    streaming: tuple[LeapEdgeServer, LeapClient],
) -> None:
    """A consumer taking events while the stream overflows the channel: what it took,
    what was dropped and what is left add up to the stream, in order, newest kept."""
    server, client = streaming
    bounded = client.message_event_channel(maxsize=MAXSIZE, overflow="drop_oldest")
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or bounded.qsize():
            try:
                taken.append(bounded.get(timeout=0.05).data)
            except queue.Empty:
                pass

    consumer = threading.Thread(target=consume, name="test-consumer")
    try:
        run_burst(server, client, before_publish=consumer.start)
    finally:
        done.set()
        if consumer.is_alive():
            consumer.join(10)
    assert not consumer.is_alive()
    assert bounded.qsize() == 0
    assert len(taken) + bounded.dropped == BURST
    assert taken == sorted(set(taken))  # in order, no duplicate
    assert taken[-1] == BURST - 1  # the newest is never the one dropped
    assert bounded.dropped > 0  # it did overflow (the consumer cannot keep up with one burst)


class PeakDeque(collections.deque[Any]):
    """A deque that remembers the most items it ever held (checked after every way the
    channel adds to it)."""

    peak = 0

    def append(self, item: Any) -> None:
        super().append(item)
        self.peak = max(self.peak, len(self))

    def extend(self, items: Any) -> None:
        super().extend(items)
        self.peak = max(self.peak, len(self))


@pytest.mark.parametrize(
    "overflow",
    [
        "drop_oldest",
        "error",
    ],
)
def test_a_bounded_channel_never_holds_more_than_maxsize(
    overflow: str, streaming: tuple[LeapEdgeServer, LeapClient]
) -> None:
    """The channel's store records its peak (deterministic), and a thread samples
    ``qsize()`` all through the burst, the GIL switching every 10 us so that it runs in
    the middle of the client's deliveries (what a user could see)."""
    server, client = streaming
    bounded = client.message_event_channel(maxsize=MAXSIZE, overflow=overflow)
    store = PeakDeque()
    bounded._items = store
    largest = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            largest[0] = max(largest[0], bounded.qsize())

    sampler = threading.Thread(target=sample, name="test-sampler")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        run_burst(server, client, before_publish=sampler.start)
    finally:
        done.set()
        sys.setswitchinterval(interval)
        if sampler.is_alive():
            sampler.join(10)
    assert bounded.qsize() == MAXSIZE
    assert store.peak == MAXSIZE, f"the channel held {store.peak} events with maxsize={MAXSIZE}"
    assert largest[0] == MAXSIZE, f"qsize() reached {largest[0]} with maxsize={MAXSIZE}"
