"""Event channels: what ``message_event_channel()`` and ``channel_event_channel()``
return, the Python counterpart of the Go SDK's Go channels.

The client's I/O thread appends each received batch in wire order; any number of
consumer threads take events out. The producer never blocks: a channel is unbounded by
default, and a bounded one applies its overflow policy instead of waiting.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from .connection.timeouts import check_timeout
from .errors import ChannelClosed, ChannelOverflowError

__all__ = ["OVERFLOW_POLICIES", "EventChannel"]

T = TypeVar("T")
OVERFLOW_POLICIES = ("drop_oldest", "error")


class EventChannel(Generic[T]):
    """A queue of events fed by a client, in the order the server sent them.

    - The consumer API is :class:`queue.Queue`'s: ``get(block=True, timeout=None)``,
      ``get_nowait()``, ``qsize()``, ``empty()``. ``get`` raises :class:`queue.Empty`
      when nothing came in time, and :class:`ChannelClosed` once the channel is closed
      and drained.
    - Iterating yields events until the channel is closed and drained.
    - ``maxsize=0`` (default) is unbounded. With ``maxsize=N`` the ``overflow`` policy
      decides: ``"drop_oldest"`` discards the oldest events (counted in
      :attr:`dropped`); ``"error"`` keeps what fits and closes the channel with
      :class:`ChannelOverflowError`, which ``get()`` and iteration raise after the
      events it holds, so a loss is never silent.
    - ``close()`` detaches this channel from its client; the events it holds can still
      be taken.
    - The client holds its channels weakly: one the application no longer references
      (dropped without ``close()``) is freed and no longer fed. A consumer blocked in
      ``get()`` or iterating holds the channel, so a channel in use is never dropped.

    ``get`` never takes a lock while events are waiting, and the producer takes the
    lock once per batch, not per event.
    """

    def __init__(
        self,
        maxsize: int = 0,
        overflow: str = "drop_oldest",
        *,
        on_close: Callable[[EventChannel[T]], None] | None = None,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError("maxsize must not be negative")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        """Events discarded by the ``drop_oldest`` policy."""
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._error: ChannelClosed | None = None
        self._on_close = on_close
        self._pid = os.getpid()  # a copy in a forked child has no producer

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventChannel {state} qsize={len(self._items)} maxsize={self.maxsize} dropped={self.dropped}>"

    # -- consumer side -----------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next event, as :meth:`queue.Queue.get`: with ``block`` true, wait up to
        ``timeout`` seconds (``None``: as long as it takes); with ``block`` false, take
        one only if it is there (``timeout`` is ignored).

        Raises :class:`queue.Empty` when nothing came in time, :class:`ChannelClosed`
        (or :class:`ChannelOverflowError`) once the channel is closed and drained, and
        ``ValueError`` for a negative ``timeout``.
        """
        try:
            return self._items.popleft()
        except IndexError:
            pass
        if not block:
            timeout = 0.0
        elif timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        else:
            timeout = check_timeout(timeout)  # NaN is refused; beyond MAX_WAIT, forever
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                try:
                    return self._items.popleft()
                except IndexError:
                    pass
                if self._closed:
                    raise self._error if self._error is not None else ChannelClosed("event channel is closed")
                if os.getpid() != self._pid:
                    raise ChannelClosed("this event channel belongs to another process: nothing feeds it after fork()")
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    self._cond.wait(remaining)

    def get_nowait(self) -> T:
        """The next event if one is waiting; else :class:`queue.Empty` (or
        :class:`ChannelClosed` when closed and drained). Same as ``get(False)``."""
        return self.get(False)

    def get_many(self, max: int, timeout: float | None = None, block: bool = True) -> list[T]:
        """Up to ``max`` events at once, oldest first (a list of at least one).

        Waits for the first event exactly as :meth:`get` does (``block``, ``timeout``,
        and the same exceptions: :class:`queue.Empty` when nothing came in time,
        :class:`ChannelClosed` or :class:`ChannelOverflowError` once the channel is
        closed and drained); then takes, without waiting, whatever else is already
        there, up to ``max`` in all. Events are taken in order and none is skipped or
        taken twice, even with several consumers. ``max`` must be a positive ``int``
        (else ``TypeError`` or ``ValueError``).
        """
        if isinstance(max, bool) or not isinstance(max, int):
            raise TypeError(f"max must be an int, not {type(max).__name__}")
        if max < 1:
            raise ValueError("max must be at least 1")
        first = self.get(block, timeout)
        out = [first]
        popleft = self._items.popleft
        try:
            for _ in range(max - 1):
                out.append(popleft())
        except IndexError:
            pass
        return out

    def __iter__(self) -> Iterator[T]:
        """Yield events until the channel is closed and drained (re-raising
        :class:`ChannelOverflowError`)."""
        while True:
            try:
                yield self.get()
            except ChannelOverflowError:
                raise
            except ChannelClosed:
                return

    def qsize(self) -> int:
        """Events waiting."""
        return len(self._items)

    def empty(self) -> bool:
        """Whether no event is waiting (as :meth:`queue.Queue.empty`, a snapshot)."""
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether no more events will be added."""
        return self._closed

    def close(self) -> None:
        """Stop receiving events (detach from the client). Idempotent; the events
        already held can still be taken."""
        self._finish(None)
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)

    # -- producer side (the client) ----------------------------------------------------

    def _put_many(self, events: Sequence[T]) -> None:
        """Append a batch (the client's I/O thread). Never blocks on consumers."""
        if self._closed:
            return
        with self._cond:
            items = self._items
            maxsize = self.maxsize
            if maxsize and len(items) + len(events) > maxsize:
                if self.overflow == "drop_oldest":
                    # Make room first, so the channel never holds more than maxsize (a
                    # consumer reads without the lock): drop the oldest held events, and
                    # the oldest of the batch when the batch alone is too long.
                    if len(events) > maxsize:
                        self.dropped += len(events) - maxsize
                        events = events[-maxsize:]
                    while len(items) + len(events) > maxsize:
                        try:
                            items.popleft()
                        except IndexError:  # a consumer took it meanwhile: not a drop
                            break
                        self.dropped += 1
                    items.extend(events)
                else:
                    items.extend(events[: max(0, maxsize - len(items))])
                    self._closed = True
                    self._error = ChannelOverflowError(
                        f"event channel overflowed its maxsize of {maxsize}: events were lost"
                    )
            else:
                items.extend(events)
            self._cond.notify_all()

    def _finish(self, error: ChannelClosed | None) -> None:
        """No more events will come; wake every waiting consumer."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()
