"""The logger the embedded servers give websockets' sans-I/O protocol, which at DEBUG
logs every frame it reads or writes (``< TEXT '{"op":2,"d":{"token":...}}'``) and every
handshake header: a client's Identify, token included, would reach a log line.

:data:`WEBSOCKETS_LOGGER` is the servers' own logger, ``leap_sync.testing.websockets``
(no other logger is touched: ``websockets.server`` keeps whatever the application set),
with a filter, :class:`RedactFrames`, that rewrites each record before any handler sees
it: a frame is logged by its kind and size only (``< TEXT [52 bytes]``; a close frame
keeps its code, never its reason), and credential headers (``Authorization``,
``Cookie``...) by their name only.
"""

from __future__ import annotations

import logging

from websockets.frames import Close, Frame, Opcode

__all__ = ["WEBSOCKETS_LOGGER", "RedactFrames"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-key"})


def _frame_summary(frame: Frame) -> str:
    """``frame``'s opcode and length (a close frame's code too), never its data."""
    if frame.opcode is Opcode.CLOSE:
        try:
            return f"CLOSE {Close.parse(frame.data).code} [{len(frame.data)} bytes]"
        except Exception:
            return f"CLOSE [{len(frame.data)} bytes]"
    return f"{frame.opcode.name} [{len(frame.data)} bytes]"


class RedactFrames(logging.Filter):
    """Rewrites a record's arguments: frames to :func:`_frame_summary`, the value of a
    credential header to ``[redacted]``. Passes every record (it only rewrites)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            new = tuple(_frame_summary(a) if isinstance(a, Frame) else a for a in args)
            if (
                len(new) == 2
                and isinstance(new[0], str)
                and new[0].lower() in _SECRET_HEADERS
                and isinstance(record.msg, str)
                and record.msg.endswith("%s: %s")
            ):
                new = (new[0], "[redacted]")
            record.args = new
        return True


WEBSOCKETS_LOGGER = logging.getLogger("leap_sync.testing.websockets")
"""The logger of the embedded servers' websockets protocol objects (frames redacted)."""
if not any(isinstance(f, RedactFrames) for f in WEBSOCKETS_LOGGER.filters):
    WEBSOCKETS_LOGGER.addFilter(RedactFrames())
