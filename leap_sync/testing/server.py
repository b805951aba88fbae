"""``LeapEdgeServer``: an embedded, protocol-complete Leap Edge server for tests.

It runs on the ``websockets`` library's threaded server, on loopback port 0 by default,
and speaks the protocol through the same sans-I/O layer as the client
(:class:`~leap_sync.protocol.server_session.ServerSession` for the connection rules,
:mod:`~leap_sync.protocol.frames` for every frame it sends). Everything it knows
(projects, tokens and their grants, channels, sessions, pipe rooms) is set up through
its control API, which is thread-safe and callable while clients are connected; the
same API injects faults (close codes, TCP drops, unacknowledged or absent heartbeats,
silence, raw bytes).

Model, as Leap Edge behaves:

- A token belongs to a project and grants either every channel of it (``grants=None``)
  or the listed channel ids. Connections with the same token share a *session*, whose
  subscriptions persist for ``session_ttl`` seconds after its last connection closes.
  A tokenless connection (``scope`` ``"noauth"``) has a session of its own, which dies
  with it, and reaches only ``unprotected`` channels.
- ``private`` channels need a grant; ``public`` channels admit any token of the
  project; ``unprotected`` channels admit anyone in the project, tokenless included.
- SUBSCRIBE answers AVAILABLE (to every connection of the session), or UNAVAILABLE
  with ``UNKNOWN`` (no such channel) or ``NOT_GRANTED``. MESSAGE and
  SET_CHANNEL_STATE from a client need a subscription (else UNAVAILABLE ``UNKNOWN``)
  and reach every subscriber, sender included.
- Heartbeats are acknowledged; a client that strays more than ``heartbeat_tolerance``
  seconds from the schedule its Hello set (``start + k * interval``), or leaves a
  tagged request unanswered for ``heartbeat_request_timeout`` seconds, is closed 4007.
  The defaults are 20% of the interval (at least 50 ms) and the larger of that and
  one second.
- Channels created with ``sequenced=True`` number their messages (``seq`` in the
  MESSAGE data, 1, 2, 3...) and every connection records the numbers written to it,
  so a test can prove nothing was lost, duplicated or reordered.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ..errors import LeapEncodeError, LeapError
from ..protocol import frames
from ..protocol.codec import COMPRESSIONS, ENCODINGS, Codec
from ..protocol.etf import erlpack_available
from ..protocol.models import (
    Channel,
    ClientFrame,
    ClientHeartbeat,
    Identify,
    PipeRoom,
    PipeRoomSubscribe,
    PipeRoomUnsubscribe,
    SendMessage,
    SetChannelState,
    Subscribe,
    UnknownClientEvent,
    Unsubscribe,
)
from ..protocol.opcodes import CloseCode
from ..protocol.server_session import ServerClose, ServerSession
from ..protocol.wsframes import unmasked_message

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response
    from websockets.protocol import State as _WsState
    from websockets.sync.server import Server, ServerConnection, serve
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "leap_sync.testing needs the 'websockets' package: install leap-sync with the "
        "server extra (pip install 'leap-sync[server]')"
    ) from exc

__all__ = ["ConnectionInfo", "LeapEdgeServer"]

_server_numbers = itertools.count(1)
_MAX_WAIT = 0.25  # longest a connection thread sleeps before re-checking its deadlines
Payload = str | bytes


def _cut(sock: socket.socket) -> None:
    """Shut a TCP connection down both ways (no close frame); errors ignored.

    Called as ``socket.socket.shutdown`` so that a TLS socket, whose own ``shutdown``
    drops its SSL object under the thread reading it, is cut at the TCP level only."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


