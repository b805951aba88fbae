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

__all__ = ["MAX_WAIT", "check_timeout", "poll_ms"]

MAX_WAIT = min(threading.TIMEOUT_MAX, (2**31 - 1) / 1000)
"""The longest wait, in seconds, that threads and ``poll()`` both take."""


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
