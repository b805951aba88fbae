"""The bounded outbound queue of one server connection.

Any thread may :meth:`Outbox.put` complete websocket frames (bytes ready for the
wire); only the connection's own thread :meth:`Outbox.take` s them and writes them.
Nothing here blocks or touches a socket: the lock is held only to move references.
The bound is on queued bytes; a put that would cross it is refused with
:attr:`Put.OVERFLOW`, and the connection then sheds its client (see
:attr:`~leap_sync.testing.websocket.connection.WebSocketConnection.slow_consumer_code`).
Pongs take a slot of their own (:meth:`Outbox.put_pong`): only the latest one waits,
as RFC 6455 (5.5.3) allows, so a client that pings without reading queues at most one
pong, whatever it sends.
"""

from __future__ import annotations

import collections
import enum
import threading

import attrs

__all__ = ["Batch", "Outbox", "Put"]


class Put(enum.Enum):
    """What :meth:`Outbox.put` did."""

    QUEUED = "queued"
    CLOSED = "closed"
    """The outbox takes no more data frames (the connection is closing or closed)."""
    OVERFLOW = "overflow"
    """Queuing would exceed the bound: nothing was queued, and the outbox is now closed."""


@attrs.frozen
class _Item:
    data: bytes
    count: int
    channel: str | None
    seqs: tuple[int, ...]


@attrs.frozen
class Batch:
    """Bytes to write in one go, and what they carry: ``frames`` websocket messages
    and, per sequenced channel, the sequence numbers in order."""

    data: bytes
    frames: int
    sequences: tuple[tuple[str, tuple[int, ...]], ...]


class Outbox:
    """A FIFO of frames bound by ``limit`` queued bytes (thread-safe, non-blocking)."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the outbound queue limit must be positive")
        self.limit = limit
        self._lock = threading.Lock()
        self._items: collections.deque[_Item] = collections.deque()
        self._bytes = 0
        self._pong: bytes | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Bytes waiting to be written (the waiting pong included)."""
        pong = self._pong
        return self._bytes + (len(pong) if pong is not None else 0)

    def put_pong(self, data: bytes) -> bool:
        """Queue one pong frame in place of any pong still waiting (written before the
        frames queued, between two whole frames). ``False`` once closed."""
        with self._lock:
            if self._closed:
                return False
            self._pong = data
            return True

    def put(self, data: bytes, *, count: int = 1, channel: str | None = None, seqs: tuple[int, ...] = ()) -> Put:
        """Queue ``count`` complete frames (``data``); ``seqs`` are the sequence
        numbers of ``channel`` they carry, recorded once written."""
        with self._lock:
            if self._closed:
                return Put.CLOSED
            if self._bytes + len(data) > self.limit:
                self._closed = True
                return Put.OVERFLOW
            self._items.append(_Item(data, count, channel, seqs))
            self._bytes += len(data)
            return Put.QUEUED

    def put_final(self, data: bytes, *, discard: bool) -> list[Batch]:
        """Close the outbox to data frames and queue ``data`` (the close frame) after
        what is queued, or, with ``discard``, instead of it. Not bound by the limit.
        Returns what was discarded."""
        with self._lock:
            self._closed = True
            dropped = self._clear() if discard else []
            if data:
                self._items.append(_Item(data, 0, None, ()))
                self._bytes += len(data)
        return dropped

    def discard(self) -> list[Batch]:
        """Close the outbox and drop everything queued; returns what was dropped."""
        with self._lock:
            self._closed = True
            return self._clear()

    def _clear(self) -> list[Batch]:
        dropped = [
            Batch(b"", item.count, () if item.channel is None else ((item.channel, item.seqs),)) for item in self._items
        ]
        self._items.clear()
        self._bytes = 0
        self._pong = None
        return dropped

    def close(self) -> None:
        """Take no more data frames (what is queued stays)."""
        with self._lock:
            self._closed = True

    def take(self, max_bytes: int) -> Batch | None:
        """Up to ``max_bytes`` (at least one item) of queued frames, the waiting pong
        first, or ``None`` when nothing waits."""
        with self._lock:
            if not self._items and self._pong is None:
                return None
            parts: list[bytes] = []
            if self._pong is not None:
                parts.append(self._pong)
                self._pong = None
            frames = 0
            size = 0
            sequences: list[tuple[str, tuple[int, ...]]] = []
            while self._items and (size == 0 or size + len(self._items[0].data) <= max_bytes):
                item = self._items.popleft()
                parts.append(item.data)
                size += len(item.data)
                frames += item.count
                if item.channel is not None:
                    sequences.append((item.channel, item.seqs))
            self._bytes -= size
        return Batch(parts[0] if len(parts) == 1 else b"".join(parts), frames, tuple(sequences))
