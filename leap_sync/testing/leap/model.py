"""What the embedded Leap Edge server knows: projects, tokens, channels, sessions and
Pipe rooms, as plain records with the rules that read them. No I/O and no locking
here: the server holds its model lock around every use.

Model, as Leap Edge behaves:

- A token belongs to a project and grants either every channel of it (``grants=None``)
  or the listed channel ids. Connections with the same token share a *session*, whose
  subscriptions persist for ``session_ttl`` seconds after its last connection closes.
  A tokenless connection (``scope`` ``"noauth"``) has a session of its own, which dies
  with it, and reaches only ``unprotected`` channels.
- ``private`` channels need a grant; ``public`` channels admit any token of the
  project; ``unprotected`` channels admit anyone in the project, tokenless included.
"""

from __future__ import annotations

from typing import Any

import attrs

from ...protocol.models import Channel, Identify, PipeRoom
from ...protocol.opcodes import CloseCode
from ...protocol.server_session import ServerClose

__all__ = ["ChannelRecord", "Model", "PipeRoomRecord", "Session", "TokenRecord", "connection_map"]

CHANNEL_TYPES = ("private", "public", "unprotected")


@attrs.define(eq=False)
class TokenRecord:
    token: str = attrs.field(repr=False)
    project_id: str
    grants: frozenset[str] | None
    metadata: Any
    scope: str
    state: Any = None


@attrs.define(eq=False)
class ChannelRecord:
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
class PipeRoomRecord:
    room: PipeRoom
    project_id: str
    connection: dict[str, Any]


@attrs.define(eq=False)
class Session:
    """The connections sharing one token (or one tokenless connection) and what they
    subscribed to, in subscription order."""

    token: TokenRecord | None
    connections: set[Any] = attrs.field(factory=set)
    """The live :class:`~leap_sync.testing.leap.connection.LeapConnection` objects of this
    session (``Any`` here: the model sits below the connections that refer to it)."""
    subscriptions: dict[str, None] = attrs.field(factory=dict)
    pipe_rooms: dict[str, None] = attrs.field(factory=dict)
    empty_since: float | None = None


def connection_map(room: PipeRoom) -> dict[str, Any]:
    """The ``connection`` map of a room: one entry per delivery protocol when live."""
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


class Model:
    """Projects, tokens, channels, Pipe rooms and token sessions (not thread-safe)."""

    def __init__(self, project_id: str, session_ttl: float) -> None:
        self.session_ttl = session_ttl
        self.projects: set[str] = {project_id}
        self.tokens: dict[str, TokenRecord] = {}
        self.channels: dict[str, ChannelRecord] = {}
        self.pipe_rooms: dict[str, PipeRoomRecord] = {}
        self.sessions: dict[str, Session] = {}
        """Token sessions by token (tokenless sessions are reachable only from their
        connection)."""

    def session_for(self, ident: Identify, now: float) -> tuple[Session, str, Any]:
        """The session an Identify joins, its INIT ``scope`` and ``metadata``; raises
        :class:`ServerClose` 4001 for an unknown token or project."""
        if ident.token is None:
            if ident.project_id not in self.projects:
                raise ServerClose(CloseCode.INVALID_AUTH, "invalid auth")
            return Session(None), "noauth", None
        token = self.tokens.get(ident.token)
        if token is None or token.project_id != ident.project_id:
            raise ServerClose(CloseCode.INVALID_AUTH, "invalid auth")
        session = self.sessions.get(ident.token)
        if (
            session is not None
            and not session.connections
            and session.empty_since is not None
            and now - session.empty_since > self.session_ttl
        ):
            session = None  # expired: a new session, without the old subscriptions
        if session is None:
            session = self.sessions[ident.token] = Session(token)
        return session, token.scope, token.metadata

    def allowed(self, ident: Identify, channel: ChannelRecord) -> bool:
        """Whether a connection identified with ``ident`` may subscribe to ``channel``."""
        if channel.project_id != ident.project_id:
            return False
        if channel.type == "unprotected":
            return True
        if ident.token is None:
            return False
        token = self.tokens.get(ident.token)
        if token is None:
            return False
        if channel.type == "public":
            return True
        return token.grants is None or channel.id in token.grants

    def pipe_room_by_join_token(self, join_token: str, project_id: str) -> PipeRoomRecord | None:
        return next(
            (r for r in self.pipe_rooms.values() if r.room.join_token == join_token and r.project_id == project_id),
            None,
        )
