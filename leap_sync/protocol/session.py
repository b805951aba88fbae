"""The client's side of one Leap Edge connection, as a sans-I/O state machine.

:class:`ClientSession` takes the websocket messages a transport read (raw payloads),
decodes and parses them, enforces the order of frames, reacts as the protocol requires
(Identify after Hello, an immediate answer to a tagged heartbeat request,
acknowledgement bookkeeping), matches each AVAILABLE/UNAVAILABLE to the SUBSCRIBE or
UNSUBSCRIBE it answers (:mod:`.answers`), and hands back what the application should see, in wire order,
plus the frames to send. It owns the heartbeat schedule (:meth:`next_timer`,
:meth:`on_timer`). It never touches a socket, a thread or a clock: time comes in as an
argument (monotonic seconds).

Order of frames (anything else is a :class:`LeapProtocolError`):

======================  =================================================================
state                   allowed from the server
======================  =================================================================
``AWAITING_HELLO``      Hello, heartbeat requests and acks
``AWAITING_INIT``       INIT, heartbeat requests and acks, other dispatch events
``CONNECTED``           everything but a second Hello or a second INIT
======================  =================================================================
"""

from __future__ import annotations

import collections
import enum
import operator
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..errors import LeapConnectionError, LeapProtocolError
from ..wire.jsontext import decode_json_many
from ..wire.keepalive import TimerResult
from . import etf, frames
from .answers import Answers
from .codec import Codec, Payload
from .heartbeat import HeartbeatTracker, Pulse
from .models import (
    AvailableEvent,
    HeartbeatAck,
    HeartbeatRequest,
    Hello,
    InitEvent,
    MessageEvent,
    ServerFrame,
    UnavailableEvent,
)
from .parse import parse_messages, parse_server_frame

__all__ = ["Answer", "ClientSession", "ReceiveResult", "SessionState", "TimerResult"]

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_CHUNK = 32
"""Frames decoded and parsed at a time (see :meth:`ClientSession.receive`). Small
enough that a 64 KiB read of 200-byte messages stays under CPython's default young
generation threshold (700 net allocations) most of the time: measured on 200,000
messages, 32 gives about 60 young and 1 full collection where 64 gave 550 and 5 (and
the full ones, 5-10 ms each, are what delays heartbeats under a flat-out stream)."""


class SessionState(enum.Enum):
    """Where one connection stands in the Leap Edge flow."""

    AWAITING_HELLO = "awaiting_hello"
    AWAITING_INIT = "awaiting_init"
    CONNECTED = "connected"


@attrs.frozen
class Answer:
    """The server's answer (``event``: AVAILABLE or UNAVAILABLE) to the request
    :meth:`ClientSession.expect_answer` numbered ``request``."""

    request: int
    event: AvailableEvent | UnavailableEvent


@attrs.define(slots=True)
class ReceiveResult:
    """What one batch of received messages produced.

    ``messages``: channel and direct messages, in wire order. ``events``: every other
    event the application sees (``Hello``, ``InitEvent``, channel events), in wire
    order, with each AVAILABLE/UNAVAILABLE that answers a request wrapped in an
    :class:`Answer` in its place. ``send``: frames the protocol requires sending now,
    in order. ``error``: the protocol error that stopped the batch, if any; everything
    before it is kept.
    """

    messages: list[MessageEvent] = attrs.field(factory=list)
    events: list[ServerFrame | Answer] = attrs.field(factory=list)
    send: list[dict[str, Any]] = attrs.field(factory=list)
    error: LeapProtocolError | None = None
    after: list[int] = attrs.field(factory=list, eq=False)
    """For each of ``events``, how many of ``messages`` arrived before it: the wire's
    order across both lists."""


