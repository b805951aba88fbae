"""The ``ARRIVALS`` stream: every event and state change of a client in the order it
happened (what ``leap-sync listen`` and ``elstat`` print from).

Events are fed per batch in wire order; a state change is fed when the core records
it, behind the events delivered before it. A frame that causes a transition (Leap's
INIT: CONNECTED) is marked in its batch with :data:`~.handler.STATE_CHANGE`: what
follows the mark is held and fed right behind that transition. Not thread-safe on its
own: the core calls it under its state lock.
"""

from __future__ import annotations

from typing import Any

from ..state import StateInfo
from .handler import ARRIVALS, STATE_CHANGE
from .registry import ChannelRegistry

__all__ = ["Arrivals"]


class Arrivals:
    """The ordered stream of one client, over its channel ``registry``."""

    def __init__(self, registry: ChannelRegistry) -> None:
        self._registry = registry
        self._held: list[Any] = []  # items waiting for the next transition

    def events(self, items: list[Any]) -> None:
        """A batch's events, in wire order (call only when an ``ARRIVALS`` channel
        exists); what follows a ``STATE_CHANGE`` mark waits for :meth:`state`."""
        mark = next((i for i, item in enumerate(items) if item is STATE_CHANGE), None)
        if mark != 0:
            self._registry.feed(ARRIVALS, items if mark is None else items[:mark])
        if mark is not None:
            self._held += [item for item in items[mark + 1 :] if item is not STATE_CHANGE]

    def state(self, info: StateInfo) -> None:
        """A transition, then what was held for it. Never blocks."""
        held, self._held = self._held, []
        if self._registry.references(ARRIVALS):
            self._registry.feed(ARRIVALS, (info, *held))

    def take_held(self) -> list[Any]:
        """What is held, now (the client is finishing: it goes before the last state)."""
        held, self._held = self._held, []
        return held
