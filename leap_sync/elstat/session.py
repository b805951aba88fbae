"""The client's side of one Elstat streaming connection, as a sans-I/O state machine.

Elstat has no hello and no heartbeats: the connection is usable once upgraded
(:attr:`ElstatSession.connected` from the start), and liveness comes from websocket
pings after a quiet interval (:class:`~leap_sync.wire.keepalive.PingKeepalive`).
SUBSCRIBED and UNSUBSCRIBED answer requests in the order they were sent, per opcode,
naming the channels they confirm (a subset of those asked): :meth:`ElstatSession.expect_reply`
numbers a request, and :meth:`receive` hands back each reply with the number of the
oldest pending request of its kind that asked for every channel it names. A request
the server never answers therefore never shifts the answers behind it onto the wrong
calls; a reply that answers no pending request is unsolicited (number ``None``).
Time comes in as an argument.
"""

from __future__ import annotations

import collections
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
    ``replies`` as ``(request number or None, reply)``, ``unknown_ops`` (opcodes
    this library does not know, skipped), ``send`` (always empty: Elstat asks nothing
    back), and the protocol ``error`` that stopped the batch, if any."""

    data: list[DataEvent] = attrs.field(factory=list)
    incidents: list[IncidentEvent] = attrs.field(factory=list)
    replies: list[tuple[int | None, Reply]] = attrs.field(factory=list)
    unknown_ops: list[int] = attrs.field(factory=list)
    send: list[dict[str, Any]] = attrs.field(factory=list)
    error: LeapProtocolError | None = None


class ElstatSession:
    """Protocol state of one Elstat connection. Not thread-safe: the client
    serialises calls."""

    connected = True

    def __init__(self, ping_interval: float, ping_timeout: float, max_items: int | None = None) -> None:
        self._ping_interval = ping_interval
        self._max_items = max_items  # the most values one message may decode to
        self._ping_timeout = ping_timeout
        self.keepalive: PingKeepalive | None = None
        self._pending: dict[Op, collections.deque[tuple[int, frozenset[str]]]] = {
            Op.SUBSCRIBE: collections.deque(),
            Op.UNSUBSCRIBE: collections.deque(),
        }
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
        the order the frames go out)."""
        self._requests += 1
        self._pending[op].append((self._requests, frozenset(channels)))
        return self._requests

    def _answered(self, reply: Reply) -> int | None:
        """The number of the oldest pending request ``reply`` can answer (it asked
        for every channel the reply names), taken off the pending list."""
        pending = self._pending[Op.SUBSCRIBE if reply.op is Op.SUBSCRIBED else Op.UNSUBSCRIBE]
        named = set(reply.channels)
        for index, (number, asked) in enumerate(pending):
            if named <= asked:
                del pending[index]
                return number
        return None

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
                elif isinstance(event, Reply):
                    result.replies.append((self._answered(event), event))
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
