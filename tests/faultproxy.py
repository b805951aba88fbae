"""A fault-injecting TCP relay for tests, so that faults happen in the network and not
only inside the server.

:class:`FaultProxy` listens on ``127.0.0.1`` port 0 and relays every connection it
accepts (a *link*) to ``target_host:target_port``. On command, for every link or one,
it changes the network between the two peers:

- :meth:`~FaultProxy.set_latency`: bytes read from one side reach the other ``seconds``
  later (per direction; order kept, throughput unchanged);
- :meth:`~FaultProxy.set_bandwidth`: at most ``bytes_per_second`` per direction;
- :meth:`~FaultProxy.blackhole`: one direction stops forwarding and discards what it
  reads (and what was still in flight), while the other direction works;
- :meth:`~FaultProxy.reset`: a TCP RST to both sides, at once (bytes in flight lost);
- :meth:`~FaultProxy.half_open`: both directions stop, the sockets stay open, nothing
  is read, written, acknowledged by the proxy or closed: the peers see a silent
  network, and a peer that keeps sending eventually fills its socket buffer;
- :meth:`~FaultProxy.heal`: back to a clean network. Bytes held by a half-open link
  flow again (a stall, nothing lost). A link whose blackhole discarded bytes is reset
  instead, because TCP never resumes a stream with bytes missing from its middle (a
  relay that did would hand the peer a stream with a silent gap, which TCP never
  does).

``direction`` is ``"up"`` (client to server), ``"down"`` (server to client) or
``"both"``. ``link=None`` applies a condition to every open link *and* to links
accepted later (a network-wide condition, until :meth:`heal`); ``link=<id>`` (an id
from :attr:`FaultProxy.links`) to that link only (``KeyError`` if it is not open).

What a peer does travels through: a FIN is forwarded once the bytes before it were
(so it is delayed, throttled or held like them), and a RST from a peer reaches the
other peer once the bytes it was owed are written. A target that refuses the
connection resets the client's.

One daemon thread, ``faultproxy-<n>``, owns every socket: it waits in a selector for
readiness, for the next byte due (latency) or for the next bandwidth slot, never
polls. Commands from other threads are queued to it (the caller waits, bounded, until
it applied them). :meth:`FaultProxy.close` resets every link and joins the thread.
"""

from __future__ import annotations

import collections
import errno
import itertools
import math
import selectors
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["BOTH", "DOWN", "UP", "FaultProxy", "LinkInfo"]

UP = "up"
"""Client to server."""
DOWN = "down"
"""Server to client."""
BOTH = "both"
_DIRECTIONS = {UP: (UP,), DOWN: (DOWN,), BOTH: (UP, DOWN)}

_RECV_SIZE = 65536
_HOLD_LIMIT = 256 * 1024
"""Bytes one direction of a link holds (in flight, delayed or throttled) before the
proxy stops reading from its source: the sender then feels TCP backpressure."""
_QUANTUM = 0.02
"""Seconds of bandwidth written in one go on a throttled direction."""
_WRITES_PER_TURN = 64
_ACCEPTS_PER_TURN = 64
_COMMAND_TIMEOUT = 10.0
_JOIN_TIMEOUT = 10.0

_numbers = itertools.count(1)
T = TypeVar("T")


@dataclass
class _Conditions:
    """The network conditions of one link, or the proxy-wide ones new links start with."""

    latency: dict[str, float] = field(default_factory=lambda: {UP: 0.0, DOWN: 0.0})
    rate: dict[str, float | None] = field(default_factory=lambda: {UP: None, DOWN: None})
    blackhole: set[str] = field(default_factory=set)
    half_open: bool = False

    def copy(self) -> _Conditions:
        return _Conditions(dict(self.latency), dict(self.rate), set(self.blackhole), self.half_open)


