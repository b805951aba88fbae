"""A Leap Edge stream source for the benchmarks, running in a process of its own.

The blaster is deliberately *not* the embedded :class:`~leap_sync.testing.LeapEdgeServer`:
it must never be the bottleneck (nor share a GIL with the client under test), so it
does the least a server can do. It accepts websocket connections with a minimal
hand-written HTTP upgrade and then, depending on the request path and query, writes
pre-encoded frames in big ``sendall()`` chunks:

``/raw``
    No Leap handshake: writes the pre-encoded JSON stream of ``n`` MESSAGE dispatches
    of ``size`` bytes each (default 200)
    (the websockets and websocket-client baselines), or with ``mode=paced`` the paced
    stream described below.
``/ws?mode=...`` (``encoding`` and ``compression`` as leap_sync sends them)
    The Leap handshake first: Hello (``hb`` = heartbeat interval in ms), the client's
    masked Identify, INIT. Then, by ``mode``:

    - ``idle`` (default): nothing; answers heartbeats until the client leaves.
    - ``blast``: the pre-encoded stream of ``n`` MESSAGE dispatches of ``size`` bytes
      of JSON each (default 200) in that encoding and compression.
    - ``paced``: ``rate`` messages per second for ``seconds`` seconds, each carrying the
      ``time.monotonic_ns()`` at which it was written (CLOCK_MONOTONIC is system-wide on
      Linux, so the client can subtract it from its own reading).
    - ``flood``: JSON MESSAGE dispatches as fast as the client reads them, until it
      leaves (at most ``seconds``), recording when each of its heartbeats arrived
      (acknowledged only with ``ack=1``); the record goes to the parent process
      (:meth:`Blaster.report`).
    - ``drop``: ``after`` ms after INIT, one MESSAGE carrying the ``monotonic_ns()`` of
      the moment just before the TCP connection is cut (no close frame).

Every connection echoes the client's close frame and then closes, so the clients'
``close()`` never waits for a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import multiprocessing
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from leap_sync.protocol.codec import Codec
from leap_sync.wire.wsframes import unmasked_frame_header, unmasked_message

__all__ = [
    "Blaster",
    "ConnectionReport",
    "build_stream",
    "json_payloads",
    "message_frame",
    "percentile",
]

CHANNEL = "room"
PROJECT = "project_x"
TOKEN = "leap_token_x"
CHUNK_BYTES = 256 * 1024
"""Size of one ``sendall()`` (frame-aligned, so acknowledgements can go in between)."""

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_INIT = {
    "op": 0,
    "d": {
        "c": None,
        "e": "INIT",
        "d": {"cid": "c", "connection_count": 1, "metadata": None, "scope": "token", "channels": []},
    },
}
_ACK = {"op": 4}
_FLOOD_LOOP = 4096  # messages in the chunk list a flood cycles through
_MAX_FLOOD_SECONDS = 120.0


# -- payloads --------------------------------------------------------------------------


# Base64 text from a fixed seed: message text that compresses about as much as real
# chat does under zlib (a run of one letter would shrink to nothing).
_TEXT = base64.b64encode(random.Random(2026).randbytes(24 * 1024)).decode()


def message_frame(i: int, size: int = 200) -> dict[str, Any]:
    """The ``i``-th MESSAGE dispatch, padded so that its compact JSON is ``size`` bytes."""
    frame: dict[str, Any] = {
        "op": 0,
        "d": {"c": CHANNEL, "e": "MESSAGE", "d": {"e": "chat", "d": {"n": i, "text": ""}}},
    }
    base = len(json.dumps(frame, separators=(",", ":")))
    start = (i * 61) % 2048
    frame["d"]["d"]["d"]["text"] = _TEXT[start : start + max(0, size - base)]
    return frame


def json_payloads(n: int, size: int = 200) -> list[str]:
    """The compact JSON text of the first ``n`` MESSAGE dispatches."""
    return [json.dumps(message_frame(i, size), separators=(",", ":")) for i in range(n)]


def _encode(codec: Codec, compression: str, frame: dict[str, Any]) -> bytes:
    if compression == "zlib":
        return unmasked_message(codec.encode_compressed(frame))
    return unmasked_message(codec.encode(frame)[0])


def _chunked(frames: Iterator[bytes], chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """Concatenate websocket frames into ``sendall()`` chunks, never splitting a frame."""
    chunks: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for wire in frames:
        parts.append(wire)
        size += len(wire)
        if size >= chunk_bytes:
            chunks.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        chunks.append(b"".join(parts))
    return chunks


def build_stream(
    n: int, encoding: str = "json", compression: str = "none", *, size: int = 200, chunk_bytes: int = CHUNK_BYTES
) -> list[bytes]:
    """``n`` MESSAGE dispatches as server frames, in ``sendall()`` chunks of about
    ``chunk_bytes``.

    JSON without compression is text frames of exactly ``size`` bytes of payload; ETF
    and zlib frames are encoded from the same objects by leap_sync's codec.
    """
    if encoding == "json" and compression == "none":
        return _chunked((unmasked_message(text) for text in json_payloads(n, size)), chunk_bytes)
    codec = Codec(encoding)
    return _chunked((_encode(codec, compression, message_frame(i, size)) for i in range(n)), chunk_bytes)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[rank]


# -- the server process ------------------------------------------------------------------


@dataclass
class ConnectionReport:
    """What the blaster saw on one ``flood`` connection (times are ``monotonic_ns``)."""

    hello_ns: int
    interval_ms: int
    heartbeats_ns: list[int] = field(default_factory=list)
    bytes_sent: int = 0


class _Closed(Exception):
    """The client went away."""


class _Conn:
    """One accepted connection, served by its own thread (plus a writer thread)."""

    def __init__(self, sock: socket.socket, streams: _Streams, reports: _Reports) -> None:
        self.sock = sock
        self.streams = streams
        self.reports = reports
        self.buf = bytearray()
        self.wlock = threading.Lock()
        self.leaving = threading.Event()  # the client closed or went away
        self.codec = Codec("json")
        self.compression = "none"
        self.query: dict[str, str] = {}
        self.report: ConnectionReport | None = None
        self.acks = True  # answer each op 3 heartbeat with op 4

    # reading ---------------------------------------------------------------------------

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            data = self.sock.recv(65536)
            if not data:
                raise _Closed
            self.buf += data

    def _take(self, n: int) -> bytes:
        self._fill(n)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """One client frame (masked): ``(opcode, unmasked payload)``."""
        b0, b1 = self._take(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(self._take(8), "big")
        mask = self._take(4) if b1 & 0x80 else b""
        payload = self._take(length)
        if mask and payload:
            key = (mask * (length // 4 + 1))[:length]
            payload = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")
        return b0 & 0x0F, payload

    def read_message(self) -> tuple[Any, int]:
        """The next data message, decoded, and when it arrived; answers close frames."""
        while True:
            opcode, payload = self.read_frame()
            arrived = time.monotonic_ns()
            if opcode in (0x1, 0x2):
                return self.codec.decode(payload, opcode == 0x2), arrived
            if opcode == 0x8:
                self.leaving.set()
                with self.wlock:
                    self.sock.sendall(unmasked_frame_header(0x8, len(payload[:2])) + payload[:2])
                raise _Closed
            if opcode == 0x9:
                self.send(unmasked_frame_header(0xA, len(payload)) + payload)

    # writing ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        with self.wlock:
            self.sock.sendall(data)

    def stream(self, data: bytes) -> None:
        """Send stream data, unless the client is leaving (checked under the lock, so
        nothing follows the echo of its close frame)."""
        with self.wlock:
            if self.leaving.is_set():
                raise _Closed
            self.sock.sendall(data)

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.send(_encode(self.codec, self.compression, frame))

    # serving ---------------------------------------------------------------------------

    def upgrade(self) -> str:
        """Answer the HTTP upgrade; returns the request path."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise _Closed
            data = self.sock.recv(65536)
            if not data:
                raise _Closed
            self.buf += data
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + _GUID).encode()).digest()).decode()
        self.sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        url = urllib.parse.urlsplit(target)
        self.query = dict(urllib.parse.parse_qsl(url.query))
        return url.path

    def serve(self) -> None:
        writer: threading.Thread | None = None
        try:
            path = self.upgrade()
            q = self.query
            size = int(q.get("size", "200"))
            if path == "/raw" and q.get("mode") == "paced":
                writer = self._start(self._paced, int(q.get("rate", "10000")), float(q.get("seconds", "5")))
            elif path == "/raw":
                writer = self._start(
                    self._blast, self.streams.get(int(q.get("n", "200000")), "json", "none", size=size)
                )
            else:
                self.codec = Codec(q.get("encoding", "json"))
                self.compression = q.get("compression", "none")
                interval = int(q.get("hb", "30000"))
                self.send_frame({"op": 1, "d": {"heartbeat_interval": interval}})
                hello_ns = time.monotonic_ns()
                identify, _ = self.read_message()
                if not (isinstance(identify, dict) and identify.get("op") == 2):
                    raise _Closed
                self.send_frame(_INIT)
                mode = q.get("mode", "idle")
                if mode == "blast":
                    n = int(q.get("n", "200000"))
                    chunks = self.streams.get(n, self.codec.encoding, self.compression, size=size)
                    writer = self._start(self._blast, chunks)
                elif mode == "paced":
                    writer = self._start(self._paced, int(q.get("rate", "10000")), float(q.get("seconds", "5")))
                elif mode == "flood":
                    # No acknowledgements unless asked for: an ack waits for the write
                    # lock behind a flood chunk, which would delay reading (and so
                    # timestamping) the next heartbeat. The stream itself keeps the
                    # client's liveness check happy.
                    self.acks = q.get("ack") == "1"
                    self.report = ConnectionReport(hello_ns, interval)
                    writer = self._start(self._flood, float(q.get("seconds", "10")))
                elif mode == "drop":
                    writer = self._start(self._drop, float(q.get("after", "20")) / 1000.0)
            self._read_until_gone()
        except (_Closed, OSError, ValueError, KeyError, IndexError):
            pass
        finally:
            self.leaving.set()
            if writer is not None:
                writer.join()
            try:
                self.sock.close()
            except OSError:
                pass
            if self.report is not None:
                self.reports.put(self.report)

    def _start(self, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
        thread.start()
        return thread

    def _guarded(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except (_Closed, OSError):
            self.leaving.set()

    def _read_until_gone(self) -> None:
        """Read the client's frames (answering heartbeats) until it closes or leaves."""
        report = self.report
        while True:
            obj, arrived = self.read_message()
            if isinstance(obj, dict) and obj.get("op") == 3:
                if report is not None:
                    report.heartbeats_ns.append(arrived)
                if self.acks:
                    self.send_frame(_ACK)

    def _blast(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.stream(chunk)

    def _paced(self, rate: int, seconds: float) -> None:
        count = int(rate * seconds)
        period = 1e9 / rate
        prefix = '{"op":0,"d":{"c":"' + CHANNEL + '","e":"MESSAGE","d":{"e":"tick","d":{"i":'
        sample = f'{prefix}{count},"t":{time.monotonic_ns()},"pad":""}}}}}}}}'
        pad = "x" * max(0, 200 - len(sample))
        start = time.monotonic_ns() + 1_000_000
        sent = 0
        while sent < count and not self.leaving.is_set():
            now = time.monotonic_ns()
            due = min(count, int((now - start) // period) + 1)
            if due <= sent:
                time.sleep((start + sent * period - now) / 1e9)
                continue
            parts = []
            for i in range(sent, due):
                text = f'{prefix}{i},"t":{time.monotonic_ns()},"pad":"{pad}"}}}}}}}}'.encode()
                parts.append(unmasked_frame_header(0x1, len(text)) + text)
            self.stream(b"".join(parts))
            sent = due

    def _flood(self, seconds: float) -> None:
        chunks = self.streams.get(_FLOOD_LOOP, "json", "none", chunk_bytes=64 * 1024)
        report = self.report if self.report is not None else ConnectionReport(0, 0)
        deadline = time.monotonic() + min(seconds, _MAX_FLOOD_SECONDS)
        while time.monotonic() < deadline:
            for chunk in chunks:
                self.stream(chunk)
                report.bytes_sent += len(chunk)

    def _drop(self, after: float) -> None:
        if self.leaving.wait(after):
            return
        with self.wlock:
            stamp = time.monotonic_ns()
            marker = {"op": 0, "d": {"c": CHANNEL, "e": "MESSAGE", "d": {"e": "drop", "d": {"t": stamp}}}}
            self.sock.sendall(_encode(self.codec, self.compression, marker))
            self.sock.shutdown(socket.SHUT_RDWR)


class _Streams:
    """Pre-encoded streams, built once per (n, encoding, compression)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str, str, int, int], list[bytes]] = {}

    def get(
        self, n: int, encoding: str, compression: str, chunk_bytes: int = CHUNK_BYTES, size: int = 200
    ) -> list[bytes]:
        key = (n, encoding, compression, chunk_bytes, size)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build_stream(n, encoding, compression, chunk_bytes=chunk_bytes, size=size)
            return self._cache[key]


class _Reports:
    """Sends connection reports to the parent process (one sender at a time)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def put(self, report: ConnectionReport) -> None:
        with self._lock:
            self._conn.send(report)


def _serve(conn: Connection, prebuild: list[tuple[Any, ...]]) -> None:
    """The blaster process: listen, prebuild, report the port, serve until told to stop."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    streams = _Streams()
    for n, encoding, compression, *rest in prebuild:  # (n, encoding, compression[, size])
        streams.get(n, encoding, compression, size=rest[0] if rest else 200)
    reports = _Reports(conn)

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            threading.Thread(target=_Conn(sock, streams, reports).serve, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    conn.send(listener.getsockname()[1])
    try:
        conn.recv()  # anything, or EOF: stop
    except EOFError:
        pass
    listener.close()
    os._exit(0)  # connection threads are daemons; do not wait for them


class Blaster:
    """The blaster process, from the parent's side. Use as a context manager.

    ``prebuild`` lists ``(n, encoding, compression[, size])`` streams to encode before
    the port is reported (so no benchmark run pays for encoding).
    """

    def __init__(self, prebuild: list[tuple[Any, ...]] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, prebuild or []), name="leap-bench-blaster", daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(300):
            self.close()
            raise RuntimeError("the blaster process did not start")
        self.port: int = self._conn.recv()

    def url(self, path: str = "/ws", **query: Any) -> str:
        """``ws://127.0.0.1:<port><path>?<query>``."""
        qs = urllib.parse.urlencode({k: str(v) for k, v in query.items()})
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{qs}" if qs else "")

    def report(self, timeout: float = 10.0) -> ConnectionReport:
        """The next ``flood`` connection's report (after the client left)."""
        if not self._conn.poll(timeout):
            raise TimeoutError("no report from the blaster")
        report: ConnectionReport = self._conn.recv()
        return report

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> Blaster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
