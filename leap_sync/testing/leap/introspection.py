"""What a test can ask the embedded server: its connections (live and past), frame
counters, subscribers, and waits for a condition. Every call takes the model lock
only to copy, never waits on a client, and so returns promptly.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..websocket.embedded import Inspectable
from .connection import LeapConnection
from .core import ServerCore

__all__ = ["ConnectionInfo", "Introspection"]


@attrs.frozen
class ConnectionInfo:
    """A snapshot of one connection, for tests.

    ``sequences`` maps each sequenced channel to the sequence numbers sent on this
    connection, in order: recorded when queued, and forgotten again if the connection
    ends before writing them (a drop of a client that stopped reading, a shed slow
    consumer), so once it is closed they are exactly those handed to its socket.
    ``last_heartbeat`` is the server's monotonic time of the last plain heartbeat
    (``None`` before one). ``frames_out`` counts messages sent the same way as
    ``sequences`` (counted when queued, uncounted if never written); ``queued`` is the
    bytes still queued.
    """

    cid: str
    token: str | None = attrs.field(repr=False)
    project_id: str | None
    encoding: str
    compression: str
    identified: bool
    subscriptions: frozenset[str]
    pipe_rooms: frozenset[str]
    frames_in: int
    frames_out: int
    heartbeats: int
    last_heartbeat: float | None
    connected_at: float
    open: bool
    close_code: int | None
    sequences: Mapping[str, tuple[int, ...]]
    queued: int = 0


def connection_info(conn: LeapConnection) -> ConnectionInfo:
    """A snapshot of ``conn`` (call under the model lock)."""
    ident = conn.identify
    session = conn.session
    with conn.lock:
        return ConnectionInfo(
            cid=conn.cid,
            token=ident.token if ident else None,
            project_id=ident.project_id if ident else None,
            encoding=conn.encoding,
            compression=conn.compression,
            identified=ident is not None,
            subscriptions=frozenset(session.subscriptions) if session else frozenset(),
            pipe_rooms=frozenset(session.pipe_rooms) if session else frozenset(),
            frames_in=conn.frames_in,
            frames_out=conn.frames_out,
            heartbeats=conn.heartbeats,
            last_heartbeat=conn.last_heartbeat,
            connected_at=conn.connected_at,
            open=conn.open,
            close_code=conn.close_code,
            sequences={k: tuple(v) for k, v in conn.sequences.items()},
            queued=conn.outbox.queued,
        )


class Introspection(ServerCore, Inspectable[LeapConnection, ConnectionInfo]):
    """Introspection (:class:`~leap_sync.testing.websocket.embedded.Inspectable`: connections
    and frame totals) and waits (see the module docstring)."""

    def _snapshot(self, conn: LeapConnection) -> ConnectionInfo:
        return connection_info(conn)

    def wait_for_connections(
        self, count: int = 1, timeout: float = 10.0, *, identified: bool = True
    ) -> list[ConnectionInfo]:
        """Block until at least ``count`` open connections (identified ones by default)
        exist; return them. ``TimeoutError`` after ``timeout`` seconds."""
        found: list[ConnectionInfo] = []

        def ready() -> bool:
            with self._lock:
                conns = [c for c in self._conns.values() if c.identify is not None or not identified]
                found[:] = [connection_info(c) for c in conns]
            return len(found) >= count

        if not self._wait_until(ready, timeout):
            raise TimeoutError(f"{len(found)} of {count} connections after {timeout:g} s")
        return found

    def subscribers(self, channel_id: str) -> list[str]:
        """The cids of the open connections subscribed to a channel."""
        with self._lock:
            return [
                c.cid for c in self._conns.values() if c.session is not None and channel_id in c.session.subscriptions
            ]
