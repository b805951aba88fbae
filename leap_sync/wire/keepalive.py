"""Liveness for protocols without heartbeats of their own, on a clock the caller supplies
(seconds, monotonic).

:class:`PingKeepalive`: websocket pings after a quiet interval, and a dead connection
when nothing at all arrives for a while after one (Elstat's keepalive).
:class:`TimerResult` is what any session's timer (this one, or Leap Edge's
:class:`~leap_sync.protocol.heartbeat.HeartbeatTracker`) asks of the connection core.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import LeapConnectionError
from .close import UNKNOWN_ERROR

__all__ = ["PingKeepalive", "TimerResult"]


@attrs.frozen
class TimerResult:
    """What a session's ``on_timer`` asks for: ``send`` these frames, send a websocket
    ``ping``, or end the connection with ``error`` (close code ``close_code``)."""

    send: tuple[dict[str, Any], ...] = ()
    error: LeapConnectionError | None = None
    close_code: int = UNKNOWN_ERROR
    ping: bool = False


class PingKeepalive:
    """Liveness by websocket pings: after ``interval`` seconds without receiving
    anything, ping; if nothing at all arrives within ``timeout`` seconds of that ping,
    the connection is dead. Not thread-safe; time comes in as arguments."""

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        if not (interval > 0 and timeout > 0):
            raise ValueError("ping interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self.last_received = now
        self.pinged_at: float | None = None

    def received(self, now: float) -> None:
        """Something (anything: data, a pong) arrived at ``now``."""
        if now > self.last_received:
            self.last_received = now
            if self.pinged_at is not None and now >= self.pinged_at:
                self.pinged_at = None

    @property
    def next_timer(self) -> float:
        if self.pinged_at is not None:
            return self.pinged_at + self.timeout
        return self.last_received + self.interval

    def on_timer(self, now: float) -> TimerResult:
        if self.pinged_at is not None:
            if now >= self.pinged_at + self.timeout:
                return TimerResult(
                    error=LeapConnectionError(
                        f"no answer to a ping and nothing received for {now - self.last_received:.1f} s: "
                        "connection presumed dead"
                    )
                )
            return TimerResult()
        if now >= self.last_received + self.interval:
            self.pinged_at = now
            return TimerResult(ping=True)
        return TimerResult()