@dataclass(frozen=True)
class LinkInfo:
    """A snapshot of one open link. Byte counts are per direction: ``forwarded``
    (written to the receiving peer), ``held`` (read, not yet written), ``discarded``
    (lost in a blackhole)."""

    id: int
    connected: bool
    """Whether the connection to the target is established."""
    forwarded: dict[str, int]
    held: dict[str, int]
    discarded: dict[str, int]
    eof: dict[str, bool]
    """Whether the sending peer of each direction has shut down its side (sent FIN)."""
    latency: dict[str, float]
    rate: dict[str, float | None]
    blackhole: frozenset[str]
    half_open: bool


class _Pipe:
    """One direction of a link: what was read from ``src`` and is owed to ``dst``."""

    def __init__(self, direction: str, src: socket.socket, dst: socket.socket) -> None:
        self.direction = direction
        self.src = src
        self.dst = dst
        self.chunks: collections.deque[tuple[float, memoryview]] = collections.deque()  # (due, bytes)
        self.held = 0
        self.last_due = 0.0
        self.next_send = 0.0
        self.blocked = False  # dst's buffer is full: wait until it is writable
        self.eof = False  # src sent FIN (or reset: see _Link.reset_after_drain)
        self.fin_sent = False
        self.forwarded = 0
        self.discarded = 0

    def discard(self) -> int:
        lost = self.held
        self.discarded += lost
        self.chunks.clear()
        self.held = 0
        return lost


class _Link:
    def __init__(self, number: int, client: socket.socket, server: socket.socket, conditions: _Conditions) -> None:
        self.id = number
        self.client = client
        self.server = server
        self.connected = False
        self.up = _Pipe(UP, client, server)
        self.down = _Pipe(DOWN, server, client)
        self.conditions = conditions
        self.lossy = False
        """A blackhole discarded bytes: this stream cannot resume (heal resets it)."""
        self.reset_after_drain: _Pipe | None = None
        """The pipe whose source peer reset: once it is drained, the other peer is reset."""
        self.closed = False
        self.masks: dict[socket.socket, int] = {}

    def pipes(self) -> tuple[_Pipe, _Pipe]:
        return (self.up, self.down)

    def info(self) -> LinkInfo:
        c = self.conditions
        return LinkInfo(
            id=self.id,
            connected=self.connected,
            forwarded={p.direction: p.forwarded for p in self.pipes()},
            held={p.direction: p.held for p in self.pipes()},
            discarded={p.direction: p.discarded for p in self.pipes()},
            eof={p.direction: p.eof for p in self.pipes()},
            latency=dict(c.latency),
            rate=dict(c.rate),
            blackhole=frozenset(c.blackhole),
            half_open=c.half_open,
        )


