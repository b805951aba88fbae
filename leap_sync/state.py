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


@attrs.frozen(eq=False)
class StateInfo:
    """A state transition: the new state, the error that caused an ``ERRORED`` state,
    and whether the client will try to reconnect by itself.

    Compared with a :class:`ConnectionState`, a ``StateInfo`` compares its
    ``connection_state``: ``client.state == ConnectionState.CONNECTED`` is what it
    reads as (and ``client.state in (ConnectionState.CLOSED, ConnectionState.ERRORED)``
    works too). Two ``StateInfo`` are equal when their ``connection_state`` and
    ``will_reconnect`` are (the ``error`` is not compared). The hash is the
    ``connection_state``'s, so that equal values hash alike."""

    #: The new state.
    connection_state: ConnectionState
    #: What caused an ``ERRORED`` state (a :class:`~leap_sync.LeapError`), else
    #: ``None``; not compared by ``==``.
    error: BaseException | None = None
    #: In an ``ERRORED`` state: whether the client will try again by itself (``False``:
    #: it gave up, or the error is fatal).
    will_reconnect: bool = False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ConnectionState):
            return self.connection_state is other
        if other.__class__ is self.__class__:
            assert isinstance(other, StateInfo)
            return (self.connection_state, self.will_reconnect) == (other.connection_state, other.will_reconnect)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self.connection_state)
