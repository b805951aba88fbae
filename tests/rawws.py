"""A raw websocket server for transport tests: it completes the upgrade, then lets a
test write any bytes and read the client's (masked) frames one by one."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import socket
import ssl
import threading
from collections.abc import Iterator

import trustme

from leap_sync.wire.wsframes import unmasked_frame as server_frame

__all__ = ["RawConnection", "RawServer", "raw_server_for", "server_frame"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("client closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """``(opcode, unmasked payload)`` of the client's next frame."""
        self.sock.settimeout(timeout)
        b0, b1 = self._read_exactly(2)
        assert b1 & 0x80, "client frames must be masked"
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read_exactly(8), "big")
        mask = self._read_exactly(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read_exactly(length)))
        return b0 & 0x0F, payload

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RawServer:
    """Accepts connections on loopback in a thread, answers the upgrade, and queues
    each connection for the test."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.port = self._listener.getsockname()[1]
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/ws"
        self.connections: queue.Queue[RawConnection] = queue.Queue()
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._accept, name="raw-ws-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            try:
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_side=True)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise EOFError
                    request += chunk
            except (OSError, EOFError):
                sock.close()
                continue
            self.requests.append(request)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.put(RawConnection(sock))

    def accept(self, timeout: float = 5.0) -> RawConnection:
        return self.connections.get(timeout=timeout)

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)
        while not self.connections.empty():
            self.connections.get().close()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def raw_server_for(scheme: str, ca: trustme.CA) -> Iterator[tuple[RawServer, dict[str, object]]]:
    """A running :class:`RawServer` and the client options that reach it: over TLS
    (a certificate for 127.0.0.1 issued by ``ca``; ``sslopt`` trusting ``ca``) when
    ``scheme`` is ``"wss"``, plain (no options) otherwise."""
    context = None
    options: dict[str, object] = {}
    if scheme == "wss":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        options = {"sslopt": {"context": client_context}}
    with RawServer(tls=context) as raw:
        yield raw, options
