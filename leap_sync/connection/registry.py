"""The event channels a client feeds, held weakly.

A channel the application no longer references (dropped without ``close()``, say by a
request handler that returned) is freed by the garbage collector and stops being fed;
a consumer blocked in ``get()`` or iterating holds its channel, so a channel in use is
never dropped. Per kind, the registry is a tuple of weak references, replaced (under
the client's lock) when a channel is added, closed or freed: the reader (the I/O
thread, once per batch) walks the current tuple without a lock and skips references
whose channel is gone.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ..channels import EventChannel

__all__ = ["ChannelRegistry"]

_Ref = weakref.ref[EventChannel[Any]]


class ChannelRegistry:
    """The channels of one client, by kind (``lock`` is the client's: every change
    is made under it; :meth:`feed` and :meth:`channels` take no lock)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._refs: dict[str, tuple[_Ref, ...]] = {}
        self._on_release = _releaser(weakref.ref(self))  # holds the registry weakly: no cycle

    def add(self, kind: str, channel: EventChannel[Any]) -> None:
        """Feed ``channel`` with events of ``kind`` while it is referenced (under ``lock``)."""
        with self._lock:
            self._prune()
            # A new dict, never changed once published: readers walk it without the lock.
            self._refs = {**self._refs, kind: (*self._refs.get(kind, ()), weakref.ref(channel, self._on_release))}

    def feed(self, kind: str, events: Sequence[Any]) -> None:
        """Append ``events`` to every channel of ``kind`` still referenced (the I/O
        thread, once per batch; lock-free, never blocks)."""
        for ref in self._refs.get(kind, ()):
            channel = ref()
            if channel is not None:
                channel._put_many(events)

    def channels(self, kind: str) -> tuple[EventChannel[Any], ...]:
        """The channels of ``kind`` still referenced (a snapshot; lock-free)."""
        return tuple(c for c in (ref() for ref in self._refs.get(kind, ())) if c is not None)

    def by_kind(self) -> dict[str, tuple[EventChannel[Any], ...]]:
        """Every channel still referenced, by kind (a snapshot; lock-free)."""
        return {kind: self.channels(kind) for kind in tuple(self._refs)}

    def references(self, kind: str) -> int:
        """How many references of ``kind`` are kept (freed channels not yet pruned included)."""
        return len(self._refs.get(kind, ()))

    def all(self) -> list[EventChannel[Any]]:
        """Every channel still referenced, of every kind."""
        return [c for refs in tuple(self._refs.values()) for c in (ref() for ref in refs) if c is not None]

    def detach(self, channel: EventChannel[Any]) -> None:
        """Stop feeding ``channel`` (its ``close()``)."""
        with self._lock:
            self._refs = {
                kind: kept
                for kind, refs in self._refs.items()
                if (kept := tuple(ref for ref in refs if (c := ref()) is not None and c is not channel))
            }

    def clear(self) -> list[EventChannel[Any]]:
        """Stop feeding every channel; returns those still referenced (to end them)."""
        with self._lock:
            channels = self.all()
            self._refs = {}
        return channels

    def _prune(self) -> None:
        """(Under ``lock``.) Drop the references of freed channels."""
        self._refs = {
            kind: kept for kind, refs in self._refs.items() if (kept := tuple(ref for ref in refs if ref() is not None))
        }

    def _released(self) -> None:
        """A channel was freed, on whichever thread dropped its last reference, maybe
        inside any code: so this never blocks. Its reference is pruned now if ``lock``
        is free, else by the next change; :meth:`feed` skips it meanwhile."""
        if self._lock.acquire(blocking=False):
            try:
                self._prune()
            finally:
                self._lock.release()


def _releaser(registry: weakref.ref[ChannelRegistry]) -> Callable[[_Ref], None]:
    """The callback of a registry's weak references."""

    def released(_: _Ref) -> None:
        target = registry()
        if target is not None:
            target._released()

    return released
