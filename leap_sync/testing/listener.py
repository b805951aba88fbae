"""The embedded server's listening socket and the thread accepting on it.

:func:`bind` takes any host ``getaddrinfo`` resolves: an IPv4 address or name,
an IPv6 address (``"::1"``), or ``"::"``, which listens dual-stack (IPv6 and
IPv4-mapped addresses) where the system allows it.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
from collections.abc import Callable

__all__ = ["Listener", "bind"]

_BACKLOG = 1024
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one). Raises
    ``OSError`` (``socket.gaierror`` for a host that does not resolve)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    dualstack = family == socket.AF_INET6 and address[0] == "::" and socket.has_dualstack_ipv6()
    return socket.create_server(address, family=family, backlog=_BACKLOG, dualstack_ipv6=dualstack)


class Listener:
    """Accepts connections on ``sock`` in a daemon thread named ``name`` and hands each
    (blocking, with ``TCP_NODELAY``) to ``on_accept``, on that thread."""

    def __init__(self, sock: socket.socket, on_accept: Callable[[socket.socket], None], name: str) -> None:
        self.sock = sock
        self._on_accept = on_accept
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def start(self) -> None:
        self.sock.setblocking(False)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, join the thread (it never blocks but in ``select``), and
        close the listening socket. Idempotent; not from the accepting thread."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

    def _stopping(self) -> bool:
        try:
            return bool(self._wake_r.recv(1))
        except OSError:
            return False

    def _run(self) -> None:
        with selectors.DefaultSelector() as poller:
            poller.register(self.sock, selectors.EVENT_READ)
            poller.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = poller.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                try:
                    conn, _addr = self.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as exc:
                    if exc.errno not in _RESOURCE_ERRORS:
                        return  # the listening socket is gone
                    # Out of file descriptors or memory: retry when the
                    # pending connection may fit, unless woken to stop.
                    if poller.select(0.1) and self._stopping():
                        return
                    continue
                conn.setblocking(True)
                try:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
                self._on_accept(conn)
