"""Which request an AVAILABLE or UNAVAILABLE answers, on one Leap Edge connection:
sans-I/O bookkeeping for :class:`~leap_sync.protocol.session.ClientSession`.

The server answers one connection's SUBSCRIBE and UNSUBSCRIBE in order, per channel,
refuses a MESSAGE or SET_CHANNEL_STATE to a channel the connection is not subscribed to
(UNAVAILABLE ``UNKNOWN``), may leave an UNSUBSCRIBE unanswered, and pushes
AVAILABLE/UNAVAILABLE of its own. :class:`Answers` records what was sent in that order
and tells, for each answer, the request it belongs to or that it is a push
(:meth:`Answers.match`, whose docstring holds the rules). Not thread-safe; no clock.
"""

from __future__ import annotations

import collections

import attrs

from .models import AvailableEvent, UnavailableEvent

__all__ = ["Answers"]


@attrs.define(slots=True, eq=False)
class _Request:
    """One entry of a channel's queue of requests awaiting an answer: a SUBSCRIBE
    (``kind`` True), an UNSUBSCRIBE (False), or a run of ``count`` consecutive
    refusable frames (``kind`` None: MESSAGE / SET_CHANNEL_STATE; a run costs an int,
    however long)."""

    number: int
    kind: bool | None
    sent: int
    """When its (last) frame was queued, counted over every request and refusable
    frame of the connection: the order the server processes them in."""
    count: int = 1
    wrote: int | None = None
    """(A run.) Its last frame's number among the connection's non-urgent frames, in
    write order, if known."""
    orphan: bool = False
    """A SUBSCRIBE whose caller gave up (:meth:`ClientSession.release`): still matched,
    so its late answer is never taken for a push, but never made to hold an answer a
    live call could take."""


