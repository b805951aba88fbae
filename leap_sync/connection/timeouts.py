"""Timeouts callers give, made safe to wait on.

A thread wait takes at most :data:`threading.TIMEOUT_MAX` seconds and ``poll()`` at
most 2**31 - 1 milliseconds (about 24.8 days); beyond that both raise
``OverflowError``. :data:`MAX_WAIT` is the smaller of the two: a timeout beyond it is
as good as forever and is treated as ``None``.
"""

from __future__ import annotations

import math
import threading
from typing import Any

__all__ = ["MAX_SECONDS", "MAX_WAIT", "check_seconds", "check_timeout", "poll_ms"]

MAX_WAIT = min(threading.TIMEOUT_MAX, (2**31 - 1) / 1000)
"""The longest wait, in seconds, that threads and ``poll()`` both take."""


MAX_SECONDS = 86_400
"""The longest duration an option takes, in seconds (a day)."""


def check_seconds(value: Any, name: str, *, zero: bool = False) -> float:
    """An option's duration in seconds: a number (not a bool) above zero (or from zero
    when ``zero``), at most :data:`MAX_SECONDS`. Raises ``TypeError`` or
    ``ValueError`` (NaN too) naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not ((value >= 0 if zero else value > 0) and value <= MAX_SECONDS):  # NaN fails too
        least = "from 0" if zero else "above 0"
        raise ValueError(f"{name} must be a number of seconds {least}, at most {MAX_SECONDS} (a day)")
    return float(value)


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """A caller's timeout, in seconds, ready to wait on: ``None`` waits forever (and
    so does anything beyond :data:`MAX_WAIT`); a negative one does not wait. Raises
    ``TypeError`` for a non-number and ``ValueError`` for NaN."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    if isinstance(timeout, float) and math.isnan(timeout):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if timeout > MAX_WAIT:
        return None
    if timeout <= 0:  # compared as is: an int of any size, never converted
        return 0.0
    return float(timeout)


def poll_ms(seconds: float | None) -> int | None:
    """``seconds`` as the milliseconds ``poll()`` takes (rounded up, at most
    2**31 - 1); ``None`` stays ``None``."""
    if seconds is None:
        return None
    return min(2**31 - 1, max(0, int(seconds * 1000) + 1))
