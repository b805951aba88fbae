"""Connection states, as the Go SDK names them, and the snapshot listeners receive."""

from __future__ import annotations

import enum

import attrs

__all__ = ["ConnectionState", "StateInfo"]


class ConnectionState(enum.Enum):
    """Where a client stands.

    ``IDLE`` before ``connect()``; ``CONNECTING`` while opening the websocket (first
    time or after a backoff delay); ``AUTHENTICATING`` once upgraded, until INIT;
    ``CONNECTED`` after INIT; ``ERRORED`` after a failure (see
    :attr:`~leap_sync.StateInfo.will_reconnect`); ``CLOSED`` after ``close()``.
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    ERRORED = "errored"
    CLOSED = "closed"


@attrs.frozen
class StateInfo:
    """A state transition: the new state, the error that caused an ``ERRORED`` state,
    and whether the client will try to reconnect by itself."""

    #: The new state.
    connection_state: ConnectionState
    #: What caused an ``ERRORED`` state (a :class:`~leap_sync.LeapError`), else
    #: ``None``; not compared by ``==``.
    error: BaseException | None = attrs.field(default=None, eq=False)
    #: In an ``ERRORED`` state: whether the client will try again by itself (``False``:
    #: it gave up, or the error is fatal).
    will_reconnect: bool = False
