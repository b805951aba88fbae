"""The client's side of one Leap Edge connection, as a sans-I/O state machine.

:class:`ClientSession` takes the websocket messages a transport read (raw payloads),
decodes and parses them, reacts as the protocol requires (Identify after Hello, an
immediate answer to a tagged heartbeat request, acknowledgement bookkeeping) and hands
back what the application should see, in wire order, plus the frames to send. It never
touches a socket, a thread or a clock: time comes in as an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import LeapProtocolError
from . import frames
from .codec import Codec, Payload
from .heartbeat import HeartbeatTracker
from .models import (
    HeartbeatAck,
    HeartbeatRequest,
    Hello,
    InitEvent,
    MessageEvent,
    ServerFrame,
)
from .parse import parse_server_frame

__all__ = ["ClientSession", "ReceiveResult", "SessionState"]


class SessionState(enum.Enum):
    """Where one connection stands in the Leap Edge flow."""

    AWAITING_HELLO = "awaiting_hello"
    AWAITING_INIT = "awaiting_init"
    CONNECTED = "connected"


@attrs.define(slots=True)
class ReceiveResult:
    """What one batch of received messages produced.

    ``messages``: channel and direct messages, in wire order. ``events``: every other
    event the application sees (``Hello``, ``InitEvent``, channel events), in wire
    order. ``send``: frames the protocol requires sending now, in order. ``error``: the
    protocol error that stopped the batch, if any; everything before it is kept.
    """

    messages: list[MessageEvent] = attrs.field(factory=list)
    events: list[ServerFrame] = attrs.field(factory=list)
    send: list[dict[str, Any]] = attrs.field(factory=list)
    error: LeapProtocolError | None = None


class ClientSession:
    """Protocol state of one client connection.

    Not thread-safe: a client serialises calls (the reader thread per batch, the
    heartbeat thread per beat). The token is kept only to build Identify and never
    appears in ``repr``.
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

    def __repr__(self) -> str:
        return (
            f"ClientSession(project_id={self.project_id!r}, state={self.state.value}, encoding={self.codec.encoding!r})"
        )

    @property
    def latency(self) -> float | None:
        """Round trip (s) of the last acknowledged heartbeat, ``None`` before one."""
        return self.heartbeat.latency if self.heartbeat is not None else None

    def encode(self, frame: dict[str, Any]) -> tuple[Payload, bool]:
        """Encode a frame to send: ``(payload, binary)``."""
        return self.codec.encode(frame)

    def receive(self, batch: Iterable[tuple[Payload, bool]], now: float) -> ReceiveResult:
        """Process websocket messages ``(payload, binary)`` received up to ``now``.

        Stops at the first malformed message and reports it in ``result.error``; the
        connection should then be closed.
        """
        result = ReceiveResult()
        if self.heartbeat is not None:
            self.heartbeat.received(now)
        decode = self.codec.decode
        parse = parse_server_frame
        add_message = result.messages.append
        try:
            for payload, binary in batch:
                event = parse(decode(payload, binary))
                if event.__class__ is MessageEvent:
                    add_message(event)
                else:
                    self._handle(event, now, result)
        except LeapProtocolError as exc:
            result.error = exc
        return result

    def _handle(self, event: ServerFrame, now: float, result: ReceiveResult) -> None:
        if isinstance(event, HeartbeatAck):
            if event.tag is None:
                if self.heartbeat is not None:
                    self.heartbeat.acked(now)
            elif event.latency is not None:
                self.tagged_latency = event.latency / 1000.0
            return
        if isinstance(event, HeartbeatRequest):
            result.send.append(frames.heartbeat(event.tag))
            return
        if isinstance(event, Hello):
            if self.hello is not None:
                raise LeapProtocolError("second Hello on one connection", op=1)
            self.hello = event
            self.heartbeat = HeartbeatTracker(event.heartbeat_interval / 1000.0, now)
            self.state = SessionState.AWAITING_INIT
            result.send.append(frames.identify(self.project_id, self._token))
        elif isinstance(event, InitEvent):
            self.init = event
            self.state = SessionState.CONNECTED
        result.events.append(event)
