"""The client's side of one Elstat streaming connection, as a sans-I/O state machine.

Elstat has no hello and no heartbeats: the connection is usable once upgraded
(:attr:`ElstatSession.connected` from the start), and liveness comes from websocket
pings after a quiet interval (:class:`~leap_sync.wire.keepalive.PingKeepalive`).
SUBSCRIBED and UNSUBSCRIBED answer requests, per opcode, naming the channels they
confirm (a subset of those asked), and nothing else: the wire cannot tell apart two
requests that name the same channel. So the session keeps them apart:

- :meth:`ElstatSession.expect_reply` numbers a request and records the channels it
  *claims*. A client asks :meth:`ElstatSession.sharing` first and sends no channel
  whose latest pending request is of the same kind and still awaited: it shares that
  request's answer instead. Two awaited requests of one kind never claim the same
  channel, so a reply naming channels belongs to exactly one request, whatever order
  the server answers in.
- :meth:`ElstatSession.abandon` marks a request nobody waits for any more (its caller
  gave up). Its answer still counts when it comes, but a later request of the same
  kind naming one of its channels takes that channel over (the abandoned request
  forgets it, and is forgotten once it claims none): a retry is never left behind a
  request the server may never answer.
- :meth:`receive` hands back each reply with the number of the pending request of its
  kind that claims every channel it names and the channels that request claimed; a
  reply that answers no pending request is unsolicited (number ``None``). A reply
  naming no channel could answer any pending request of its kind: it is held until
  the wire tells, i.e. until as many such replies wait as requests of that kind are
  pending (the others being answered by the replies naming their channels); then each
  of those requests is answered by one of them. So a request is never handed an
  empty answer that was another's while its own confirmation follows, unless the
  other is abandoned: an abandoned request (which the server may never answer) never
  holds a reply from a live call, so once as many such replies wait as live requests
  of that kind are pending, the live ones are answered first (oldest first), then
  abandoned ones, oldest first, with any left.

Time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import LeapProtocolError
from ..wire.jsontext import encode_json
from ..wire.keepalive import PingKeepalive, TimerResult
from .protocol import DataEvent, IncidentEvent, Op, Reply, parse_server_frame

__all__ = ["ElstatResult", "ElstatSession"]


@attrs.define(slots=True)
class ElstatResult:
    """What one batch produced, in wire order per kind: ``data``, ``incidents``,
    ``replies`` as ``(request number or None, reply, channels the request claimed)``, ``unknown_ops`` (opcodes
    this library does not know, skipped), ``send`` (always empty: Elstat asks nothing
    back), and the protocol ``error`` that stopped the batch, if any."""

    data: list[DataEvent] = attrs.field(factory=list)
    incidents: list[IncidentEvent] = attrs.field(factory=list)
    replies: list[tuple[int | None, Reply, frozenset[str]]] = attrs.field(factory=list)
    unknown_ops: list[int] = attrs.field(factory=list)
    send: list[dict[str, Any]] = attrs.field(factory=list)
    error: LeapProtocolError | None = None
    incidents_after: list[int] = attrs.field(factory=list, eq=False)
    """For each of ``incidents``, how many of ``data`` arrived before it: the wire's
    order across both lists."""


class _Pending:
    """A request awaiting its reply: what it claims, and whether anyone still waits."""

    __slots__ = ("abandoned", "claimed", "number", "op")

    def __init__(self, number: int, op: Op, claimed: set[str]) -> None:
        self.number = number
        self.op = op
        self.claimed = claimed
        self.abandoned = False


class ElstatSession:
    """Protocol state of one Elstat connection. Not thread-safe: the client
    serialises calls."""

    connected = True

    def __init__(self, ping_interval: float, ping_timeout: float, max_items: int | None = None) -> None:
        self._ping_interval = ping_interval
        self._max_items = max_items  # the most values one message may decode to
        self._ping_timeout = ping_timeout
        self.keepalive: PingKeepalive | None = None
        self._pending: dict[Op, list[_Pending]] = {Op.SUBSCRIBE: [], Op.UNSUBSCRIBE: []}  # oldest first
        self._latest: dict[str, _Pending] = {}  # the newest pending request claiming each channel
        self._empty: dict[Op, list[Reply]] = {Op.SUBSCRIBE: [], Op.UNSUBSCRIBE: []}  # held replies naming none
        self._requests = 0

    def __repr__(self) -> str:
        return f"ElstatSession(pending={sum(len(q) for q in self._pending.values())})"

    def encode(self, frame: dict[str, Any]) -> tuple[str, bool]:
        """Elstat frames are JSON text."""
        return encode_json(frame), False

    def start(self, now: float) -> list[dict[str, Any]]:
        """Nothing to send on open (the client re-subscribes through its requests)."""
        self.keepalive = PingKeepalive(self._ping_interval, self._ping_timeout, now)
        return []

    def expect_reply(self, op: Op, channels: Iterable[str]) -> int:
        """Number a SUBSCRIBE or UNSUBSCRIBE of ``channels`` about to be sent (call in
        the order the frames go out). It takes each channel over from the abandoned
        requests of its kind that claim it."""
        names = set(channels)
        pending = self._pending[op]
        for request in [r for r in pending if r.abandoned and not r.claimed.isdisjoint(names)]:
            request.claimed -= names
            if not request.claimed:
                pending.remove(request)
                if self._empty[op]:
                    self._empty[op].pop()  # perhaps its answer: never one to hand a later request
        self._requests += 1
        request = _Pending(self._requests, op, names)
        pending.append(request)
        for name in names:
            self._latest[name] = request
        return self._requests

    def sharing(self, op: Op, channel: str) -> int | None:
        """The number of the request whose answer a new ``op`` request naming
        ``channel`` should share rather than send it again: the newest pending request
        claiming it, if it is of the same kind and not abandoned; else ``None``."""
        request = self._latest.get(channel)
        if request is None or request.op is not op or request.abandoned or channel not in request.claimed:
            return None
        return request.number

    def abandon(self, number: int) -> bool:
        """Mark request ``number`` as awaited by nobody; ``False`` if it is not pending."""
        for request in (*self._pending[Op.SUBSCRIBE], *self._pending[Op.UNSUBSCRIBE]):
            if request.number == number:
                request.abandoned = True
                return True
        return False

    def _answered(self, reply: Reply) -> list[tuple[int | None, Reply, frozenset[str]]]:
        """The replies ``reply`` settles, as :attr:`ElstatResult.replies` lists them:
        itself, answering the pending request that claims every channel it names
        (taken off the pending list, with the channels it claimed), or unsolicited;
        none while it names no channel and the wire cannot tell yet whose it is; and
        the held replies naming none, once the pending requests they answer are told."""
        op = Op.SUBSCRIBE if reply.op is Op.SUBSCRIBED else Op.UNSUBSCRIBE
        pending = self._pending[op]
        settled: list[tuple[int | None, Reply, frozenset[str]]] = []
        if not reply.channels and pending:
            self._empty[op].append(reply)
        else:
            named = set(reply.channels)
            index = next((i for i, request in enumerate(pending) if named <= request.claimed), None)
            settled.append(self._take(op, index, reply) if index is not None else (None, reply, frozenset()))
        held = self._empty[op]
        if held:
            live = [request for request in pending if not request.abandoned]
            if len(held) >= len(pending):
                order = list(pending)
            elif live and len(held) >= len(live):
                # the others are abandoned (and perhaps never answered): live calls first
                order = live + [request for request in pending if request.abandoned][: len(held) - len(live)]
            else:
                order = []
            for request in order:
                settled.append(self._take(op, pending.index(request), held.pop(0)))
            if not pending:
                held.clear()
        return settled

    def _take(self, op: Op, index: int, reply: Reply) -> tuple[int, Reply, frozenset[str]]:
        """Take pending request ``index`` of ``op`` off the list: ``reply`` answers it."""
        request = self._pending[op].pop(index)
        for name in request.claimed:
            if self._latest.get(name) is request:
                del self._latest[name]
        return request.number, reply, frozenset(request.claimed)

    def receive(self, batch: Iterable[tuple[str | bytes, bool]], now: float) -> ElstatResult:
        """Parse received messages; stops at the first malformed one (``error``)."""
        result = ElstatResult()
        self.received_bytes(now)
        try:
            for payload, _binary in batch:
                event = parse_server_frame(payload, self._max_items)
                if isinstance(event, DataEvent):
                    result.data.append(event)
                elif isinstance(event, IncidentEvent):
                    result.incidents.append(event)
                    result.incidents_after.append(len(result.data))
                elif isinstance(event, Reply):
                    result.replies.extend(self._answered(event))
                else:
                    result.unknown_ops.append(event.op)
        except LeapProtocolError as exc:
            result.error = exc
        return result

    def received_bytes(self, now: float) -> None:
        if self.keepalive is not None:
            self.keepalive.received(now)

    def next_timer(self) -> float | None:
        return self.keepalive.next_timer if self.keepalive is not None else None

    def on_timer(self, now: float) -> TimerResult:
        return self.keepalive.on_timer(now) if self.keepalive is not None else TimerResult()
