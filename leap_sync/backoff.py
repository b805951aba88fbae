"""Reconnect delays: exponential backoff with full jitter.

The ``n``-th consecutive failure waits ``uniform(0, min(cap, base * 2**n))`` seconds
(AWS's "full jitter"), so a fleet of clients that lost the same server does not come
back in lockstep. The count resets once a connection stays up ``reset_after``
seconds. ``max_attempts`` (``None``: unlimited) bounds consecutive failed attempts.
The random source is injectable for tests.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Backoff policy and its consecutive-failure count (one per client)."""

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        *,
        reset_after: float = 30.0,
        max_attempts: int | None = None,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        if base < 0 or cap < 0 or reset_after < 0:
            raise ValueError("base, cap and reset_after must not be negative")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.max_attempts = max_attempts
        self._uniform = uniform if uniform is not None else _random.Random().uniform
        self.failures = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(base={self.base}, cap={self.cap}, reset_after={self.reset_after}, "
            f"max_attempts={self.max_attempts}, failures={self.failures})"
        )

    @property
    def exhausted(self) -> bool:
        """Whether ``max_attempts`` consecutive reconnect attempts have failed (the
        failure that lost the connection counts as the first, before any attempt)."""
        return self.max_attempts is not None and self.failures > self.max_attempts

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return float(self._uniform(0.0, ceiling))

    def reset(self) -> None:
        """Forget past failures (a connection proved healthy)."""
        self.failures = 0
