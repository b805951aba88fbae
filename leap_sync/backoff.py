"""Reconnect delays: exponential backoff with full jitter.

The ``n``-th consecutive failure waits ``uniform(0, min(cap, base * 2**n))`` seconds
(AWS's "full jitter"), so a fleet of clients that lost the same server does not come
back in lockstep. That count (:attr:`Backoff.failures`) resets only once a connection
stays up ``reset_after`` seconds, so a server that accepts and drops connections
quickly is retried at a growing pace, never in a tight loop.

``max_attempts`` (``None``: unlimited) bounds consecutive *failed attempts*
(:attr:`Backoff.failed_attempts`): an attempt fails when it does not reach the
connected state, or when the server redirects it (Leap's 4006); an attempt that
connects resets that count, however short-lived its connection. The random source
(``random.SystemRandom``, so forked processes draw different delays) is injectable for
tests.
"""

from __future__ import annotations

import copy
import random as _random
from collections.abc import Callable

from .connection.timeouts import check_seconds

__all__ = ["Backoff"]


class Backoff:
    """A backoff policy, and the consecutive-failure counts of whoever uses it.

    A client never counts on the object it is given: it works on its own copy
    (:meth:`for_client`), so one ``Backoff`` may configure any number of clients, each
    with its own count of failures and attempts (the given object's counts stay
    zero)."""

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        *,
        reset_after: float = 30.0,
        max_attempts: int | None = None,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        for name, value in (("base", base), ("cap", cap), ("reset_after", reset_after)):
            check_seconds(value, name, zero=True)
        if max_attempts is not None:
            if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
                raise TypeError(f"max_attempts must be an int or None, not {type(max_attempts).__name__}")
            if max_attempts < 1:
                raise ValueError("max_attempts must be at least 1 (or None)")
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.max_attempts = max_attempts
        # The system's randomness has no state a fork() could copy: forked workers
        # never reconnect in lockstep.
        if uniform is not None and not callable(uniform):
            raise TypeError("uniform must be a callable (low, high) -> float, or None")
        self._uniform = uniform if uniform is not None else _random.SystemRandom().uniform
        self.failures = 0
        """Consecutive failures since a connection was last healthy (drives the delay)."""
        self.failed_attempts = 0
        """Consecutive reconnect attempts that failed (bounded by ``max_attempts``)."""

    def __repr__(self) -> str:
        return (
            f"Backoff(base={self.base}, cap={self.cap}, reset_after={self.reset_after}, "
            f"max_attempts={self.max_attempts}, failures={self.failures}, failed_attempts={self.failed_attempts})"
        )

    def for_client(self) -> Backoff:
        """A copy with the same policy (and random source) and counts at zero: what a
        client uses, so that clients given one ``Backoff`` never share counts."""
        fresh = copy.copy(self)
        fresh.failures = 0
        fresh.failed_attempts = 0
        return fresh

    @property
    def exhausted(self) -> bool:
        """Whether ``max_attempts`` consecutive reconnect attempts have failed."""
        return self.max_attempts is not None and self.failed_attempts >= self.max_attempts

    def attempt_failed(self) -> None:
        """A reconnect attempt failed (it did not connect, or it was redirected)."""
        self.failed_attempts += 1

    def attempt_succeeded(self) -> None:
        """A reconnect attempt connected: the attempt limit counts from zero again."""
        self.failed_attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return float(self._uniform(0.0, ceiling))

    def reset(self) -> None:
        """Forget past failures (a connection proved healthy)."""
        self.failures = 0
        self.failed_attempts = 0