def _abort(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0); errors ignored."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """A TCP relay to ``target_host:target_port`` with fault injection (see the module
    docstring). Starts at once; use it as a context manager or call :meth:`close`."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", queue: int | None = None
    ) -> None:
        """``queue`` (bytes) models a link with a modest queue: each direction holds at
        most half of it in the proxy and the receiving socket's buffer is the other
        half. ``None``: 256 KiB held, and the kernel's own (autotuned) buffers."""
        self.target = (target_host, target_port)
        self.host = host
        self.number = next(_numbers)
        self._hold_limit = _HOLD_LIMIT if queue is None else max(1, queue // 2)
        self._rcvbuf = None if queue is None else max(1, queue // 2)
        self._listener = socket.create_server((host, 0))
        if self._rcvbuf is not None:  # accepted sockets inherit it
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._defaults = _Conditions()
        self._links: dict[int, _Link] = {}
        self._link_numbers = itertools.count(1)
        self.accepted = 0
        """Links accepted since the start (read on any thread; written by the proxy's)."""
        self.resets = 0
        """Links the proxy reset (by command, by heal after a loss, or for a peer's RST)."""
        self._lock = threading.Lock()
        self._commands: list[tuple[Callable[[], Any], threading.Event, dict[str, Any]]] = []
        self._stopping = False
        self._stopped = False
        self._changes = threading.Condition()
        self._version = 0
        self._dirty = False
        self._thread = threading.Thread(target=self._run, name=f"faultproxy-{self.number}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<FaultProxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}>"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses ---------------------------------------------------------------------

    def url_for(self, server_url: str) -> str:
        """``server_url`` with its host and port replaced by the proxy's (scheme, path
        and query kept)."""
        parts = urllib.parse.urlsplit(server_url)
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{self.host}:{self.port}"))

    # -- commands (any thread) ---------------------------------------------------------

    def set_latency(self, seconds: float, direction: str = BOTH, *, link: int | None = None) -> int:
        """Delay bytes read from now on by ``seconds`` in ``direction``. Returns the
        number of open links changed."""
        if not seconds >= 0:
            raise ValueError("latency must not be negative")
        dirs = _directions(direction)

        def change(c: _Conditions) -> None:
            for d in dirs:
                c.latency[d] = float(seconds)

        return self._call(lambda: self._apply(link, change))

    def set_bandwidth(self, bytes_per_second: float | None, direction: str = BOTH, *, link: int | None = None) -> int:
        """Limit ``direction`` to ``bytes_per_second`` (``None``: unlimited)."""
        if bytes_per_second is not None and not bytes_per_second > 0:
            raise ValueError("bandwidth must be positive (or None)")
        dirs = _directions(direction)

        def change(c: _Conditions) -> None:
            for d in dirs:
                c.rate[d] = bytes_per_second

        return self._call(lambda: self._apply(link, change))

    def blackhole(self, direction: str, *, link: int | None = None) -> int:
        """Stop forwarding ``direction``: what is in flight and what arrives from now
        on is discarded."""
        dirs = _directions(direction)

        def change(c: _Conditions) -> None:
            c.blackhole.update(dirs)

        return self._call(lambda: self._apply(link, change))

    def half_open(self, *, link: int | None = None) -> int:
        """Stop both directions, keep the sockets open, answer nothing."""

        def change(c: _Conditions) -> None:
            c.half_open = True

        return self._call(lambda: self._apply(link, change))

    def reset(self, *, link: int | None = None) -> int:
        """Reset open links (all, or one) with a TCP RST to both sides, now. Returns
        how many. (Links accepted later are not affected.)"""

        def run() -> int:
            targets = self._targets(link)
            for target in targets:
                self._reset_link(target)
            return len(targets)

        return self._call(run)

    def heal(self, *, link: int | None = None) -> int:
        """Clear every condition (of one link, or of all links and of new ones). A
        healed link that lost bytes in a blackhole is reset; returns how many were."""

        def run() -> int:
            if link is None:
                self._defaults = _Conditions()
            reset = 0
            for target in self._targets(link):
                target.conditions = _Conditions()
                if target.lossy:
                    self._reset_link(target)
                    reset += 1
            return reset

        return self._call(run)

    # -- introspection -----------------------------------------------------------------

    @property
    def links(self) -> list[LinkInfo]:
        """The open links, oldest first (an exact snapshot, taken on the proxy's thread)."""
        return self._call(lambda: [link.info() for link in self._links.values()])

    def wait_for(self, predicate: Callable[[list[LinkInfo]], bool], timeout: float = 10.0) -> list[LinkInfo]:
        """Block until ``predicate(links)`` holds, re-checked after each turn of the
        proxy's loop that changed anything; return the links. ``TimeoutError`` after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changes:
                seen = self._version
            links = self.links
            if predicate(links):
                return links
            with self._changes:
                while self._version == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"proxy condition not met within {timeout:g} s; links: {links}")
                    self._changes.wait(remaining)

    def wait_for_links(self, count: int, timeout: float = 10.0) -> list[LinkInfo]:
        """Block until at least ``count`` links are open and connected to the target."""
        return self.wait_for(lambda links: sum(link.connected for link in links) >= count, timeout)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Reset every link, stop listening and join the thread. Idempotent."""
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} did not stop within {_JOIN_TIMEOUT:g} s")

    # -- the proxy's thread ----------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}
        with self._lock:
            if self._stopping or self._stopped:
                raise RuntimeError("the proxy is closed")
            self._commands.append((fn, done, box))
        self._wake()
        if not done.wait(_COMMAND_TIMEOUT):
            raise TimeoutError(f"{self._thread.name} did not run a command within {_COMMAND_TIMEOUT:g} s")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # its buffer is full (it will wake), or it is closed

    def _apply(self, link: int | None, change: Callable[[_Conditions], None]) -> int:
        if link is None:
            change(self._defaults)
        targets = self._targets(link)
        for target in targets:
            change(target.conditions)
            for pipe in target.pipes():
                if pipe.direction in target.conditions.blackhole and pipe.discard():
                    target.lossy = True
        return len(targets)

    def _targets(self, link: int | None) -> list[_Link]:
        if link is None:
            return list(self._links.values())
        return [self._links[link]]

    def _run(self) -> None:
        try:
            while self._turn():
                pass
        finally:
            with self._lock:
                self._stopped = True
                commands, self._commands = self._commands, []
            for _fn, done, box in commands:
                box["error"] = RuntimeError("the proxy is closed")
                done.set()
            for link in list(self._links.values()):
                self._reset_link(link)
            self._selector.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            self._changed()

    def _turn(self) -> bool:
        """One turn of the loop: commands, writes that are due, then wait for
        readiness or the next due instant. ``False`` once closing."""
        with self._lock:
            commands, self._commands = self._commands, []
            stopping = self._stopping
        for fn, done, box in commands:
            try:
                box["result"] = fn()
            except Exception as exc:
                box["error"] = exc
            done.set()
            self._dirty = True
        if stopping:
            return False
        now = time.monotonic()
        wake_at = math.inf
        for link in list(self._links.values()):
            for pipe in link.pipes():
                if not link.closed:
                    wake_at = min(wake_at, self._flush(link, pipe, now))
            if not link.closed:
                self._finish(link)
            if not link.closed:
                self._register(link)
        if self._dirty:
            self._dirty = False
            self._changed()
        timeout = None if wake_at == math.inf else max(0.0, wake_at - now)
        for key, mask in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                self._drain_wake()
            elif key.fileobj is self._listener:
                self._accept()
            else:
                link, sock = key.data
                if not link.closed:
                    self._ready(link, sock, mask)
        return True

    def _changed(self) -> None:
        with self._changes:
            self._version += 1
            self._changes.notify_all()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # drained

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return  # nothing more to accept now
            client.setblocking(False)
            server = socket.socket(socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET, socket.SOCK_STREAM)
            if self._rcvbuf is not None:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            server.setblocking(False)
            link = _Link(next(self._link_numbers), client, server, self._defaults.copy())
            self.accepted += 1
            self._dirty = True
            error = server.connect_ex(self.target)
            if error not in (0, errno.EINPROGRESS, errno.EAGAIN):  # those complete later
                _abort(server)
                _abort(client)
                continue
            self._links[link.id] = link
            self._register(link)

    def _register(self, link: _Link) -> None:
        """Ask the selector for what the link can use now."""
        c = link.conditions
        wanted: dict[socket.socket, int] = {link.client: 0, link.server: 0}
        if not link.connected:
            wanted[link.server] |= selectors.EVENT_WRITE
        if not c.half_open:
            for pipe in link.pipes():
                if pipe.src is link.server and not link.connected:
                    continue
                if not pipe.eof and (pipe.direction in c.blackhole or pipe.held < self._hold_limit):
                    wanted[pipe.src] |= selectors.EVENT_READ
                if pipe.blocked:
                    wanted[pipe.dst] |= selectors.EVENT_WRITE
        for sock, mask in wanted.items():
            current = link.masks.get(sock, 0)
            if mask == current:
                continue
            if current == 0:
                self._selector.register(sock, mask, (link, sock))
            elif mask == 0:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask, (link, sock))
            link.masks[sock] = mask

    def _ready(self, link: _Link, sock: socket.socket, mask: int) -> None:
        if sock is link.server and not link.connected:
            if mask & selectors.EVENT_WRITE:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._reset_link(link)  # refused: the client sees a reset
                    return
                link.connected = True
                self._dirty = True
            return
        for pipe in link.pipes():
            if pipe.dst is sock and mask & selectors.EVENT_WRITE:
                pipe.blocked = False
            if pipe.src is sock and mask & selectors.EVENT_READ and link.masks.get(sock, 0) & selectors.EVENT_READ:
                self._read(link, pipe)
                if link.closed:
                    return

    def _read(self, link: _Link, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            # The peer reset: the other peer is reset once it got what it was owed.
            pipe.eof = True
            link.reset_after_drain = pipe
            other = link.down if pipe is link.up else link.up
            other.discard()
            other.eof = other.fin_sent = True
            self._dirty = True
            return
        self._dirty = True
        if not data:
            pipe.eof = True
            return
        if pipe.direction in link.conditions.blackhole:
            pipe.discarded += len(data)
            link.lossy = True
            return
        due = max(time.monotonic() + link.conditions.latency[pipe.direction], pipe.last_due)
        pipe.last_due = due
        pipe.chunks.append((due, memoryview(data)))
        pipe.held += len(data)

    def _flush(self, link: _Link, pipe: _Pipe, now: float) -> float:
        """Write what is due to ``pipe.dst``; the instant the pipe next needs a turn
        (``inf`` when it waits for readiness or has nothing)."""
        c = link.conditions
        if c.half_open or pipe.blocked or not link.connected or pipe.direction in c.blackhole:
            return math.inf
        for _ in range(_WRITES_PER_TURN):
            if not pipe.chunks:
                break
            due, data = pipe.chunks[0]
            if due > now:
                return due
            rate = c.rate[pipe.direction]
            size = len(data)
            if rate is not None:
                if pipe.next_send > now:
                    return pipe.next_send
                size = min(size, max(1, int(rate * _QUANTUM)))
            try:
                sent = pipe.dst.send(data[:size])
            except BlockingIOError:
                pipe.blocked = True
                return math.inf
            except OSError:
                self._reset_link(link)  # the receiving peer is gone: reset the other
                return math.inf
            self._dirty = True
            pipe.forwarded += sent
            pipe.held -= sent
            if sent == len(data):
                pipe.chunks.popleft()
            else:
                pipe.chunks[0] = (due, data[sent:])
            if rate is not None:
                pipe.next_send = max(pipe.next_send, now) + sent / rate
        else:
            return now  # more to write: come back at once
        if pipe.eof and not pipe.fin_sent and link.reset_after_drain is None:
            pipe.fin_sent = True
            try:
                pipe.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return math.inf

    def _finish(self, link: _Link) -> None:
        """Close a link both of whose directions ended, or reset one a peer reset."""
        if link.conditions.half_open:
            return
        drained = link.reset_after_drain
        if drained is not None and not drained.chunks:
            self._reset_link(link)
        elif link.up.fin_sent and link.down.fin_sent:
            self._close_link(link, abort=False)

    def _reset_link(self, link: _Link) -> None:
        self.resets += 1
        self._close_link(link, abort=True)

    def _close_link(self, link: _Link, *, abort: bool) -> None:
        if link.closed:
            return
        link.closed = True
        self._dirty = True
        self._links.pop(link.id, None)
        for sock in (link.client, link.server):
            if link.masks.get(sock, 0):
                self._selector.unregister(sock)
            if abort:
                _abort(sock)
            else:
                sock.close()
        link.masks.clear()


def _directions(direction: str) -> tuple[str, ...]:
    try:
        return _DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}, not {direction!r}") from None
