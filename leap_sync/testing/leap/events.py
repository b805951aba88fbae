"""The embedded server's control calls that send events to clients: channel messages,
channel and token state, direct messages, any dispatch, tagged heartbeat requests.

Each call encodes on the caller's thread and queues on the connections, so it returns
promptly whatever the clients do; the counts returned are of connections the frames
were queued on (a connection whose queue overflows is shed and not counted).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable
from typing import Any

from ...errors import LeapEncodeError
from ...protocol import frames
from ...protocol.opcodes import CloseCode
from .connection import LeapConnection, live_sessions
from .core import BINARY_IN_JSON_REASON, ServerCore, holds_binary

__all__ = ["Events"]


class Events(ServerCore):
    """Events to clients (see the module docstring)."""

    def _subscribers(self, channel_id: str) -> list[LeapConnection]:
        """Open connections whose session subscribed to the channel (under ``_lock``)."""
        sessions = live_sessions(list(self._conns.values()))
        return [c for s in sessions if channel_id in s.subscriptions for c in s.connections]

    def publish(self, channel_id: str, event: str, data: Any = None) -> int:
        """Send MESSAGE to every subscriber of the channel; returns how many
        connections it was queued on. ``KeyError`` if the channel does not exist.
        ``data`` may hold ``bytes``: ETF subscribers receive them unchanged, JSON
        subscribers are closed 4000 (see ``leap_sync.testing.leap.core``)."""
        return self.publish_many(channel_id, event, (data,))

    def publish_many(self, channel_id: str, event: str, datas: Iterable[Any], *, chunk: int = 512) -> int:
        """Send one MESSAGE per item of ``datas``, in order, to every subscriber.

        Messages are encoded ``chunk`` at a time and queued as one write per chunk and
        connection. Returns the number of connections every message was queued on. A
        value that cannot be encoded for a subscriber raises :class:`~leap_sync.LeapEncodeError`
        before its chunk is queued (earlier chunks were sent; no sequence number is
        spent on the failed chunk).
        """
        with self._lock:
            channel = self._model.channels[channel_id]
            conns = self._subscribers(channel_id)
        ok = dict.fromkeys(conns, True)
        iterator = iter(datas)
        while items := list(itertools.islice(iterator, chunk)):
            # The lock is held per chunk (encoding included, so chunks of concurrent
            # publishers keep their sequence order), never for the whole burst.
            with self._lock:
                first = channel.seq + 1
                built = [
                    frames.message_dispatch(
                        channel_id, event, data, unicast=False, seq=first + i if channel.sequenced else None
                    )
                    for i, data in enumerate(items)
                ]
                # Encode for every subscriber's codec before queuing anything.
                cache: dict[tuple[str, str], bytes | None] = {}
                for conn in conns:
                    key = (conn.encoding, conn.compression)
                    if key not in cache:
                        try:
                            cache[key] = b"".join(conn.encode(f) for f in built)
                        except LeapEncodeError:
                            if conn.encoding != "json" or not holds_binary(items):
                                raise
                            cache[key] = None
                seqs = tuple(range(first, first + len(items))) if channel.sequenced else ()
                if channel.sequenced:
                    channel.seq += len(items)
                for conn in conns:
                    wire = cache[(conn.encoding, conn.compression)]
                    if wire is None:
                        conn.request_close(CloseCode.UNKNOWN, BINARY_IN_JSON_REASON)
                        ok[conn] = False
                    elif ok[conn]:
                        sent = conn.send_wire(wire, count=len(items), channel=channel_id if seqs else None, seqs=seqs)
                        ok[conn] = sent
        return sum(ok.values())

    def set_channel_state(self, channel_id: str, state: dict[str, Any]) -> int:
        """Replace a channel's state; subscribers get STATE_UPDATE. A state that cannot
        be encoded raises :class:`~leap_sync.LeapEncodeError` and changes nothing."""
        state = dict(state)
        self._check_storable(state)
        with self._lock:
            channel = self._model.channels[channel_id]
            frame = frames.dispatch("STATE_UPDATE", channel_id, {"state": state})
            wires = self._encode_for(self._subscribers(channel_id), frame)
            channel.state = state
            return self._queue(wires)

    def send_direct_message(self, token: str, event: str, data: Any = None, *, cid: str | None = None) -> int:
        """DIRECT_MESSAGE to every connection of the token's session, or, with ``cid``,
        to that one connection only (marked unicast)."""
        with self._lock:
            frame = frames.message_dispatch(None, event, data, unicast=cid is not None, direct=True)
            if cid is not None:
                return self._deliver([self._conns[cid]], frame)
            session = self._model.sessions.get(token)
            return self._deliver(list(session.connections), frame) if session else 0

    def set_token_state(self, token: str, state: Any) -> int:
        """Change a token's state; its connections get TOKEN_STATE_UPDATE."""
        self._check_storable(state)
        with self._lock:
            record = self._model.tokens[token]
            session = self._model.sessions.get(token)
            frame = frames.dispatch("TOKEN_STATE_UPDATE", None, {"state": state})
            wires = self._encode_for(list(session.connections) if session else [], frame)
            record.state = state
            return self._queue(wires)

    def send_event(self, event: str, data: Any = None, *, channel_id: str | None = None, cid: str | None = None) -> int:
        """Send any dispatch event (for example one clients do not know) to one
        connection or to all."""
        return self.send_frame(frames.dispatch(event, channel_id, data), cid=cid)

    def send_frame(self, frame: dict[str, Any], *, cid: str | None = None) -> int:
        """Encode ``frame`` with each connection's codec and send it as it is (to
        every open connection, identified or not, or to ``cid``)."""
        return self._deliver(self._targets(cid, identified_only=False), frame)

    def request_heartbeat(self, tag: str | None = None, *, cid: str | None = None) -> list[str]:
        """Send a tagged heartbeat request (op 3) to one connection or to all; each must
        answer within ``heartbeat_request_timeout``, else it is closed 4007. ``tag``
        defaults to a random one. Returns the cids the request was queued on.

        A tag that cannot be sent is refused before any connection awaits an answer:
        ``TypeError`` for one that is not a ``str``, ``KeyError`` for an unknown
        ``cid``, :class:`~leap_sync.errors.LeapEncodeError` for one an encoding in use
        cannot carry (a lone surrogate)."""
        tag = tag if tag is not None else secrets.token_hex(4)
        if not isinstance(tag, str):
            raise TypeError(f"a heartbeat tag is a str, not {type(tag).__name__}")
        conns = self._targets(cid)
        wires = self._encode_for(conns, frames.heartbeat_request(tag))  # raises before anything is recorded
        sent = []
        for conn, wire in wires:
            assert conn.rules is not None and wire is not None
            with conn.lock:  # recorded before it is queued: an answer always finds it
                conn.rules.request_heartbeat(tag, time.monotonic())
            if conn.send_wire(wire):
                sent.append(conn.cid)
        return sent
