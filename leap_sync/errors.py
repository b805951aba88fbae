"""The exceptions leap-sync raises: one small hierarchy under :class:`LeapError`.

No exception message ever contains a Leap token: callers that build messages from
server-provided text (close reasons) redact the token first.
"""

from __future__ import annotations

__all__ = [
    "ChannelClosed",
    "ChannelOverflowError",
    "ChannelUnavailableError",
    "LeapAuthorizationError",
    "LeapClosedError",
    "LeapConnectionError",
    "LeapEncodeError",
    "LeapError",
    "LeapProtocolError",
    "LeapTimeoutError",
]


class LeapError(Exception):
    """Base class of every exception raised by leap-sync."""


class LeapProtocolError(LeapError):
    """A peer sent something the protocol does not allow.

    ``op`` and ``event`` name the opcode and dispatch event being parsed when known
    (``None`` otherwise). ``close_code`` is the Leap Edge close code a server answers
    this error with (4004 for an unknown opcode, 4005 for anything else malformed).
    """

    def __init__(
        self,
        message: str,
        *,
        op: int | None = None,
        event: str | None = None,
        close_code: int = 4005,
    ) -> None:
        where = []
        if op is not None:
            where.append(f"op={op}")
        if event is not None:
            where.append(f"event={event}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.op = op
        self.event = event
        self.close_code = close_code


class LeapEncodeError(LeapError, ValueError):
    """A value given to send cannot be encoded (not JSON-serialisable, NaN, an int too
    large for ETF, a set...)."""


class LeapConnectionError(LeapError):
    """The connection could not be made, or was lost.

    ``close_code`` and ``close_reason`` hold the websocket close code and reason when
    the connection ended with a close frame (``None`` for a TCP-level failure).
    ``phase`` names the step of a connection attempt that failed: ``"dns"``,
    ``"tcp"``, ``"proxy"``, ``"tls"``, ``"upgrade"``, ``"hello"`` or ``"init"``
    (``None`` once connected). ``status_code`` is the HTTP status of a refused
    upgrade, and ``retry_after`` the delay in seconds its ``Retry-After`` header asked
    for (429 and 503 only), else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        close_code: int | None = None,
        close_reason: str | None = None,
        phase: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.close_reason = close_reason
        self.phase = phase
        self.status_code = status_code
        self.retry_after = retry_after

    def with_message(self, message: str) -> LeapConnectionError:
        """A copy of this error (same class and attributes) with another message."""
        copy = type(self)(
            message,
            close_code=self.close_code,
            close_reason=self.close_reason,
            phase=self.phase,
            status_code=self.status_code,
            retry_after=self.retry_after,
        )
        return copy


class LeapAuthorizationError(LeapConnectionError):
    """Leap Edge rejected the credentials (close code 4001). Fatal: the client does not
    reconnect after it."""


class LeapTimeoutError(LeapError, TimeoutError):
    """A blocking call (``connect(wait=True)``, ``subscribe``, a ``wait=True`` send)
    did not complete within its timeout."""


class LeapClosedError(LeapError):
    """The client was closed (or will not reconnect) and cannot do what was asked."""


class ChannelUnavailableError(LeapError):
    """A subscription was refused or the channel became unavailable.

    ``error_code`` is Leap Edge's error identifier (``"NOT_GRANTED"``, ``"UNKNOWN"``...)
    or ``None``.
    """

    def __init__(self, channel_id: str, error_code: str | None, *, graceful: bool = False) -> None:
        super().__init__(f"channel {channel_id!r} is unavailable (error_code={error_code})")
        self.channel_id = channel_id
        self.error_code = error_code
        self.graceful = graceful


class ChannelClosed(LeapError):
    """An event channel is closed and drained: no more events will come from it."""


class ChannelOverflowError(ChannelClosed):
    """A bounded event channel with the ``"error"`` overflow policy overflowed: events
    were lost, so the channel was closed. Raised (after the events it still holds) by
    ``get()`` and by iteration, which never ends silently after an overflow."""
