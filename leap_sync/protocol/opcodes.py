"""Leap Edge opcodes and close codes, with the client's policy for each close code."""

from __future__ import annotations

import enum

from ..wire.close import UNKNOWN_ERROR, CloseAction

__all__ = ["CloseCode", "Opcode", "close_action"]


class Opcode(enum.IntEnum):
    """The ``op`` field of every Leap Edge frame."""

    DISPATCH = 0
    """Both ways: service events (``{"c", "u", "e", "d"}``)."""
    HELLO = 1
    """Server to client, first frame: ``{"heartbeat_interval": ms}``."""
    IDENTIFY = 2
    """Client to server, answer to Hello: ``{"project_id", "token"}``."""
    HEARTBEAT = 3
    """Both ways: the client's periodic beat, or the server's tagged request."""
    HEARTBEAT_ACK = 4
    """Server to client: ``{"tag", "latency"}`` for an answered tagged request."""


class CloseCode(enum.IntEnum):
    """Leap Edge's websocket close codes."""

    UNKNOWN = UNKNOWN_ERROR
    INVALID_AUTH = 4001
    IDENTIFY_TIMEOUT = 4002
    NOT_AUTHENTICATED = 4003
    UNKNOWN_OPCODE = 4004
    INVALID_PAYLOAD = 4005
    BAD_ROUTE = 4006
    OUT_OF_SYNC = 4007

    @property
    def description(self) -> str:
        """A short human description, as in the Leap Edge documentation."""
        return _DESCRIPTIONS[self]

    @property
    def action(self) -> CloseAction:
        """What a client does after this close code."""
        return close_action(int(self))

    @property
    def reconnects(self) -> bool:
        """Whether a client reconnects after this close code (all but 4001)."""
        return self.action is not CloseAction.FATAL


_DESCRIPTIONS = {
    CloseCode.UNKNOWN: "unknown error",
    CloseCode.INVALID_AUTH: "invalid auth",
    CloseCode.IDENTIFY_TIMEOUT: "identify timeout",
    CloseCode.NOT_AUTHENTICATED: "not authenticated",
    CloseCode.UNKNOWN_OPCODE: "unknown opcode",
    CloseCode.INVALID_PAYLOAD: "invalid payload",
    CloseCode.BAD_ROUTE: "bad route",
    CloseCode.OUT_OF_SYNC: "out of sync",
}


def close_action(code: int | None) -> CloseAction:
    """The client's reaction to a connection that ended with close ``code``.

    ``None`` stands for a connection lost without a close frame (TCP drop, timeout).
    Only 4001 (invalid auth) is fatal; 4006 (bad route) redirects; every other code,
    standard websocket codes included, reconnects after a backoff delay.
    """
    if code == CloseCode.INVALID_AUTH:
        return CloseAction.FATAL
    if code == CloseCode.BAD_ROUTE:
        return CloseAction.REDIRECT
    return CloseAction.RECONNECT
