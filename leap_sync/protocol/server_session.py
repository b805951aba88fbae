"""The server's side of one Leap Edge connection, as a sans-I/O state machine.

:class:`ServerSession` enforces the connection rules a Leap Edge server applies before
any business logic: Hello first, Identify within the identify timeout (else 4002), no
service payload before Identify (4003), known opcodes only (4004), well-formed payloads
(4005), heartbeats on the Hello grid and tagged requests answered in time (4007; the
heartbeat rule, tolerant of extra beats by default, is documented in
:mod:`~leap_sync.protocol.server_heartbeat`). It returns
the parsed client frames the server's business logic acts on, and raises
:class:`ServerClose` when the connection must close. Time comes in as an argument.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from ..errors import LeapProtocolError
from . import frames
from .codec import Codec, Payload
from .models import ClientFrame, ClientHeartbeat, Identify
from .opcodes import CloseCode
from .parse import parse_client_frame
from .server_heartbeat import DriftMonitor

__all__ = ["ServerClose", "ServerSession", "ServerSessionState", "default_tolerance"]


class ServerClose(Exception):
    """The connection must be closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"close {code}: {reason}")
        self.code = code
        self.reason = reason


class ServerSessionState(enum.Enum):
    AWAITING_IDENTIFY = "awaiting_identify"
    IDENTIFIED = "identified"


def default_tolerance(interval: float) -> float:
    """The default heartbeat tolerance (s) for an interval (s): 20% of it, at least
    50 ms."""
    return max(0.2 * interval, 0.05)


class ServerSession:
    """Connection rules for one client, from the server's side.

    ``interval``, ``identify_timeout``, ``tolerance`` and ``request_timeout`` are in
    seconds, finite and positive (``ValueError`` otherwise); ``now`` is the instant
    Hello is sent. ``strict`` selects the strict
    heartbeat check (extra beats close 4007 too). ``compression`` makes :meth:`encode`
    produce standalone zlib streams in binary frames. Not thread-safe: the caller
    serialises calls.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        interval: float,
        identify_timeout: float,
        now: float,
        tolerance: float | None = None,
        request_timeout: float | None = None,
        compression: bool = False,
        strict: bool = False,
    ) -> None:
        for name, value in (
            ("interval", interval),
            ("identify_timeout", identify_timeout),
            ("tolerance", tolerance),
            ("request_timeout", request_timeout),
        ):
            if value is not None and not (0 < value < math.inf):
                raise ValueError(f"{name} must be finite and positive, not {value!r}")
        self.codec = codec
        self.compression = compression
        self.interval = interval
        self.state = ServerSessionState.AWAITING_IDENTIFY
        self.identify: Identify | None = None
        self.identify_deadline = now + identify_timeout
        tolerance = default_tolerance(interval) if tolerance is None else tolerance
        self.drift = DriftMonitor(interval, tolerance, now, strict=strict)
        self.request_timeout = max(tolerance, 1.0) if request_timeout is None else request_timeout
        self.check_heartbeats = True
        """Set to False to stop enforcing the beat schedule (tagged requests still are)."""
        self._requests: dict[str | None, float] = {}

    def hello_frame(self) -> dict[str, Any]:
        """The Hello to send first."""
        return frames.hello(round(self.interval * 1000))

    def encode(self, frame: dict[str, Any]) -> tuple[Payload, bool]:
        """Encode a frame for this connection: ``(payload, binary)``."""
        if self.compression:
            return self.codec.encode_compressed(frame), True
        return self.codec.encode(frame)

    # -- receiving ---------------------------------------------------------------------

    def receive(self, payload: Payload, binary: bool, now: float) -> tuple[ClientFrame, list[dict[str, Any]]]:
        """Process one message from the client.

        Returns the parsed frame and the control frames to send in answer (heartbeat
        acks). Raises :class:`ServerClose` when the rules require closing.
        """
        self.check(now)
        try:
            frame = parse_client_frame(self.codec.decode(payload, binary))
        except LeapProtocolError as exc:
            raise ServerClose(exc.close_code, str(exc)) from None
        replies: list[dict[str, Any]] = []
        if isinstance(frame, ClientHeartbeat):
            if frame.tag is None:
                if not self.drift.beat(now) and self.check_heartbeats:
                    raise ServerClose(
                        CloseCode.OUT_OF_SYNC,
                        f"heartbeat {self.drift.last_drift * 1000:+.0f} ms off schedule",
                    )
                replies.append(frames.heartbeat_ack())
            else:
                sent = self._requests.pop(frame.tag, None)
                if sent is not None:
                    latency = round((now - sent) * 1000)
                    replies.append(frames.heartbeat_ack(frame.tag, latency))
            return frame, replies
        if isinstance(frame, Identify):
            if self.state is ServerSessionState.IDENTIFIED:
                raise ServerClose(CloseCode.INVALID_PAYLOAD, "already identified")
            self.identify = frame
            self.state = ServerSessionState.IDENTIFIED
            self.drift.identified(now)
            return frame, replies
        if self.state is ServerSessionState.AWAITING_IDENTIFY:
            raise ServerClose(CloseCode.NOT_AUTHENTICATED, "not authenticated")
        return frame, replies

    # -- time --------------------------------------------------------------------------

    def request_heartbeat(self, tag: str | None, now: float) -> dict[str, Any]:
        """A tagged heartbeat request to send; the answer is due within
        ``request_timeout``. A tag that cannot be sent is refused before anything is
        recorded (no answer is then awaited): ``TypeError`` for one that is not a
        ``str`` (or ``None``), :class:`~leap_sync.errors.LeapEncodeError` for one this
        connection's encoding cannot carry (a lone surrogate)."""
        if tag is not None and not isinstance(tag, str):
            raise TypeError(f"a heartbeat tag is a str, not {type(tag).__name__}")
        frame = frames.heartbeat_request(tag)
        self.encode(frame)  # raises before the request is recorded
        self._requests[tag] = now
        return frame

    @property
    def deadline(self) -> float:
        """The next instant at which :meth:`check` may close the connection."""
        times = [t + self.request_timeout for t in self._requests.values()]
        if self.state is ServerSessionState.AWAITING_IDENTIFY:
            times.append(self.identify_deadline)
        if self.check_heartbeats:
            times.append(self.drift.deadline)
        return min(times) if times else float("inf")

    def check(self, now: float) -> None:
        """Raise :class:`ServerClose` if a deadline passed by ``now``."""
        if self.state is ServerSessionState.AWAITING_IDENTIFY and now > self.identify_deadline:
            raise ServerClose(CloseCode.IDENTIFY_TIMEOUT, "identify timeout")
        for tag, sent in self._requests.items():
            if now > sent + self.request_timeout:
                raise ServerClose(CloseCode.OUT_OF_SYNC, f"heartbeat request {tag!r} unanswered")
        if self.check_heartbeats and now > self.drift.deadline:
            raise ServerClose(CloseCode.OUT_OF_SYNC, "heartbeat missed")
