"""Numbers an operator can watch: :class:`Stats`, a frozen snapshot of one client, and
:class:`Counters`, what the connection core updates to make it.

Who writes what: the I/O thread counts what it reads (once per batch of messages, not
per message) and every state change; any thread that sends counts what it queued
(:meth:`Counters.sent_frame`). Every update and :meth:`Counters.snapshot` take one small
lock, never held across I/O or a callback, so reading ``client.stats`` is cheap (a few
microseconds, no allocation beyond the snapshot) and safe from any thread, and the
numbers of one snapshot belong together (taken at one instant): the counters keep their
own copy of the state (updated by :meth:`Counters.state_changed` under the lock), and
both the transitions and the snapshot read the clock under that lock, so a snapshot's
``state`` agrees with its ``connected_for`` and no count (``connected_total``
included) ever goes back from one snapshot to the next.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..state import ConnectionState

__all__ = ["ChannelStats", "Counters", "Stats"]

_payload = operator.itemgetter(0)


@attrs.frozen
class ChannelStats:
    """One open event channel: ``kind`` is what it carries (``"messages"`` and
    ``"channel_events"`` for a :class:`~leap_sync.LeapClient`, ``"data"`` and
    ``"incidents"`` for an :class:`~leap_sync.elstat.ElstatClient`), ``depth`` the
    events waiting in it, ``maxsize`` its bound (0: unbounded), ``dropped`` the events
    its ``drop_oldest`` policy discarded so far."""

    kind: str
    depth: int
    maxsize: int
    dropped: int


@attrs.frozen
class Stats:
    """A snapshot of one client (``client.stats``), all counts since it was made.

    - ``state``: the :class:`~leap_sync.ConnectionState` at that instant;
    - ``connected_for``: seconds the current connection has been CONNECTED (``None``
      when not connected); ``connected_total``: seconds CONNECTED over the client's
      life, the current connection included;
    - ``connections``: connections that reached CONNECTED; ``reconnects``: connection
      attempts after the first (each attempt of the reconnect loop, failed or not);
    - ``messages_in``/``bytes_in``: websocket data messages received and their payload
      bytes as they came off the wire (compressed size under ``compression="zlib"``);
      ``messages_out``/``bytes_out``: data messages queued to send (the protocol's own
      frames, heartbeats included) and their payload bytes;
    - ``heartbeat_rtt``: the last acknowledged heartbeat's round trip in seconds
      (``LeapClient.latency``; ``None`` before one, and always for Elstat, which has
      no heartbeats);
    - ``channels``: each open event channel (:class:`ChannelStats`), grouped by kind,
      in the order made.
    """

    state: ConnectionState
    connected_for: float | None
    connected_total: float
    connections: int
    reconnects: int
    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    heartbeat_rtt: float | None
    channels: tuple[ChannelStats, ...]

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values (``state`` as its string value,
        ``channels`` as a list of dicts): for a health-check endpoint or a log line."""
        data = attrs.asdict(self, recurse=True)
        data["state"] = self.state.value
        data["channels"] = [attrs.asdict(c) for c in self.channels]
        return data


class Counters:
    """The running counts of one client (see the module docstring). ``clock`` gives
    monotonic seconds (the core's)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ConnectionState.IDLE
        self._connected_since: float | None = None
        self._connected_total = 0.0
        self._connections = 0
        self._attempts = 0
        self._messages_in = 0
        self._bytes_in = 0
        self._messages_out = 0
        self._bytes_out = 0

    def state_changed(self, state: ConnectionState) -> None:
        """A state transition (the core's ``set_state``); the clock is read under the
        lock, so the interval closed here starts after every earlier snapshot's instant."""
        with self._lock:
            now = self._clock()
            if self._connected_since is not None and state is not ConnectionState.CONNECTED:
                self._connected_total += max(0.0, now - self._connected_since)
                self._connected_since = None
            if state is ConnectionState.CONNECTED and self._connected_since is None:
                self._connections += 1
                self._connected_since = now
            elif state is ConnectionState.CONNECTING:
                self._attempts += 1
            self._state = state

    def received(self, batch: Sequence[tuple[bytes, bool]]) -> None:
        """(The I/O thread.) One batch of data messages read."""
        size = sum(map(len, map(_payload, batch)))
        with self._lock:
            self._messages_in += len(batch)
            self._bytes_in += size

    def sent_frame(self, frame_size: int) -> None:
        """(Any thread.) One data message queued, as a masked client frame of
        ``frame_size`` bytes (its payload: that less the 6, 8 or 14 header bytes)."""
        if frame_size <= 131:
            size = frame_size - 6
        elif frame_size <= 65543:
            size = frame_size - 8
        else:
            size = frame_size - 14
        with self._lock:
            self._messages_out += 1
            self._bytes_out += size

    def snapshot(
        self, heartbeat_rtt: float | None, channels: Mapping[str, Iterable[Any]], state: ConnectionState | None = None
    ) -> Stats:
        """A :class:`Stats` of now: the state, the clock and every count read under the
        lock the transitions take. ``channels`` maps each kind to its open
        :class:`~leap_sync.channels.EventChannel` objects; ``state`` overrides the
        last state recorded (a forked child's ``CLOSED``: then ``connected_for`` is
        ``None`` and ``connected_total`` what was closed before the fork, as for any
        state but ``CONNECTED``)."""
        listed = tuple(
            ChannelStats(kind, channel.qsize(), channel.maxsize, channel.dropped)
            for kind, chans in channels.items()
            for channel in chans
        )
        with self._lock:
            now = self._clock()
            current = self._state if state is None else state
            since = self._connected_since if current is ConnectionState.CONNECTED else None
            connected_for = None if since is None else max(0.0, now - since)
            return Stats(
                state=current,
                connected_for=connected_for,
                connected_total=self._connected_total + (connected_for or 0.0),
                connections=self._connections,
                reconnects=max(0, self._attempts - 1),
                messages_in=self._messages_in,
                bytes_in=self._bytes_in,
                messages_out=self._messages_out,
                bytes_out=self._bytes_out,
                heartbeat_rtt=heartbeat_rtt,
                channels=listed,
            )
