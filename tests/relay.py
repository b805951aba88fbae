"""What the test proxies share: a loopback listener, a thread per client, a relay
between two sockets, and a close that ends every one of them."""

from __future__ import annotations

import select
import socket
import threading

__all__ = ["LoopbackProxy"]


class LoopbackProxy:
    """Accepts on 127.0.0.1 and runs :meth:`serve` for each client on its own thread;
    :meth:`relay` pipes two sockets until either closes or the proxy does."""

    def __init__(self, name: str) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name=name, daemon=True)
        self._accepting.start()

    def serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def track(self, sock: socket.socket) -> socket.socket:
        """Remember ``sock`` so :meth:`close` shuts it down."""
        self._socks.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.track(client)
            thread = threading.Thread(target=self._serve_and_close, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve_and_close(self, client: socket.socket) -> None:
        try:
            self.serve(client)
        except (OSError, EOFError):
            pass
        finally:
            client.close()

    def relay(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._stop.is_set():
            readable, _, _ = select.select([a, b], [], [], 0.5)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
