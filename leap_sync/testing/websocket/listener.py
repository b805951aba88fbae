"""The embedded server's listening socket and the thread accepting on it.

:func:`bind` takes any host ``getaddrinfo`` resolves: an IPv4 address or name,
an IPv6 address (``"::1"``), or ``"::"``, which listens dual-stack (IPv6 and
IPv4-mapped addresses) where the system allows it.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
from collections.abc import Callable

__all__ = ["Listener", "bind"]

_log = logging.getLogger("leap_sync.testing")
_BACKLOG = 1024
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
BACKOFF = 0.1
"""Seconds the accepting thread waits after a failure to accept or to set up a
connection (out of descriptors, memory...), before it accepts again."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one). Raises
    ``OSError`` (``socket.gaierror`` for a host that does not resolve)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    dualstack = family == socket.AF_INET6 and address[0] == "::" and socket.has_dualstack_ipv6()
    return socket.create_server(address, family=family, backlog=_BACKLOG, dualstack_ipv6=dualstack)


class Listener:
    """Accepts connections on ``sock`` in a daemon thread named ``name`` and hands each
    (blocking, with ``TCP_NODELAY``) to ``on_accept``, on that thread.

    The thread survives every failure but that of the listening socket itself: when
    ``accept`` runs out of descriptors or memory, or ``on_accept`` raises (setting up
    the connection failed: no descriptor for its wakeup, no thread), that one
    connection is closed (``on_accept`` owns the socket it was given only if it
    returns), the failure is logged, and it waits :data:`BACKOFF` seconds (on an
    event :meth:`close` sets) before accepting again."""

    def __init__(self, sock: socket.socket, on_accept: Callable[[socket.socket], None], name: str) -> None:
        self.sock = sock
        self._on_accept = on_accept
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
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
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

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
                    # pending connection may fit, unless told to stop.
                    _log.warning("cannot accept a connection (%s); retrying in %g s", exc, BACKOFF)
                    if self._stop.wait(BACKOFF):
                        return
                    continue
                if not self._serve(conn) and self._stop.wait(BACKOFF):
                    return

    def _serve(self, conn: socket.socket) -> bool:
        """Hand ``conn`` to ``on_accept``; ``False`` (``conn`` closed, the failure
        logged) when setting it up failed."""
        try:
            conn.setblocking(True)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self._on_accept(conn)
        except Exception as exc:
            conn.close()
            _log.warning("cannot serve a connection (%s: %s); retrying in %g s", type(exc).__name__, exc, BACKOFF)
            return False
        return True