class Answers:
    """The requests of one connection awaiting an answer, per channel, in the order sent."""

    def __init__(self) -> None:
        self._pending: dict[str, collections.deque[_Request]] = {}
        self._requests = 0
        self._sent = 0  # requests and refusable frames queued (see _Request.sent)

    def expect_answer(self, channel_id: str, subscribe: bool) -> int:
        """Record a SUBSCRIBE (``subscribe=True``) or UNSUBSCRIBE of ``channel_id`` about
        to be sent, and return its request number. Call in the order the frames go
        out: answers are matched to requests in that order, per channel."""
        self._requests += 1
        self._sent += 1
        request = _Request(self._requests, subscribe, self._sent)
        self._pending.setdefault(channel_id, collections.deque()).append(request)
        return self._requests

    def expect_refusal(self, channel_id: str, wrote: int | None = None) -> int:
        """Record a MESSAGE or SET_CHANNEL_STATE to ``channel_id`` about to be sent
        (whether or not this client believes it is subscribed: the server may have
        dropped the channel meanwhile): the server refuses it with UNAVAILABLE
        ``UNKNOWN`` if it is not subscribed when the frame arrives. That refusal must
        not answer a SUBSCRIBE sent after it. Consecutive ones are counted (constant
        memory); they are settled (accepted) when an answer to a request sent after
        them (on any channel) arrives, or the acknowledgement of a heartbeat written
        after them (``wrote``: the frame's number among the connection's non-urgent
        frames, see :attr:`ClientSession.write_order`). Returns the run's request number."""
        queue = self._pending.setdefault(channel_id, collections.deque())
        self._sent += 1
        if queue and queue[-1].kind is None:
            queue[-1].count += 1
            queue[-1].sent = self._sent
            queue[-1].wrote = wrote
            return queue[-1].number
        self._requests += 1
        queue.append(_Request(self._requests, None, self._sent, wrote=wrote))
        return self._requests

    def release(self, channel_id: str, request: int) -> bool:
        """Mark request ``request`` (a SUBSCRIBE of ``channel_id`` whose caller gave up)
        an orphan. It stays in matching, so its late answer is an answer (to nobody),
        never taken for a server push; but it never holds an answer from a live
        SUBSCRIBE behind it: an AVAILABLE goes to the oldest live SUBSCRIBE (the
        channel is subscribed either way), a refusal to the oldest orphan (the live
        call keeps waiting for the next answer; see :meth:`match`). ``False`` if it
        was answered (or released) already."""
        for entry in self._pending.get(channel_id, ()):
            if entry.number == request and entry.kind and not entry.orphan:
                entry.orphan = True
                return True
        return False

    def match(self, channel_id: str | None, event: AvailableEvent | UnavailableEvent) -> int | None:
        """The request ``event`` answers, or ``None`` for a push from the server.

        The server answers one connection's requests in order, per channel:

        - an UNAVAILABLE ``UNKNOWN`` refuses the oldest refusable MESSAGE or
          SET_CHANNEL_STATE if no SUBSCRIBE is ahead of it, else that SUBSCRIBE;
        - AVAILABLE (subscribed) or any other non-graceful UNAVAILABLE (refused)
          answers the oldest pending SUBSCRIBE;
        - what was sent before the request an answer matches was accepted or will
          never be answered (a server may not answer an UNSUBSCRIBE) and is
          forgotten; after an AVAILABLE, so are the refusable frames right behind it
          (the server accepts them);
        - a graceful UNAVAILABLE answers the oldest UNSUBSCRIBE if no SUBSCRIBE is
          ahead of it (refusable frames before it were accepted);
        - anything else is a push (another connection of the session unsubscribed, a
          channel went away).

        Orphans (released SUBSCRIBEs) are matched like any request, with one
        exception: when the answer would go to an orphan while a live SUBSCRIBE of the
        channel waits behind it, an AVAILABLE goes to the oldest live SUBSCRIBE (which
        is right whichever request it answers: the channel is subscribed) and leaves
        the orphan in place for the next answer; a refusal goes to the orphan (the
        live call waits on for its own answer; should none come before it gives up, it
        may report this refusal).
        """
        if channel_id is None:
            return None
        queue = self._pending.get(channel_id)
        if not queue:
            return None
        unavailable = event if isinstance(event, UnavailableEvent) else None
        if unavailable is not None and unavailable.graceful:
            wanted: tuple[bool | None, ...] = (False, True)  # the first UNSUBSCRIBE, unless a SUBSCRIBE is ahead
        elif unavailable is not None and unavailable.error_code == "UNKNOWN":
            wanted = (None, True)  # the first refusable frame or SUBSCRIBE
        else:
            wanted = (True,)  # the first SUBSCRIBE
        found = next((i for i, entry in enumerate(queue) if entry.kind in wanted), None)
        if found is None or (unavailable is not None and unavailable.graceful and queue[found].kind):
            return None
        if isinstance(event, AvailableEvent) and queue[found].orphan:
            live = next((i for i in range(found + 1, len(queue)) if queue[i].kind and not queue[i].orphan), None)
            if live is not None:
                request = queue[live].number
                del queue[live]
                self._fence(queue[found].sent)  # (it may be the orphan's answer)
                return request
        for _ in range(found):
            queue.popleft()  # accepted, or never to be answered
        entry = queue[0]
        request = entry.number
        if entry.kind is not None:
            self._fence(entry.sent)
        if entry.kind is None and entry.count > 1:
            entry.count -= 1  # one of a run refused
        else:
            queue.popleft()
        if isinstance(event, AvailableEvent):
            while queue and queue[0].kind is None:
                queue.popleft()  # sent behind a SUBSCRIBE that succeeded: accepted
        if not queue:
            del self._pending[channel_id]
        return request

    def _fence(self, sent: int) -> None:
        """A request queued as number ``sent`` (of :attr:`_Request.sent`) was
        answered: the server processes a connection's frames in order (and data frames
        are written in the order queued), so every refusable frame queued before it,
        on any channel, was accepted (its refusal would have come first): forget
        them."""
        for channel_id, queue in list(self._pending.items()):
            kept = [entry for entry in queue if entry.kind is not None or entry.sent > sent]
            if len(kept) != len(queue):
                queue.clear()
                queue.extend(kept)
                if not queue:
                    del self._pending[channel_id]

    def fence_written(self, written: int) -> None:
        """A heartbeat written after ``written`` non-urgent frames was acknowledged:
        every refusable frame written before it was accepted (the server processes
        frames in the order they were written: a refusal would have come first)."""
        for channel_id, queue in list(self._pending.items()):
            kept = [entry for entry in queue if entry.kind is not None or entry.wrote is None or entry.wrote > written]
            if len(kept) != len(queue):
                queue.clear()
                queue.extend(kept)
                if not queue:
                    del self._pending[channel_id]
