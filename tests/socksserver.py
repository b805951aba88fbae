"""A small SOCKS4/4a/5 proxy on loopback for tests: it records what clients asked,
and tunnels, refuses, or never answers."""

from __future__ import annotations

import socket
import struct
import threading

from relay import LoopbackProxy

__all__ = ["SocksProxy"]


class SocksProxy(LoopbackProxy):
    """``mode``: ``"tunnel"``, ``"refuse"`` (SOCKS5 reply 5, SOCKS4 0x5B) or
    ``"silent"``. ``credentials`` makes SOCKS5 require username/password.
    ``requests`` records ``(version, host, port, user)`` per CONNECT.

    ``"tunnel"`` is honest: it connects to the target first and answers success, or
    "connection refused" (SOCKS4: 0x5B) when it cannot. ``answers`` overrides that per
    target host: a SOCKS5 reply code (SOCKS4 answers 0x5B for any code but 0), or
    ``None`` for never answering."""

    def __init__(
        self,
        mode: str = "tunnel",
        credentials: tuple[str, str] | None = None,
        answers: dict[str, int | None] | None = None,
    ) -> None:
        self.mode = mode
        self.credentials = credentials
        self.answers = dict(answers or {})
        self._asked = threading.Condition()
        self.requests: list[tuple[int, str, int, str]] = []
        super().__init__("test-socks")

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _read_until_nul(self, sock: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"\0"):
            data += self._read(sock, 1)
        return data[:-1]

    def serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        version = self._read(client, 1)[0]
        host, port, user = self._socks5(client) if version == 5 else self._socks4(client)
        with self._asked:
            self.requests.append((version, host, port, user))
            self._asked.notify_all()
        code = 5 if self.mode == "refuse" else self.answers.get(host, 0) if self.mode == "tunnel" else None
        if code is None:
            self._stop.wait(30)
            return
        upstream = None
        if code == 0:
            try:
                upstream = self.track(socket.create_connection((host, port), timeout=5))
            except OSError:
                code = 5
        if version == 5:
            client.sendall(b"\x05" + bytes([code]) + b"\x00\x01" + b"\0" * 6)
        else:
            client.sendall(b"\x00" + (b"\x5a" if code == 0 else b"\x5b") + b"\0" * 6)
        if upstream is not None:
            self.relay(client, upstream)

    def wait_requests(self, count: int, timeout: float = 10) -> bool:
        """Wait until ``count`` CONNECT requests arrived; whether they did in time."""
        with self._asked:
            return self._asked.wait_for(lambda: len(self.requests) >= count, timeout)

    def _socks5(self, client: socket.socket) -> tuple[str, int, str]:
        methods = self._read(client, self._read(client, 1)[0])
        user = ""
        if self.credentials is not None:
            if 2 not in methods:
                client.sendall(b"\x05\xff")
                raise EOFError
            client.sendall(b"\x05\x02")
            self._read(client, 1)
            user = self._read(client, self._read(client, 1)[0]).decode()
            password = self._read(client, self._read(client, 1)[0]).decode()
            good = (user, password) == self.credentials
            client.sendall(b"\x01" + (b"\x00" if good else b"\x01"))
            if not good:
                raise EOFError
        else:
            client.sendall(b"\x05\x00")
        _, _, _, kind = self._read(client, 4)
        if kind == 1:
            host = socket.inet_ntoa(self._read(client, 4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, self._read(client, 16))
        else:
            host = self._read(client, self._read(client, 1)[0]).decode()
        (port,) = struct.unpack("!H", self._read(client, 2))
        return host, port, user

    def _socks4(self, client: socket.socket) -> tuple[str, int, str]:
        _, port_bytes, ip = self._read(client, 1), self._read(client, 2), self._read(client, 4)
        user = self._read_until_nul(client).decode()
        host = socket.inet_ntoa(ip)
        if ip[:3] == b"\0\0\0" and ip[3]:  # SOCKS4a: the name follows
            host = self._read_until_nul(client).decode()
        return host, struct.unpack("!H", port_bytes)[0], user

    def __enter__(self) -> SocksProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
