"""The server's heartbeat rule, on a clock the caller supplies (seconds, monotonic).

Leap Edge does not publish its rule; this one is modelled on what the official clients
do, so that every one of them stays connected while a client that loses its schedule
is closed 4007:

- **The Hello grid.** Hello is sent at ``start``; beat ``k`` (``k >= 1``) is due at
  ``start + k * interval``, and its *window* is that instant plus or minus
  ``tolerance``. A good client schedules on a monotonic clock and lands within a few
  milliseconds of each grid point.
- **Missed beats close.** Each window must see a beat by its end: reaching
  ``start + k * interval + tolerance`` without a beat since that window opened is
  out of sync (4007, "heartbeat missed"). A client that sleeps ``interval`` in a loop
  drifts later every beat and misses a window once its drift exceeds ``tolerance``.
- **Extra beats are harmless** (the default, *tolerant* mode). A beat outside every
  window, or a second one in the same window, is acknowledged and otherwise ignored:
  the official JavaScript client (``@onehop/leap-edge-js`` 1.0.11) sends one extra,
  off-schedule beat when an acknowledgement is 5 s late and stays connected if that
  beat is acknowledged within 750 ms, and a raw client may send one right after INIT
  to see an ack. A beat counts for every window that has opened by the time it
  arrives, so an extra beat never makes a later on-time beat look like a double one.
- **Strict mode** (opt-in, to test a client's schedule): after Identify, every beat
  must land in the window of the next beat due, so an early beat or a second beat for
  the same grid point is out of sync too (4007, "heartbeat <drift> ms off schedule").
- **Before Identify** only the identify timeout applies: beats are acknowledged and
  count for the windows they fall in, but no window that opens before Identify is
  enforced and no beat is judged. :meth:`DriftMonitor.identified` arms the rule.

The tolerance should stay below half the interval, so that windows do not overlap;
a larger one simply accepts any beat within it.
"""

from __future__ import annotations

import math

__all__ = ["DriftMonitor"]


class DriftMonitor:
    """The server's view of one client's heartbeat schedule (see the module docstring).

    Times are in seconds on the caller's monotonic clock; nothing here reads a clock or
    touches a socket. ``interval`` and ``tolerance`` must be positive.
    """

    def __init__(self, interval: float, tolerance: float, start: float, *, strict: bool = False) -> None:
        if not interval > 0 or not tolerance > 0:
            raise ValueError("heartbeat interval and tolerance must be positive")
        self.interval = interval
        self.tolerance = tolerance
        self.start = start
        self.strict = strict
        self.armed = False
        """Whether Identify has happened (windows are enforced only from then on)."""
        self.due = 1
        """The grid index of the next beat that must arrive."""
        self.beats = 0
        self.last_beat: float | None = None
        self.last_drift = 0.0
        """Offset (s) of the last beat from the grid point of the beat it was due as."""

    def __repr__(self) -> str:
        mode = "strict" if self.strict else "tolerant"
        return f"DriftMonitor({mode}, interval={self.interval}, due={self.due}, armed={self.armed})"

    def _grid(self, k: int) -> float:
        return self.start + k * self.interval

    def _opened_by(self, now: float) -> int:
        """The highest grid index whose window has opened at ``now`` (0 for none)."""
        return max(0, math.floor((now - self.start + self.tolerance) / self.interval))

    def identified(self, now: float) -> None:
        """Identify happened at ``now``: enforce every window that opens from now on."""
        if self.armed:
            return
        self.armed = True
        first = max(1, math.ceil((now - self.start + self.tolerance) / self.interval))
        # ``ceil`` can land one early when ``now`` sits on a window's opening instant.
        while self._grid(first) - self.tolerance < now:
            first += 1
        self.due = max(self.due, first)

    def beat(self, now: float) -> bool:
        """Record a plain beat at ``now``; ``False`` when it is out of sync (only in
        strict mode, once armed: a beat outside the window of the beat due)."""
        self.beats += 1
        self.last_beat = now
        self.last_drift = now - self._grid(self.due)
        if self.strict and self.armed:
            if abs(self.last_drift) > self.tolerance:
                return False
            self.due += 1
            return True
        self.due = max(self.due, self._opened_by(now) + 1)
        return True

    @property
    def deadline(self) -> float:
        """The instant by which the next beat must have arrived (``inf`` before
        :meth:`identified`)."""
        if not self.armed:
            return math.inf
        return self._grid(self.due) + self.tolerance
