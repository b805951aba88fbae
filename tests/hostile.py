"""A scriptable hostile server for client tests: raw TCP on loopback, and for each
connection a script (any Python callable) that misbehaves at whatever phase it likes.

A script gets a :class:`Peer` and decides everything: read the upgrade request or not,
answer it (or with a bad status, wrong accept key, trickling bytes...), send a Hello
with any interval, INIT before Hello, fragments, pings, close codes, garbage, stall on
an event, drop the TCP connection or reset it. ``HostileServer(scripts)`` takes one
script per connection, in order (the last repeats).
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from leap_sync.wire.wsframes import OP_BINARY, OP_CLOSE, OP_TEXT, unmasked_frame

__all__ = ["HostileServer", "Peer", "init_frame", "leap_session"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Script = Callable[["Peer"], None]


def init_frame(cid: str = "c1", channels: Sequence[str] = (), scope: str = "token") -> dict[str, Any]:
    return {
        "op": 0,
        "d": {
            "c": None,
            "e": "INIT",
            "d": {
                "cid": cid,
                "connection_count": 1,
                "metadata": None,
                "scope": scope,
                "channels": [{"id": c, "project_id": "project_x", "state": {}, "type": "private"} for c in channels],
            },
        },
    }


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, sock: socket.socket, number: int, stop: threading.Event) -> None:
        self.sock = sock
        self.number = number
        self.stop = stop
        self.request = b""
        self._buffer = b""
        self.frames: list[tuple[int, bytes]] = []  # what the client sent, once read

    # -- HTTP --------------------------------------------------------------------------

    def read_request(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("client closed before its request")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        self.request = head
        return head

    def accept_key(self) -> bytes:
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        return base64.b64encode(hashlib.sha1(key + _GUID).digest())

    def upgrade(self, *, accept: bytes | None = None, extra: bytes = b"") -> None:
        """Read the request and answer 101 (with the right key unless ``accept``)."""
        self.read_request()
        key = accept if accept is not None else self.accept_key()
        self.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + key + b"\r\n" + extra + b"\r\n"
        )

    def refuse(self, status: int, reason: str = "Nope", headers: Sequence[str] = ()) -> None:
        self.read_request()
        lines = [f"HTTP/1.1 {status} {reason}", *headers, "Content-Length: 0", "", ""]
        self.send("\r\n".join(lines).encode())

    # -- websocket ---------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.send(unmasked_frame(opcode, payload, fin))

    def json(self, obj: Any, *, compress: bool = False) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        if compress:
            self.frame(OP_BINARY, zlib.compress(data))
        else:
            self.frame(OP_TEXT, data)

    def hello(self, interval_ms: int = 30000) -> None:
        self.json({"op": 1, "d": {"heartbeat_interval": interval_ms}})

    def init(self, cid: str = "c1", channels: Sequence[str] = ()) -> None:
        self.json(init_frame(cid, channels))

    def message(self, channel: str, event: str, data: Any) -> None:
        self.json({"op": 0, "d": {"c": channel, "e": "MESSAGE", "d": {"e": event, "d": data}}})

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
        self.frame(OP_CLOSE, payload)

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("client closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """``(opcode, payload)`` of the client's next frame (unmasked)."""
        self.sock.settimeout(timeout)
        b0, b1 = self._read_exactly(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read_exactly(8), "big")
        mask = self._read_exactly(4) if b1 & 0x80 else b"\0\0\0\0"
        data = self._read_exactly(length)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.frames.append((b0 & 0x0F, payload))
        return b0 & 0x0F, payload

    def read_json(self, timeout: float = 5.0) -> Any:
        """The client's next text frame, decoded (control frames are skipped)."""
        while True:
            opcode, payload = self.read_frame(timeout)
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_CLOSE:
                raise EOFError(f"client sent a close frame: {payload!r}")

    def expect_identify(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            frame = self.read_json(timeout)
            if frame.get("op") == 2:
                return dict(frame)

    def drain(self, timeout: float = 5.0) -> None:
        """Read (and keep) client frames until the client closes or ``timeout``."""
        try:
            while True:
                self.read_frame(timeout)
        except (OSError, EOFError):
            pass

    def wait(self, timeout: float = 30.0) -> None:
        """Stall until the test ends (or ``timeout``)."""
        self.stop.wait(timeout)

    def reset(self) -> None:
        """Cut with a TCP RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def leap_session(
    peer: Peer,
    interval_ms: int = 30000,
    channels: Sequence[str] = (),
    *,
    cid: str | None = None,
    scope: str = "token",
) -> None:
    """The well-behaved start: upgrade, Hello, wait for Identify, INIT (connection id
    ``cid``, by default ``c<peer number>``; ``scope`` ``"noauth"`` for a tokenless one)."""
    peer.upgrade()
    peer.hello(interval_ms)
    peer.expect_identify()
    peer.json(init_frame(cid if cid is not None else f"c{peer.number}", channels, scope))


class HostileServer:
    """Accepts on 127.0.0.1 and runs the next script for each connection on its own
    thread. ``errors`` collects exceptions scripts raised (other than the client
    going away); ``peers`` gets each :class:`Peer` as it is accepted."""

    def __init__(self, scripts: Sequence[Script] | Script) -> None:
        self._scripts = list(scripts) if isinstance(scripts, Sequence) else [scripts]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.stop = threading.Event()
        self.peers: queue.Queue[Peer] = queue.Queue()
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                number = self.accepted
                script = self._scripts[min(number, len(self._scripts)) - 1]
                self._socks.append(sock)
                peer = Peer(sock, number, self.stop)
                thread = threading.Thread(
                    target=self._serve, args=(script, peer), name=f"hostile-{number}", daemon=True
                )
                self._threads.append(thread)
            self.peers.put(peer)
            thread.start()

    def _serve(self, script: Script, peer: Peer) -> None:
        try:
            script(peer)
        except (OSError, EOFError):
            pass  # the client went away, as clients do
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            try:
                peer.sock.close()
            except OSError:
                pass

    def peer(self, timeout: float = 5.0) -> Peer:
        return self.peers.get(timeout=timeout)

    def close(self) -> None:
        self.stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._accept_thread.join(5)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
