"""The embedded server's fault injection: close codes, TCP drops, unacknowledged or
unenforced heartbeats, silence, raw bytes.

Every call returns at once, whatever the clients do: it posts a request to each
connection's thread or cuts its TCP connection from the calling thread, so a fault
reaches even a client whose writes are blocked because it stopped reading.
"""

from __future__ import annotations

from .core import ServerCore

__all__ = ["Faults"]


class Faults(ServerCore):
    """Fault injection (see the module docstring). :meth:`drop` (cut TCP, identified
    or not) and :meth:`send_raw` (one message with an exact payload) come from
    :class:`~leap_sync.testing.websocket.embedded.EmbeddedServer`."""

    def disconnect(self, code: int = 4000, reason: str = "", *, cid: str | None = None) -> int:
        """Close every open connection (or one), identified or not, with ``code`` and
        ``reason`` (for 4006, the reason is the new endpoint), after the frames queued
        before. Returns how many closes were started; each connection's closing
        handshake runs on its own thread, and a client that does not answer within
        ``close_timeout`` is cut. ``ValueError`` for a code or reason no close frame
        can carry (1005, 1006, 1015, over 123 bytes of reason)."""
        return super().disconnect(code, reason, cid=cid)

    def pause_acks(self, paused: bool = True) -> None:
        """Stop (or resume) acknowledging heartbeats, on every connection. Beats that
        arrive while paused are never acknowledged."""
        self._acks_paused = paused

    def enforce_heartbeats(self, enforced: bool = True) -> None:
        """Stop (or resume) closing clients that miss the heartbeat schedule (4007).
        Tagged heartbeat requests are enforced either way."""
        self._enforce_heartbeats = enforced
        for conn in self._targets(None, identified_only=False):
            conn.wake()  # its next deadline changed

    def silence(self, *, cid: str | None = None) -> int:
        """Make the current connections (or one) go fully silent: nothing more is
        sent, what they send is counted and ignored, nothing is enforced, nothing is
        closed (but :meth:`disconnect` and the server's close still close them). New
        connections are served normally."""
        conns = self._targets(cid, identified_only=False)
        for conn in conns:
            conn.silent = True
            conn.wake()
        return len(conns)

    def send_raw_bytes(self, data: bytes, *, cid: str | None = None) -> int:
        """Write bytes straight to the TCP stream, bypassing websocket framing (to test
        a client's frame parser: garbage, split frames, protocol violations).
        ``TypeError`` for ``data`` that is not bytes-like."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_raw_bytes takes bytes, not {type(data).__name__}")
        data = bytes(data)
        return sum(conn.send_wire(data) for conn in self._targets(cid, identified_only=False))
