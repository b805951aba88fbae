"""What a client makes of the end of a connection, whatever the protocol.

:class:`CloseAction` is a client's reaction to a close code (each protocol maps its codes
to one: Leap Edge in :func:`leap_sync.protocol.opcodes.close_action`, Elstat in
:mod:`leap_sync.elstat.client`). :data:`UNKNOWN_ERROR` is the code a client closes with
for an error that has no code of its own.
"""

from __future__ import annotations

import enum

__all__ = ["UNKNOWN_ERROR", "CloseAction"]

UNKNOWN_ERROR = 4000
"""The close code for an error of no named kind: 4000, the first of RFC 6455's private-use
codes (section 7.4.2), which both Leap Edge and Elstat read as "unknown error"."""


class CloseAction(enum.Enum):
    """What a client does after the connection closes with a given code."""

    RECONNECT = "reconnect"
    """Reconnect to the same endpoint after a backoff delay."""
    REDIRECT = "redirect"
    """Reconnect at once to the endpoint given in the close reason (4006)."""
    FATAL = "fatal"
    """Do not reconnect: the error cannot heal by retrying (4001)."""
