"""Elstat's rules on one connection of the embedded Elstat server.

:class:`ElstatConnection` is a :class:`~leap_sync.testing.websocket.connection.WebSocketConnection`
(the thread, socket and queue machinery) that checks every client message with
:func:`~leap_sync.elstat.protocol.parse_client_payload` and hands each valid request to
the server (:class:`ElstatHost`). Elstat sends nothing unasked (no hello, no
heartbeats; websockets answers pings), so a connection has no deadline of its own.

What closes a connection:

- a message over :data:`~leap_sync.elstat.protocol.MAX_PAYLOAD` (256) bytes, fragments
  together: 4420 TOO_MUCH. websockets reads no more than that (its ``max_size``) and
  would close 1009; :class:`ElstatServerProtocol` closes 4420 instead. So does a
  message of more than :data:`~leap_sync.testing.websocket.connection.MAX_FRAGMENTS` frames.
- a binary frame, a text frame that is not UTF-8, and whatever
  :func:`~leap_sync.elstat.protocol.parse_client_payload` refuses (not JSON, not an
  object, an unknown op, ``channels`` not a list of strings): 4200 INVALID_PAYLOAD,
  the reason naming the problem.
- a queue of unread frames over ``send_queue_limit``: :data:`SLOW_CONSUMER_CLOSE_CODE`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from websockets.frames import CloseCode as WebSocketCloseCode
from websockets.server import ServerProtocol

from ...elstat.protocol import MAX_PAYLOAD, CloseCode, ElstatClose, Request, parse_client_payload
from ..websocket.connection import WebSocketConnection
from ..websocket.sockets import ConnectionHost, Settings, fit_reason

if TYPE_CHECKING:
    import socket

__all__ = ["SLOW_CONSUMER_CLOSE_CODE", "ElstatConnection", "ElstatHost", "ElstatServerProtocol"]

SLOW_CONSUMER_CLOSE_CODE = WebSocketCloseCode.TRY_AGAIN_LATER
"""The close code of a client shed for not reading (its outbound queue overflowed):
1013, "try again later". Elstat has no code of its own for it, and its two codes
(4200, 4420) tell a client not to come back."""


class ElstatServerProtocol(ServerProtocol):
    """websockets' server protocol, closing 4420 TOO_MUCH (not 1009) for a message
    over its ``max_size``."""

    def fail(self, code: int, reason: str = "") -> None:
        if code == WebSocketCloseCode.MESSAGE_TOO_BIG:
            code, reason = CloseCode.TOO_MUCH, f"payload over {MAX_PAYLOAD} bytes ({reason})"
        super().fail(code, fit_reason(reason))


class ElstatHost(ConnectionHost["ElstatConnection"], Protocol):
    """What an Elstat connection needs from its server, besides :class:`ConnectionHost`."""

    def connection_request(self, conn: ElstatConnection, request: Request) -> None:
        """Answer one SUBSCRIBE or UNSUBSCRIBE (on the connection's thread)."""


class ElstatConnection(WebSocketConnection):
    """One Elstat streaming connection (see the module docstring); its server makes
    it with ``max_message_size`` :data:`~leap_sync.elstat.protocol.MAX_PAYLOAD`.

    ``subscriptions`` (the channels it subscribed to, in order) is guarded by the
    server's lock, not the connection's."""

    slow_consumer_code = SLOW_CONSUMER_CLOSE_CODE
    invalid_text_code = CloseCode.INVALID_PAYLOAD
    message_too_big_code = CloseCode.TOO_MUCH
    protocol_class = ElstatServerProtocol

    def __init__(self, host: ElstatHost, settings: Settings, sock: socket.socket, cid: str, name: str) -> None:
        super().__init__(host, settings, sock, cid, name)
        self.host: ElstatHost = host
        self.subscriptions: dict[str, None] = {}

    def handle_message(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.begin_close(CloseCode.INVALID_PAYLOAD, "binary frame: Elstat payloads are JSON text")
            return
        try:
            request = parse_client_payload(payload)
        except ElstatClose as close:
            self.begin_close(close.code, close.reason)
            return
        self.host.connection_request(self, request)