@attrs.frozen
class ConnectionInfo:
    """A snapshot of one connection, for tests.

    ``sequences`` maps each sequenced channel to the sequence numbers written to this
    connection, in order. ``last_heartbeat`` is the server's monotonic time of the last
    plain heartbeat (``None`` before one).
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


@attrs.define(eq=False)
class _Token:
    token: str = attrs.field(repr=False)
    project_id: str
    grants: frozenset[str] | None
    metadata: Any
    scope: str
    state: Any = None


@attrs.define(eq=False)
class _Channel:
    id: str
    project_id: str
    type: str
    state: Any
    capabilities: int | None = None
    sequenced: bool = False
    seq: int = 0

    def model(self) -> Channel:
        return Channel(self.id, self.project_id, self.state, self.type, self.capabilities)


@attrs.define(eq=False)
class _PipeRoom:
    room: PipeRoom
    project_id: str
    connection: dict[str, Any]


@attrs.define(eq=False)
class _Session:
    token: _Token | None
    connections: set[_Conn] = attrs.field(factory=set)
    subscriptions: dict[str, None] = attrs.field(factory=dict)
    pipe_rooms: dict[str, None] = attrs.field(factory=dict)
    empty_since: float | None = None


class _Conn:
    """Server-side state of one websocket connection."""

    def __init__(self, ws: ServerConnection, cid: str, session: ServerSession, encoding: str, compression: str):
        self.ws = ws
        self.cid = cid
        self.protocol = session
        self.encoding = encoding
        self.compression = compression
        self.lock = threading.Lock()  # guards protocol (ServerSession) and counters
        self.send_lock = threading.Lock()  # keeps frames and their records in one order
        self.identify: Identify | None = None
        self.session: _Session | None = None
        self.silent = False
        self.open = True
        self.close_code: int | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.heartbeats = 0
        self.last_heartbeat: float | None = None
        self.connected_at = time.monotonic()
        self.sequences: dict[str, list[int]] = {}

    def encode(self, frame: dict[str, Any]) -> Payload:
        payload, _binary = self.protocol.encode(frame)
        return payload

    def send(self, frame: dict[str, Any], *, channel: str | None = None, seq: int | None = None) -> bool:
        """Encode and send one frame; ``False`` when it could not be written."""
        return self.send_wire(unmasked_message(self.encode(frame)), channel=channel, seq=seq)

    def send_wire(self, data: bytes, *, channel: str | None = None, seq: int | None = None, count: int = 1) -> bool:
        """Write complete frame bytes; record ``seq`` for ``channel`` once written."""
        if self.silent or not self.open:
            return False
        ws = self.ws
        with self.send_lock:
            with ws.protocol_mutex:
                if ws.protocol.state is not _WsState.OPEN:
                    return False
                try:
                    ws.socket.sendall(data)
                except OSError:
                    return False
            self.frames_out += count
            if seq is not None and channel is not None:
                self.sequences.setdefault(channel, []).append(seq)
        return True

    def info(self) -> ConnectionInfo:
        ident = self.identify
        session = self.session
        return ConnectionInfo(
            cid=self.cid,
            token=ident.token if ident else None,
            project_id=ident.project_id if ident else None,
            encoding=self.encoding,
            compression=self.compression,
            identified=ident is not None,
            subscriptions=frozenset(session.subscriptions) if session else frozenset(),
            pipe_rooms=frozenset(session.pipe_rooms) if session else frozenset(),
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            heartbeats=self.heartbeats,
            last_heartbeat=self.last_heartbeat,
            connected_at=self.connected_at,
            open=self.open,
            close_code=self.close_code,
            sequences={k: tuple(v) for k, v in self.sequences.items()},
        )


class LeapEdgeServer:
    """An embedded Leap Edge server on ``host:port`` (loopback, a free port by default).

    Use it as a context manager, or call :meth:`start` and :meth:`close`. ``url`` is
    the websocket endpoint (``ws://127.0.0.1:<port>/ws``). Times are in seconds.
    ``ssl_context`` serves ``wss://``. ``project_id`` is the default project of the
    control methods. ``on_frame(cid, frame)``, when given, sees every parsed client
    frame (on the connection's thread).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_interval: float = 30.0,
        identify_timeout: float = 10.0,
        heartbeat_tolerance: float | None = None,
        heartbeat_request_timeout: float | None = None,
        session_ttl: float = 30.0,
        project_id: str = "project_x",
        ssl_context: Any = None,
        max_message_size: int = 1024 * 1024,
        close_timeout: float = 2.0,
        on_frame: Callable[[str, ClientFrame], None] | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or identify_timeout <= 0:
            raise ValueError("heartbeat_interval and identify_timeout must be positive")
        self.host = host
        self._port = port
        self.heartbeat_interval = heartbeat_interval
        self.identify_timeout = identify_timeout
        self.heartbeat_tolerance = heartbeat_tolerance
        self.heartbeat_request_timeout = heartbeat_request_timeout
        self.session_ttl = session_ttl
        self.project_id = project_id
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._on_frame = on_frame
        self._number = next(_server_numbers)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._projects: set[str] = {project_id}
        self._tokens: dict[str, _Token] = {}
        self._channels: dict[str, _Channel] = {}
        self._pipe_rooms: dict[str, _PipeRoom] = {}
        self._sessions: dict[str, _Session] = {}
        self._conns: dict[str, _Conn] = {}
        self._history: list[_Conn] = []
        self._acks_paused = False
        self._codecs: list[Codec] = []  # for _check_storable
        self._enforce_heartbeats = True

        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        # Every accepted TCP connection's handler thread and socket, and which of them
        # have not finished the opening handshake yet. A separate lock: close() must
        # reach the sockets even while a control call holds ``_lock`` in a blocked write.
        self._sockets_lock = threading.Lock()
        self._sockets: dict[threading.Thread, socket.socket] = {}
        self._handshaking: set[threading.Thread] = set()
        self._finishing: set[threading.Thread] = set()  # handlers past their last step
        self._closing = False

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<LeapEdgeServer {state} url={self.url if self._server else None!r}>"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> LeapEdgeServer:
        """Bind and start serving (in a thread named ``leap-sync-server-<n>``)."""
        if self._server is not None:
            raise LeapError("the server is already running")
        self._server = serve(
            self._handle,
            self.host,
            self._port,
            ssl=self._ssl_context,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=self._close_timeout,
            max_size=self._max_message_size,
            server_header="leap-sync-embedded-leap-edge",
        )
        self._port = self._server.socket.getsockname()[1]
        self._server.handler = self._wrap_handler(self._server.handler)
        self._closing = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"leap-sync-server-{self._number}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop: close every connection (1001), join every thread. Idempotent.

        Connections still in the opening handshake are cut at once (instead of
        holding the shutdown for the handshake timeout), and connections that do not
        finish closing within ``close_timeout`` (a client that stopped reading, with a
        write blocked on it) are cut too, so ``close()`` returns promptly.
        """
        server, self._server = self._server, None
        if server is None:
            return
        # Silenced connections stay silenced: the close handshake goes through the
        # websockets protocol, not through ``send_wire``. (Un-silencing them let their
        # handler thread wake up and enforce long-missed heartbeats: 4007, not 1001.)
        with self._sockets_lock:
            self._closing = True
            pending = [self._sockets[t] for t in self._handshaking if t in self._sockets]
        for sock in pending:
            _cut(sock)
        stopper = threading.Thread(target=server.shutdown, name=f"leap-sync-server-{self._number}-shutdown")
        stopper.start()
        stopper.join(self._close_timeout + 1.0)
        if stopper.is_alive():
            with self._sockets_lock:
                stuck = list(self._sockets.values())
            for sock in stuck:
                _cut(sock)
            stopper.join(10)
        deadline = time.monotonic() + 10
        if self._thread is not None:
            self._thread.join(10)
        with self._sockets_lock:
            handlers = [*self._sockets, *self._finishing]
        for thread in handlers:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LeapEdgeServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """The websocket endpoint, ``ws://host:port/ws`` (``wss`` with TLS)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self._port}/ws"

    # -- model: projects, tokens, channels, pipe rooms ---------------------------------

    def add_token(
        self,
        token: str,
        project_id: str | None = None,
        grants: Iterable[str] | None = None,
        metadata: Any = None,
        *,
        scope: str = "token",
        state: Any = None,
    ) -> None:
        """Register a Leap token. ``grants=None`` grants every channel of the project;
        otherwise the listed channel ids (for ``private`` channels). ``scope`` is what
        INIT reports (``"token"`` or ``"project"``)."""
        project = project_id or self.project_id
        self._check_storable(metadata)
        self._check_storable(state)
        with self._lock:
            self._projects.add(project)
            self._tokens[token] = _Token(
                token, project, None if grants is None else frozenset(grants), metadata, scope, state
            )

    def remove_token(self, token: str) -> None:
        """Forget a token (existing connections stay; new Identifies get 4001)."""
        with self._lock:
            self._tokens.pop(token, None)

    def grant(self, token: str, *channel_ids: str) -> None:
        """Add channel grants to a token that has an explicit grant list."""
        with self._lock:
            record = self._tokens[token]
            if record.grants is not None:
                record.grants = record.grants | frozenset(channel_ids)

    def create_channel(
        self,
        channel_id: str,
        project_id: str | None = None,
        type: str = "private",
        state: dict[str, Any] | None = None,
        *,
        capabilities: int | None = None,
        sequenced: bool = False,
    ) -> Channel:
        """Create (or replace the settings of) a channel; returns its model."""
        if type not in ("private", "public", "unprotected"):
            raise ValueError(f"channel type must be private, public or unprotected, not {type!r}")
        project = project_id or self.project_id
        self._check_storable(state)
        with self._lock:
            self._projects.add(project)
            channel = _Channel(channel_id, project, type, dict(state or {}), capabilities, sequenced)
            old = self._channels.get(channel_id)
            if old is not None:
                channel.seq = old.seq
            self._channels[channel_id] = channel
            return channel.model()

    def channel(self, channel_id: str) -> Channel:
        """The channel's current model (``KeyError`` if unknown)."""
        with self._lock:
            return self._channels[channel_id].model()

    def delete_channel(self, channel_id: str) -> None:
        """Delete a channel: subscribers get UNAVAILABLE (graceful)."""
        with self._lock:
            channel = self._channels.pop(channel_id)
            frame = frames.dispatch("UNAVAILABLE", channel_id, {"graceful": True, "error_code": None})
            sessions = self._subscribed_sessions(channel.id)
            for session in sessions:
                session.subscriptions.pop(channel_id, None)
            self._fanout([c for s in sessions for c in s.connections], frame)

    def create_pipe_room(
        self,
        name: str,
        project_id: str | None = None,
        *,
        room_id: str | None = None,
        join_token: str | None = None,
        state: str = "offline",
        ingest_protocol: str = "rtmp",
        delivery_protocols: Iterable[str] = ("webrtc", "llhls"),
        ingest_region: str = "us-east-1",
        created_at: str = "2026-01-01T00:00:00Z",
    ) -> PipeRoom:
        """Create a Pipe room; clients join it with its ``join_token``."""
        room = PipeRoom(
            id=room_id or f"pipe_room_{secrets.token_hex(6)}",
            name=name,
            created_at=created_at,
            ingest_protocol=ingest_protocol,
            delivery_protocols=tuple(delivery_protocols),
            join_token=join_token or f"join_{secrets.token_hex(8)}",
            ingest_region=ingest_region,
            state=state,
        )
        with self._lock:
            self._pipe_rooms[room.id] = _PipeRoom(room, project_id or self.project_id, self._connection_map(room))
        return room

    def update_pipe_room(
        self, room_id: str, *, state: str | None = None, connection: dict[str, Any] | None = None
    ) -> PipeRoom:
        """Change a room (``state`` ``"live"``/``"offline"``); subscribers get
        PIPE_ROOM_UPDATE."""
        with self._lock:
            record = self._pipe_rooms[room_id]
            if state is not None:
                record.room = attrs.evolve(record.room, state=state)
            record.connection = connection if connection is not None else self._connection_map(record.room)
            frame = frames.dispatch(
                "PIPE_ROOM_UPDATE",
                room_id,
                {"pipe_room": frames.pipe_room_object(record.room), "connection": record.connection},
            )
            self._fanout([c for s in self._sessions_with_room(room_id) for c in s.connections], frame)
            return record.room

    def delete_pipe_room(self, room_id: str) -> None:
        """Delete a room: subscribers get PIPE_ROOM_UNAVAILABLE (graceful)."""
        with self._lock:
            record = self._pipe_rooms.pop(room_id)
            frame = frames.dispatch(
                "PIPE_ROOM_UNAVAILABLE",
                room_id,
                {"graceful": True, "error_code": None, "join_token": record.room.join_token},
            )
            sessions = self._sessions_with_room(room_id)
            for session in sessions:
                session.pipe_rooms.pop(room_id, None)
            self._fanout([c for s in sessions for c in s.connections], frame)

    @staticmethod
    def _connection_map(room: PipeRoom) -> dict[str, Any]:
        if room.state != "live":
            return {}
        return {
            protocol: {
                "edge_endpoint": f"https://edge.example.invalid/{room.id}/{protocol}",
                "type": protocol,
                "serving_pop": "local",
            }
            for protocol in room.delivery_protocols
        }

    # -- control: events to clients ----------------------------------------------------

    def publish(self, channel_id: str, event: str, data: Any = None) -> int:
        """Send MESSAGE to every subscriber of the channel; returns how many
        connections it was written to. ``KeyError`` if the channel does not exist."""
        return self.publish_many(channel_id, event, (data,))

    def publish_many(self, channel_id: str, event: str, datas: Iterable[Any], *, chunk: int = 512) -> int:
        """Send one MESSAGE per item of ``datas``, in order, to every subscriber.

        Messages are encoded and written ``chunk`` at a time (one socket write per
        chunk and connection), so a long burst streams steadily instead of stalling
        while it is encoded. Returns the number of connections written to. A value
        that cannot be encoded for a subscriber raises :class:`LeapEncodeError`
        before its chunk is written (earlier chunks were sent; no sequence number is
        spent on the failed chunk).
        """
        with self._lock:
            channel = self._channels[channel_id]
            conns = [c for s in self._subscribed_sessions(channel_id) for c in s.connections]
            ok = dict.fromkeys(conns, True)
            iterator = iter(datas)
            while True:
                items = list(itertools.islice(iterator, chunk))
                if not items:
                    break
                first = channel.seq + 1
                built = [
                    frames.message_dispatch(
                        channel_id, event, data, unicast=False, seq=first + i if channel.sequenced else None
                    )
                    for i, data in enumerate(items)
                ]
                # Encode for every subscriber's codec before writing anything.
                cache: dict[tuple[str, str], list[bytes]] = {}
                for conn in conns:
                    key = (conn.encoding, conn.compression)
                    if key not in cache:
                        cache[key] = [unmasked_message(conn.encode(f)) for f in built]
                if channel.sequenced:
                    channel.seq += len(items)
                for conn in conns:
                    wires = cache[(conn.encoding, conn.compression)]
                    if channel.sequenced:
                        for i, wire in enumerate(wires):
                            ok[conn] = conn.send_wire(wire, channel=channel_id, seq=first + i) and ok[conn]
                    else:
                        ok[conn] = conn.send_wire(b"".join(wires), count=len(wires)) and ok[conn]
            return sum(ok.values())

    def set_channel_state(self, channel_id: str, state: dict[str, Any]) -> int:
        """Replace a channel's state; subscribers get STATE_UPDATE. A state that cannot
        be encoded raises :class:`LeapEncodeError` and changes nothing."""
        state = dict(state)
        self._check_storable(state)
        with self._lock:
            channel = self._channels[channel_id]
            frame = frames.dispatch("STATE_UPDATE", channel_id, {"state": state})
            wires = self._encode_for(self._subscribers(channel_id), frame)
            channel.state = state
            return self._write(wires)

    def send_direct_message(self, token: str, event: str, data: Any = None, *, cid: str | None = None) -> int:
        """DIRECT_MESSAGE to every connection of the token's session, or, with ``cid``,
        to that one connection only (marked unicast)."""
        with self._lock:
            frame = frames.message_dispatch(None, event, data, unicast=cid is not None, direct=True)
            if cid is not None:
                return self._fanout([self._conns[cid]], frame)
            session = self._sessions.get(token)
            return self._fanout(session.connections, frame) if session else 0

    def set_token_state(self, token: str, state: Any) -> int:
        """Change a token's state; its connections get TOKEN_STATE_UPDATE."""
        self._check_storable(state)
        with self._lock:
            record = self._tokens[token]
            session = self._sessions.get(token)
            frame = frames.dispatch("TOKEN_STATE_UPDATE", None, {"state": state})
            wires = self._encode_for(session.connections if session else (), frame)
            record.state = state
            return self._write(wires)

    def send_event(self, event: str, data: Any = None, *, channel_id: str | None = None, cid: str | None = None) -> int:
        """Send any dispatch event (for example one clients do not know) to one
        connection or to all."""
        return self.send_frame(frames.dispatch(event, channel_id, data), cid=cid)

    def request_heartbeat(self, tag: str | None = None, *, cid: str | None = None) -> list[str]:
        """Send a tagged heartbeat request (op 3) to one connection or to all; each must
        answer within ``heartbeat_request_timeout``, else it is closed 4007. ``tag``
        defaults to a random one. Returns the cids the request was written to."""
        tag = tag if tag is not None else secrets.token_hex(4)
        sent = []
        for conn in self._targets(cid):
            with conn.lock:
                frame = conn.protocol.request_heartbeat(tag, time.monotonic())
            if conn.send(frame):
                sent.append(conn.cid)
        return sent

    # -- control: faults ---------------------------------------------------------------

    def disconnect(self, code: int = 4000, reason: str = "", *, cid: str | None = None) -> int:
        """Close every connection (or one), identified or not, with ``code`` and
        ``reason`` (for 4006, the reason is the new endpoint). Returns how many were
        closed."""
        conns = self._targets(cid, identified_only=False)
        for conn in conns:
            conn.ws.close(code, reason)  # a silenced connection closes with this code too
        return len(conns)

    def drop(self, *, cid: str | None = None) -> int:
        """Cut every TCP connection (or one) without a close frame, identified or not.

        The socket is shut down without waiting for a write in progress (that write
        fails), so a connection whose client stopped reading can be cut too."""
        conns = self._targets(cid, identified_only=False)
        for conn in conns:
            conn.open = False
            _cut(conn.ws.socket)
        return len(conns)

    def pause_acks(self, paused: bool = True) -> None:
        """Stop (or resume) acknowledging heartbeats, on every connection."""
        self._acks_paused = paused

    def enforce_heartbeats(self, enforced: bool = True) -> None:
        """Stop (or resume) closing clients that miss the heartbeat schedule (4007)."""
        self._enforce_heartbeats = enforced

    def silence(self, *, cid: str | None = None) -> int:
        """Make the current connections (or one) go fully silent: nothing is sent, what
        they send is ignored, nothing is enforced, nothing is closed. New connections
        are served normally."""
        conns = self._targets(cid, identified_only=False)
        for conn in conns:
            conn.silent = True
        return len(conns)

    def send_frame(self, frame: dict[str, Any], *, cid: str | None = None) -> int:
        """Encode ``frame`` with each connection's codec and send it as it is."""
        return self._fanout(self._targets(cid, identified_only=False), frame)

    def send_raw(self, payload: Payload, *, cid: str | None = None) -> int:
        """Send one websocket message with this exact payload (text for ``str``)."""
        return sum(conn.send_wire(unmasked_message(payload)) for conn in self._targets(cid, identified_only=False))

    def send_raw_bytes(self, data: bytes, *, cid: str | None = None) -> int:
        """Write bytes straight to the TCP stream, bypassing websocket framing (to test
        a client's frame parser: garbage, split frames, protocol violations)."""
        return sum(conn.send_wire(data) for conn in self._targets(cid, identified_only=False))

    # -- introspection -----------------------------------------------------------------

    @property
    def connections(self) -> list[ConnectionInfo]:
        """The live connections, oldest first."""
        with self._lock:
            return [conn.info() for conn in self._conns.values()]

    @property
    def frames_in(self) -> int:
        """Messages received from clients, over every connection since the start."""
        with self._lock:
            return sum(conn.frames_in for conn in self._history)

    @property
    def frames_out(self) -> int:
        """Frames written to clients, over every connection since the start."""
        with self._lock:
            return sum(conn.frames_out for conn in self._history)

    @property
    def all_connections(self) -> list[ConnectionInfo]:
        """Every connection since the server started, oldest first, closed ones included."""
        with self._lock:
            return [conn.info() for conn in self._history]

    def wait_for_connections(
        self, count: int = 1, timeout: float = 10.0, *, identified: bool = True
    ) -> list[ConnectionInfo]:
        """Block until at least ``count`` live connections (identified ones by default)
        exist; return them. ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                conns = [c for c in self._conns.values() if c.identify is not None or not identified]
                if len(conns) >= count:
                    return [c.info() for c in conns]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(conns)} of {count} connections after {timeout:g} s")
                self._changed.wait(remaining)

    def wait_for(self, predicate: Callable[[LeapEdgeServer], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(server)`` holds, re-checked at every connection
        change (connect, identify, subscribe, close, heartbeat). ``TimeoutError``
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout:g} s")
                self._changed.wait(remaining)

    def subscribers(self, channel_id: str) -> list[str]:
        """The cids of the live connections subscribed to a channel."""
        with self._lock:
            return [c.cid for s in self._subscribed_sessions(channel_id) for c in s.connections]

    # -- internals: targets and fan-out ------------------------------------------------

    def _targets(self, cid: str | None, identified_only: bool = True) -> list[_Conn]:
        # No ``_lock`` here: a control call blocked writing to a client that stopped
        # reading holds it, and the faults (drop, disconnect, silence) must still
        # reach that client. Copying the dict is atomic under the GIL.
        conns = dict(self._conns)
        if cid is not None:
            return [conns[cid]]
        return [c for c in conns.values() if c.identify is not None or not identified_only]

    def _subscribed_sessions(self, channel_id: str) -> list[_Session]:
        sessions = {id(c.session): c.session for c in self._conns.values() if c.session is not None}
        return [s for s in sessions.values() if channel_id in s.subscriptions]

    def _sessions_with_room(self, room_id: str) -> list[_Session]:
        sessions = {id(c.session): c.session for c in self._conns.values() if c.session is not None}
        return [s for s in sessions.values() if room_id in s.pipe_rooms]

    def _subscribers(self, channel_id: str) -> list[_Conn]:
        return [c for s in self._subscribed_sessions(channel_id) for c in s.connections]

    def _broadcast(self, channel_id: str, frame: dict[str, Any]) -> int:
        return self._fanout(self._subscribers(channel_id), frame)

    @staticmethod
    def _encode_for(conns: Iterable[_Conn], frame: dict[str, Any]) -> list[tuple[_Conn, bytes]]:
        """Encode ``frame`` once per codec the connections use, all before anything is
        written, so a value one codec cannot carry (:class:`LeapEncodeError`) reaches
        nobody rather than some."""
        cache: dict[tuple[str, str], bytes] = {}
        out = []
        for conn in list(conns):
            key = (conn.encoding, conn.compression)
            wire = cache.get(key)
            if wire is None:
                wire = cache[key] = unmasked_message(conn.encode(frame))
            out.append((conn, wire))
        return out

    @staticmethod
    def _write(wires: list[tuple[_Conn, bytes]]) -> int:
        return sum(conn.send_wire(wire) for conn, wire in wires)

    def _fanout(self, conns: Iterable[_Conn], frame: dict[str, Any]) -> int:
        """Send one frame to connections; returns how many it was written to."""
        return self._write(self._encode_for(conns, frame))

    def _check_storable(self, value: Any) -> None:
        """Raise :class:`LeapEncodeError` for a value that will be sent later (channel
        state, token metadata) but that an encoding this server serves cannot carry."""
        codecs = self._codecs
        if not codecs:
            codecs.append(Codec("json"))
            if erlpack_available():
                codecs.append(Codec("etf"))
        for codec in codecs:
            codec.encode(value)

    # -- internals: connections --------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urllib.parse.urlsplit(request.path)
        if not parts.path.endswith("/ws"):
            return connection.respond(404, "Leap Edge lives at /ws\n")
        query = dict(urllib.parse.parse_qsl(parts.query))
        encoding = query.get("encoding", "json")
        compression = query.get("compression", "none")
        if encoding not in ENCODINGS or compression not in COMPRESSIONS:
            return connection.respond(400, "encoding must be json|etf and compression zlib|none\n")
        if encoding == "etf" and not erlpack_available():
            return connection.respond(400, "this server has no ETF support (install erlpack)\n")
        return None

    def _wrap_handler(self, inner: Callable[[socket.socket, Any], None]) -> Callable[[socket.socket, Any], None]:
        """Wrap websockets' per-connection handler: name its thread, and track its
        socket so :meth:`close` can cut connections that would hold the shutdown."""

        def handler(sock: socket.socket, addr: Any) -> None:
            thread = threading.current_thread()
            thread.name = f"leap-sync-server-{self._number}-conn"
            with self._sockets_lock:
                self._finishing = {t for t in self._finishing if t.is_alive()}
                self._sockets[thread] = sock
                self._handshaking.add(thread)
                closing = self._closing
            if closing:
                _cut(sock)  # accepted while closing: the handshake fails at once
            try:
                inner(sock, addr)
            finally:
                with self._sockets_lock:
                    self._sockets.pop(thread, None)
                    self._handshaking.discard(thread)
                    self._finishing.add(thread)  # close() still joins it

        return handler

    def _handle(self, ws: ServerConnection) -> None:
        with self._sockets_lock:
            self._handshaking.discard(threading.current_thread())
        request = ws.request
        assert request is not None
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.path).query))
        encoding = query.get("encoding", "json")
        compression = query.get("compression", "none")
        now = time.monotonic()
        protocol = ServerSession(
            Codec(encoding, max_size=self._max_message_size),
            interval=self.heartbeat_interval,
            identify_timeout=self.identify_timeout,
            now=now,
            tolerance=self.heartbeat_tolerance,
            request_timeout=self.heartbeat_request_timeout,
            compression=compression == "zlib",
        )
        conn = _Conn(ws, f"conn_{secrets.token_hex(8)}", protocol, encoding, compression)
        with self._changed:
            self._conns[conn.cid] = conn
            self._history.append(conn)
            self._changed.notify_all()
        try:
            conn.send(protocol.hello_frame())
            self._serve(conn)
        finally:
            self._forget(conn)

    def _serve(self, conn: _Conn) -> None:
        ws = conn.ws
        protocol = conn.protocol
        while True:
            with conn.lock:
                protocol.check_heartbeats = self._enforce_heartbeats
                deadline = protocol.deadline
            # A silenced connection enforces nothing: overdue deadlines must not spin.
            timeout = _MAX_WAIT if conn.silent else min(max(deadline - time.monotonic(), 0.0), _MAX_WAIT)
            try:
                message = ws.recv(timeout=timeout)
            except TimeoutError:
                message = None
            except ConnectionClosed:
                return
            if message is not None:
                with conn.lock:
                    conn.frames_in += 1
            if conn.silent:
                if message is not None:
                    with self._changed:
                        self._changed.notify_all()  # frames_in changed
                continue
            now = time.monotonic()
            try:
                with conn.lock:
                    if message is None:
                        protocol.check(now)
                        continue
                    frame, replies = protocol.receive(message, isinstance(message, bytes), now)
                    if isinstance(frame, ClientHeartbeat) and frame.tag is None:
                        conn.heartbeats += 1
                        conn.last_heartbeat = now
                if self._on_frame is not None:
                    self._on_frame(conn.cid, frame)
                if not self._acks_paused:
                    for reply in replies:
                        conn.send(reply)
                self._dispatch(conn, frame)
            except ServerClose as close:
                conn.close_code = close.code
                ws.close(close.code, close.reason[:120])
                return
            if isinstance(frame, ClientHeartbeat):
                with self._changed:
                    self._changed.notify_all()

    def _dispatch(self, conn: _Conn, frame: ClientFrame) -> None:
        """The business logic of one client frame (raises ServerClose)."""
        if isinstance(frame, ClientHeartbeat):
            return
        with self._changed:
            try:
                if isinstance(frame, Identify):
                    self._identify(conn, frame)
                elif isinstance(frame, Subscribe):
                    self._subscribe(conn, frame.channel_id)
                elif isinstance(frame, Unsubscribe):
                    self._unsubscribe(conn, frame.channel_id)
                elif isinstance(frame, SetChannelState):
                    if self._require_subscription(conn, frame.channel_id):
                        self.set_channel_state(frame.channel_id, frame.state)
                elif isinstance(frame, SendMessage):
                    if self._require_subscription(conn, frame.channel_id):
                        self.publish(frame.channel_id, frame.event_name, frame.data)
                elif isinstance(frame, PipeRoomSubscribe):
                    self._pipe_room_subscribe(conn, frame.join_token)
                elif isinstance(frame, PipeRoomUnsubscribe):
                    self._pipe_room_unsubscribe(conn, frame.room_id)
                elif isinstance(frame, UnknownClientEvent):
                    raise ServerClose(CloseCode.INVALID_PAYLOAD, f"unknown event {frame.event_name[:50]}")
            except LeapEncodeError as exc:
                # Decoded, but not relayable (NaN from lenient JSON, an int ETF cannot
                # carry): nothing was sent to anyone, the sender's payload is invalid.
                raise ServerClose(CloseCode.INVALID_PAYLOAD, f"payload cannot be relayed: {exc}") from None
            finally:
                self._changed.notify_all()

    def _identify(self, conn: _Conn, ident: Identify) -> None:
        now = time.monotonic()
        if ident.token is not None:
            token = self._tokens.get(ident.token)
            if token is None or token.project_id != ident.project_id:
                raise ServerClose(CloseCode.INVALID_AUTH, "invalid auth")
            session = self._sessions.get(ident.token)
            if (
                session is not None
                and not session.connections
                and session.empty_since is not None
                and now - session.empty_since > self.session_ttl
            ):
                session = None  # expired: a new session, without the old subscriptions
            if session is None:
                session = self._sessions[ident.token] = _Session(token)
            scope = token.scope
            metadata = token.metadata
        else:
            if ident.project_id not in self._projects:
                raise ServerClose(CloseCode.INVALID_AUTH, "invalid auth")
            session = _Session(None)
            scope = "noauth"
            metadata = None
        session.connections.add(conn)
        session.empty_since = None
        conn.identify = ident
        conn.session = session
        channels = [self._channels[c].model() for c in session.subscriptions if c in self._channels]
        init = frames.dispatch(
            "INIT",
            None,
            {
                "cid": conn.cid,
                "connection_count": len(session.connections),
                "metadata": metadata,
                "scope": scope,
                "channels": [frames.channel_object(c) for c in channels],
            },
        )
        conn.send(init)

    def _allowed(self, conn: _Conn, channel: _Channel) -> bool:
        ident = conn.identify
        assert ident is not None
        if channel.project_id != ident.project_id:
            return False
        if channel.type == "unprotected":
            return True
        if ident.token is None:
            return False
        token = self._tokens.get(ident.token)
        if token is None:
            return False
        if channel.type == "public":
            return True
        return token.grants is None or channel.id in token.grants

    def _subscribe(self, conn: _Conn, channel_id: str) -> None:
        session = conn.session
        assert session is not None
        channel = self._channels.get(channel_id)
        if channel is None or (conn.identify and channel.project_id != conn.identify.project_id):
            conn.send(frames.dispatch("UNAVAILABLE", channel_id, {"graceful": False, "error_code": "UNKNOWN"}))
            return
        if not self._allowed(conn, channel):
            conn.send(frames.dispatch("UNAVAILABLE", channel_id, {"graceful": False, "error_code": "NOT_GRANTED"}))
            return
        session.subscriptions[channel_id] = None
        frame = frames.dispatch("AVAILABLE", channel_id, {"channel": frames.channel_object(channel.model())})
        self._fanout(session.connections, frame)

    def _unsubscribe(self, conn: _Conn, channel_id: str) -> None:
        session = conn.session
        assert session is not None
        session.subscriptions.pop(channel_id, None)
        frame = frames.dispatch("UNAVAILABLE", channel_id, {"graceful": True, "error_code": None})
        self._fanout(session.connections, frame)

    def _require_subscription(self, conn: _Conn, channel_id: str) -> bool:
        session = conn.session
        if session is not None and channel_id in session.subscriptions and channel_id in self._channels:
            return True
        conn.send(frames.dispatch("UNAVAILABLE", channel_id, {"graceful": False, "error_code": "UNKNOWN"}))
        return False

    def _pipe_room_subscribe(self, conn: _Conn, join_token: str) -> None:
        session = conn.session
        assert session is not None and conn.identify is not None
        record = next(
            (
                r
                for r in self._pipe_rooms.values()
                if r.room.join_token == join_token and r.project_id == conn.identify.project_id
            ),
            None,
        )
        if record is None:
            conn.send(
                frames.dispatch(
                    "PIPE_ROOM_UNAVAILABLE",
                    None,
                    {"graceful": False, "error_code": "UNKNOWN", "join_token": join_token},
                )
            )
            return
        session.pipe_rooms[record.room.id] = None
        frame = frames.dispatch(
            "PIPE_ROOM_AVAILABLE",
            record.room.id,
            {"pipe_room": frames.pipe_room_object(record.room), "connection": record.connection},
        )
        self._fanout(session.connections, frame)

    def _pipe_room_unsubscribe(self, conn: _Conn, room_id: str) -> None:
        session = conn.session
        assert session is not None
        session.pipe_rooms.pop(room_id, None)
        record = self._pipe_rooms.get(room_id)
        frame = frames.dispatch(
            "PIPE_ROOM_UNAVAILABLE",
            room_id,
            {"graceful": True, "error_code": None, "join_token": record.room.join_token if record else None},
        )
        self._fanout(session.connections, frame)

    def _forget(self, conn: _Conn) -> None:
        with self._changed:
            conn.open = False
            if conn.close_code is None:
                conn.close_code = conn.ws.close_code
            self._conns.pop(conn.cid, None)
            session = conn.session
            if session is not None:
                session.connections.discard(conn)
                if not session.connections:
                    session.empty_since = time.monotonic()
            self._changed.notify_all()
