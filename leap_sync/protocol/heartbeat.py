"""Heartbeat bookkeeping, on a clock the caller supplies (seconds, monotonic).

:class:`HeartbeatTracker` is the client's side: when the next beat is due (scheduled on
fixed deadlines ``hello + k * interval``, so sleeping late never accumulates drift),
acknowledgement tracking, round-trip latency and zombie detection.

:class:`~leap_sync.wire.keepalive.PingKeepalive` is the same idea for protocols without
heartbeats of their own (Elstat's); a session's timer answers with a
:class:`~leap_sync.wire.keepalive.TimerResult`.

:class:`~leap_sync.protocol.server_heartbeat.DriftMonitor` is the server's side.
"""

from __future__ import annotations

import collections
import enum
import math

__all__ = ["HeartbeatTracker", "Pulse"]


class Pulse(enum.Enum):
    """What :meth:`HeartbeatTracker.poll` asks the caller to do."""

    WAIT = "wait"
    """Nothing due yet: sleep until :attr:`HeartbeatTracker.next_beat`."""
    BEAT = "beat"
    """Send a heartbeat now, then call :meth:`HeartbeatTracker.sent`."""
    ZOMBIE = "zombie"
    """The peer is gone: a beat is still unacknowledged when the next is due and nothing
    at all arrived for more than 1.5 intervals. Close (4000) and reconnect."""


class HeartbeatTracker:
    """The client's heartbeat schedule and liveness view of one connection.

    Not thread-safe: the caller serialises access (the client holds its session lock).
    A busy stream that delays acknowledgements behind data is not a zombie, because
    liveness also counts every frame received (see :meth:`received`).
    """

    ZOMBIE_SILENCE = 1.5
    """Intervals without receiving anything, beyond which an unacked beat means dead."""

    def __init__(self, interval: float, now: float) -> None:
        if not interval > 0:
            raise ValueError("heartbeat interval must be positive")
        self.interval = interval
        self.next_beat = now + interval
        self.last_received = now
        self.latency: float | None = None
        self.beats_sent = 0
        self._unacked: collections.deque[float] = collections.deque(maxlen=16)

    def __repr__(self) -> str:
        return (
            f"HeartbeatTracker(interval={self.interval}, next_beat={self.next_beat:.3f}, "
            f"unacked={len(self._unacked)}, latency={self.latency})"
        )

    @property
    def unacked(self) -> int:
        """How many sent beats wait for an acknowledgement."""
        return len(self._unacked)

    def received(self, now: float) -> None:
        """Something (anything) arrived from the peer at ``now``."""
        self.last_received = now

    def acked(self, now: float) -> None:
        """An untagged acknowledgement arrived: it answers the oldest unacked beat."""
        self.last_received = now
        if self._unacked:
            self.latency = now - self._unacked.popleft()

    def poll(self, now: float) -> Pulse:
        """What is due at ``now``."""
        if now < self.next_beat:
            return Pulse.WAIT
        if self._unacked and now - self.last_received > self.ZOMBIE_SILENCE * self.interval:
            return Pulse.ZOMBIE
        return Pulse.BEAT

    def sent(self, now: float) -> None:
        """A beat went out at ``now``: schedule the next on the fixed grid (skipping
        grid points already in the past, never bunching beats)."""
        self._unacked.append(now)
        self.beats_sent += 1
        if self.next_beat <= now:
            missed = math.floor((now - self.next_beat) / self.interval) + 1
            self.next_beat += missed * self.interval
            # The division can round down when ``now`` sits on a grid point.
            while self.next_beat <= now:
                self.next_beat += self.interval
