"""A file descriptor another thread can make readable, so a thread waiting in
``poll()`` on a socket also wakes for "there is work" or "stop".

The I/O thread polls the socket and this descriptor together; other threads call
:meth:`Wakeup.notify`. On Linux it is an ``eventfd`` (one descriptor), elsewhere a
connected socket pair (``select()`` on Windows takes sockets only).
"""

from __future__ import annotations

import os
import socket
import threading

__all__ = ["Wakeup"]


class Wakeup:
    """One wakeup descriptor: :attr:`fd` to poll, :meth:`notify` from any thread,
    :meth:`clear` from the polling thread, :meth:`close` once (later notifies are
    ignored, so a late ``notify`` never writes to a reused descriptor number)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._pair = (reader, writer)
            self.fd = reader.fileno()

    def notify(self) -> None:
        """Make :attr:`fd` readable (any thread; never blocks)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._pair is None:
                    os.eventfd_write(self.fd, 1)
                else:  # pragma: no cover - not Linux
                    self._pair[1].send(b"\0")
            except OSError:
                pass  # already readable (the counter or the buffer is full)

    def clear(self) -> None:
        """Consume pending notifications (the polling thread)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._pair is None:
                    os.eventfd_read(self.fd)
                else:  # pragma: no cover - not Linux
                    while self._pair[0].recv(4096):
                        pass
            except OSError:
                pass  # nothing pending

    def close(self) -> None:
        """Release the descriptor(s). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pair is None:
                os.close(self.fd)
            else:  # pragma: no cover - not Linux
                for sock in self._pair:
                    sock.close()
