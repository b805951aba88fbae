"""The state every part of :class:`~leap_sync.testing.LeapEdgeServer` shares, and the
one way frames reach connections.

:class:`ServerCore` is the base of the server's parts (model control, events, faults,
introspection, client-frame handling): an
:class:`~leap_sync.testing.websocket.embedded.EmbeddedServer` of Leap connections that adds the
model, under the same lock as the connection registry (``_lock``), and
:meth:`ServerCore._deliver`, which encodes a frame once per codec in use and queues it
on each connection. Queuing never blocks, so the lock is never held across socket I/O.

Binaries: with ``encoding=etf`` a ``bytes`` value travels as an ETF binary and arrives
unchanged. A JSON connection cannot carry a binary that is not UTF-8 (Leap Edge's JSON
encoder would fail on it), so a frame holding ``bytes`` closes every JSON connection it
was meant for with 4000 (reason :data:`BINARY_IN_JSON_REASON`) and reaches the others.
Any other value an encoding cannot carry (NaN, an int ETF cannot hold) raises
:class:`~leap_sync.errors.LeapEncodeError` before anything is queued, so it reaches
nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...errors import LeapEncodeError
from ...protocol.codec import Codec
from ...protocol.etf import erlpack_available
from ...protocol.opcodes import CloseCode
from ..websocket.embedded import EmbeddedServer
from ..websocket.sockets import Settings
from .connection import HeartbeatSettings, LeapConnection
from .model import Model

__all__ = ["BINARY_IN_JSON_REASON", "ServerCore", "holds_binary"]

BINARY_IN_JSON_REASON = "a binary that is not UTF-8 cannot be sent as JSON (connect with encoding=etf)"


def holds_binary(value: Any) -> bool:
    """Whether ``value`` holds ``bytes`` anywhere in its dicts, lists and tuples."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (bytes, bytearray, memoryview)):
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


class ServerCore(EmbeddedServer[LeapConnection]):
    """Shared state of one server (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        settings: Settings,
        heartbeat: HeartbeatSettings,
        *,
        project_id: str,
        session_ttl: float,
        history_limit: int,
    ) -> None:
        super().__init__(host, port, settings, "leap-sync-server", history_limit)
        self.project_id = project_id
        self._heartbeat = heartbeat
        self._model = Model(project_id, session_ttl)
        self._acks_paused = False
        self._enforce_heartbeats = True
        self._codecs: list[Codec] = []  # for _check_storable
        self._tokens_seen: frozenset[str] = frozenset()
        """Every token ever added (removed ones too: a client may still send one),
        replaced whole on each add: read lock-free by the log redaction."""

    def log_secrets(self) -> Iterable[str]:
        """Every token ever added: no log line of the embedded servers shows one."""
        return self._tokens_seen

    @property
    def enforcing_heartbeats(self) -> bool:
        """Whether heartbeat deadlines close connections (see ``enforce_heartbeats``)."""
        return self._enforce_heartbeats

    def _targets(self, cid: str | None, identified_only: bool = True) -> list[LeapConnection]:
        """Open connections: the one with ``cid`` (``KeyError`` if none), or all
        (identified ones only, unless told otherwise)."""
        conns = self._select(cid)
        if cid is not None or not identified_only:
            return conns
        return [c for c in conns if c.identify is not None]

    def _encode_for(
        self, conns: Iterable[LeapConnection], frame: dict[str, Any]
    ) -> list[tuple[LeapConnection, bytes | None]]:
        """``frame`` encoded once per (encoding, compression) in use, for each
        connection, before anything is queued. ``None`` marks a JSON connection that
        cannot carry the frame's binaries; any other value an encoding cannot carry
        raises :class:`LeapEncodeError`."""
        cache: dict[tuple[str, str], bytes | None] = {}
        out: list[tuple[LeapConnection, bytes | None]] = []
        for conn in conns:
            key = (conn.encoding, conn.compression)
            if key not in cache:
                try:
                    cache[key] = conn.encode(frame)
                except LeapEncodeError:
                    if conn.encoding != "json" or not holds_binary(frame):
                        raise
                    cache[key] = None
            out.append((conn, cache[key]))
        return out

    @staticmethod
    def _queue(wires: list[tuple[LeapConnection, bytes | None]]) -> int:
        """Queue encoded frames; close the connections that cannot carry theirs.
        Returns how many connections it was queued on."""
        queued = 0
        for conn, wire in wires:
            if wire is None:
                conn.request_close(CloseCode.UNKNOWN, BINARY_IN_JSON_REASON)
            elif conn.send_wire(wire):
                queued += 1
        return queued

    def _deliver(self, conns: Iterable[LeapConnection], frame: dict[str, Any]) -> int:
        """Send one frame to connections; returns how many it was queued on."""
        return self._queue(self._encode_for(conns, frame))

    def _check_storable(self, value: Any) -> None:
        """Raise :class:`LeapEncodeError` for a value that will be sent later (channel
        state, token metadata) but that an encoding this server serves cannot carry
        (binaries included: JSON connections could never be sent it)."""
        codecs = self._codecs
        if not codecs:
            codecs.append(Codec("json"))
            if erlpack_available():
                codecs.append(Codec("etf"))
        for codec in codecs:
            codec.encode(value)
