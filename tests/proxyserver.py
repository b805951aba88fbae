"""A small HTTP CONNECT proxy on loopback for tests: it records every request line,
and either tunnels, refuses with a status, or never answers."""

from __future__ import annotations

import socket

from relay import LoopbackProxy

__all__ = ["ConnectProxy"]


class ConnectProxy(LoopbackProxy):
    """``mode``: ``"tunnel"`` (default), ``"refuse"`` (answers ``status``) or
    ``"silent"`` (reads the request, never answers)."""

    def __init__(self, mode: str = "tunnel", status: int = 407) -> None:
        self.mode = mode
        self.status = status
        self.requests: list[bytes] = []
        super().__init__("test-proxy")

    def serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request, _, rest = head.partition(b"\r\n\r\n")
        self.requests.append(request)
        if self.mode == "silent":
            self._stop.wait(30)
            return
        if self.mode == "refuse":
            client.sendall(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % self.status)
            return
        target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        host, _, port = target.rpartition(":")
        upstream = self.track(socket.create_connection((host.strip("[]"), int(port)), timeout=5))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        self.relay(client, upstream)

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