class ClientSession:
    """Protocol state of one client connection.

    Not thread-safe: a client serialises calls. The token is kept only to build
    Identify and never appears in ``repr``.
    """

    def __init__(self, project_id: str, token: str | None, codec: Codec) -> None:
        self.project_id = project_id
        self._token = token
        self.codec = codec
        self.state = SessionState.AWAITING_HELLO
        self.hello: Hello | None = None
        self.init: InitEvent | None = None
        self.heartbeat: HeartbeatTracker | None = None
        self.tagged_latency: float | None = None
        """The server-measured latency (s) of the last answered tagged request."""
        self.answers = Answers()  # which request each AVAILABLE/UNAVAILABLE answers
        self.write_order: Callable[[int], int | None] | None = None
        """Given an urgent frame's number (1-based, among the text/binary frames this
        session asked to send urgently: Identify, heartbeats), how many non-urgent
        frames were written before it, if known (the transport's
        ``written_before``)."""
        self._urgent = 0  # urgent frames this session asked to send
        self._beats: collections.deque[int] = collections.deque(maxlen=64)  # unacknowledged beats' numbers

    def __repr__(self) -> str:
        return (
            f"ClientSession(project_id={self.project_id!r}, state={self.state.value}, encoding={self.codec.encoding!r})"
        )

    @property
    def connected(self) -> bool:
        """Whether INIT arrived."""
        return self.state is SessionState.CONNECTED

    @property
    def latency(self) -> float | None:
        """Round trip (s) of the last acknowledged heartbeat, ``None`` before one."""
        return self.heartbeat.latency if self.heartbeat is not None else None

    def encode(self, frame: dict[str, Any]) -> tuple[Payload, bool]:
        """Encode a frame to send: ``(payload, binary)``."""
        return self.codec.encode(frame)

    # -- requests that expect an answer (see :mod:`.answers`) ---------------------------

    def expect_answer(self, channel_id: str, subscribe: bool) -> int:
        """Record a SUBSCRIBE (``subscribe=True``) or UNSUBSCRIBE of ``channel_id`` about
        to be sent; its request number (:meth:`.answers.Answers.expect_answer`)."""
        return self.answers.expect_answer(channel_id, subscribe)

    def expect_refusal(self, channel_id: str, wrote: int | None = None) -> int:
        """Record a MESSAGE or SET_CHANNEL_STATE to ``channel_id`` about to be sent,
        which the server may refuse (:meth:`.answers.Answers.expect_refusal`)."""
        return self.answers.expect_refusal(channel_id, wrote)

    def release(self, channel_id: str, request: int) -> bool:
        """A SUBSCRIBE whose caller gave up (:meth:`.answers.Answers.release`)."""
        return self.answers.release(channel_id, request)

    def start(self, now: float) -> list[dict[str, Any]]:
        """Frames to send as soon as the websocket is open: none (Leap Edge speaks
        first, with Hello)."""
        return []

    # -- receiving ---------------------------------------------------------------------

    def receive(self, batch: Iterable[tuple[Payload, bool]], now: float) -> ReceiveResult:
        """Process websocket messages ``(payload, binary)`` received up to ``now``.

        Stops at the first malformed or out-of-order message and reports it in
        ``result.error``; the connection should then be closed.
        """
        result = ReceiveResult()
        if self.heartbeat is not None:
            self.heartbeat.received(now)
        if not isinstance(batch, list):
            batch = list(batch)
        # Decode a chunk of text frames at once, then parse it, then the next chunk:
        # a chunk's decoded frames die before the next is decoded (fewer objects for
        # the cyclic GC to see alive). Stops at the first payload that fails, whose
        # error then follows the frames before it.
        try:
            for low in range(0, len(batch), _CHUNK):
                objs, error = self._decode(batch[low : low + _CHUNK])
                self._parse(objs, now, result)
                del objs  # before the next chunk is decoded
                if error is not None:
                    result.error = error
                    return result
        except LeapProtocolError as exc:
            result.error = exc
        return result

    def _decode(self, batch: list[tuple[Payload, bool]]) -> tuple[list[Any], LeapProtocolError | None]:
        if not any(map(_second, batch)):  # no binary frame
            return decode_json_many(list(map(_first, batch)), self.codec.max_items)
        objs: list[Any] = []
        codec = self.codec
        # ETF terms in binary frames: a chunk of them decoded in one pass and one call
        # when every frame is binary; the rest one at a time through the codec (whose
        # ETF path tries the same one-pass decoder first).
        etf_many = etf.one_pass_many(codec.max_depth, codec.max_items)
        if etf_many is not None and all(map(_second, batch)):
            objs = etf_many(list(map(_first, batch)))
        add = objs.append
        decode = codec.decode
        try:
            for payload, binary in batch[len(objs) :]:
                add(decode(payload, binary))
        except LeapProtocolError as exc:
            return objs, exc
        return objs, None

    def _parse(self, objs: list[Any], now: float, result: ReceiveResult) -> None:
        messages = result.messages
        i = 0
        count = len(objs)
        while i < count:
            if self.state is not SessionState.AWAITING_HELLO:
                i = parse_messages(objs, i, messages)  # the common case, a run at a time
                if i == count:
                    break
            event = parse_server_frame(objs[i])
            i += 1
            if event.__class__ is MessageEvent and self.state is not SessionState.AWAITING_HELLO:
                messages.append(event)
            else:
                self._handle(event, now, result)

    def received_bytes(self, now: float) -> None:
        """Bytes (not necessarily a whole message) arrived at ``now``: liveness."""
        if self.heartbeat is not None:
            self.heartbeat.received(now)

    def _handle(self, event: ServerFrame, now: float, result: ReceiveResult) -> None:
        if self.state is SessionState.AWAITING_HELLO and not isinstance(event, (Hello, HeartbeatAck, HeartbeatRequest)):
            raise LeapProtocolError(f"{_name(event)} before Hello")
        if isinstance(event, HeartbeatAck):
            if event.tag is None:
                if self.heartbeat is not None:
                    self.heartbeat.acked(now)
                if self._beats:
                    beat = self._beats.popleft()
                    written = self.write_order(beat) if self.write_order is not None else None
                    if written is not None:
                        self.answers.fence_written(written)
            elif event.latency is not None:
                self.tagged_latency = event.latency / 1000.0
            return
        if isinstance(event, HeartbeatRequest):
            result.send.append(frames.heartbeat(event.tag))
            self._urgent += 1
            return
        if isinstance(event, Hello):
            if self.hello is not None:
                raise LeapProtocolError("second Hello on one connection", op=1)
            self.hello = event
            self.heartbeat = HeartbeatTracker(event.heartbeat_interval / 1000.0, now)
            self.state = SessionState.AWAITING_INIT
            result.send.append(frames.identify(self.project_id, self._token))
            self._urgent += 1
        elif isinstance(event, InitEvent):
            if self.init is not None:
                raise LeapProtocolError("second INIT on one connection", op=0, event="INIT")
            self.init = event
            self.state = SessionState.CONNECTED
        elif isinstance(event, (AvailableEvent, UnavailableEvent)):
            channel_id = event.channel_id
            if channel_id is None and isinstance(event, AvailableEvent):
                channel_id = event.channel.id
            request = self.answers.match(channel_id, event)
            if request is not None:
                result.events.append(Answer(request, event))
                result.after.append(len(result.messages))
                return
        result.events.append(event)
        result.after.append(len(result.messages))

    # -- the heartbeat schedule ---------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` must run next (monotonic s); ``None``: no schedule."""
        return self.heartbeat.next_beat if self.heartbeat is not None else None

    def on_timer(self, now: float) -> TimerResult:
        """Run the heartbeat schedule at ``now``: a beat to send, or a dead connection."""
        tracker = self.heartbeat
        if tracker is None:
            return TimerResult()
        pulse = tracker.poll(now)
        if pulse is Pulse.WAIT:
            return TimerResult()
        if pulse is Pulse.ZOMBIE:
            silent = now - tracker.last_received
            return TimerResult(
                error=LeapConnectionError(
                    f"heartbeat not acknowledged and nothing received for {silent:.1f} s: connection presumed dead"
                )
            )
        tracker.sent(now)  # before sending: the ack must find it
        self._urgent += 1
        self._beats.append(self._urgent)
        return TimerResult(send=(frames.heartbeat(),))


def _name(event: ServerFrame) -> str:
    if isinstance(event, InitEvent):
        return "INIT"
    return type(event).__name__
