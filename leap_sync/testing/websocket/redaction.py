"""What the embedded servers log never shows a secret.

websockets' sans-I/O protocol logs at DEBUG every frame it reads or writes
(``< TEXT '{"op":2,"d":{"token":...}}'``), the upgrade request line
(``< GET /ws?token=... HTTP/1.1``) and every handshake header: a client's token
would reach a log line. :data:`WEBSOCKETS_LOGGER` is the servers' own logger for it,
``leap_sync.testing.websockets`` (no other logger is touched: ``websockets.server``
keeps whatever the application set), with two filters that rewrite each record
before any handler sees it:

- :class:`RedactFrames`: a frame is logged by its kind and size only
  (``< TEXT [52 bytes]``; a close frame keeps its code, never its reason); a
  credential header (``Authorization``, ``Cookie``, or any credential-named one such
  as ``X-Leap-Token`` or ``X-Api-Key``) by its name only; the request target with its
  credential-named query parameters (``?token=``) redacted;
- :class:`RedactSecrets`: every secret a live server registered
  (:func:`register_secrets`: a :class:`~leap_sync.testing.LeapEdgeServer` registers
  each token ever added to it) becomes ``[redacted]`` wherever it stands in the
  record (its message, its arguments, its exception's traceback), as is or escaped,
  percent-encoded or cut (:class:`~leap_sync.wire.secrets.TokenRedactor`).

:class:`RedactSecrets` also filters the servers' other logger, ``leap_sync.testing``
(a failed connection's or control request's traceback).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import weakref
from collections.abc import Iterable
from typing import Protocol

from websockets.frames import Close, Frame, Opcode

from ...wire.secrets import TokenRedactor
from ...wire.urls import is_secret_param, redact_url

__all__ = ["MARK", "SERVERS_LOGGER", "WEBSOCKETS_LOGGER", "RedactFrames", "RedactSecrets", "register_secrets"]

MARK = "[redacted]"

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-key"})
_REQUEST_LINE = re.compile(r"^([<>] [A-Z]+ )(\S+)( HTTP/\S+)$")


class SecretSource(Protocol):
    """What :func:`register_secrets` takes: ``log_secrets()`` returns the secrets to
    keep out of the logs now (cheap, lock-free: it runs inside logging calls)."""

    def log_secrets(self) -> Iterable[str]: ...


_sources: weakref.WeakSet[SecretSource] = weakref.WeakSet()
_sources_lock = threading.Lock()


def register_secrets(source: SecretSource) -> None:
    """Redact ``source.log_secrets()`` from every record of the servers' loggers
    while ``source`` lives (held weakly)."""
    with _sources_lock:
        _sources.add(source)


@functools.lru_cache(maxsize=1024)
def _redactor(secret: str) -> TokenRedactor:
    return TokenRedactor(secret, MARK)


def _redactors() -> list[TokenRedactor]:
    """One redactor per registered secret, the longest first."""
    with _sources_lock:
        sources = list(_sources)
    secrets: set[str] = set()
    for source in sources:
        secrets.update(s for s in source.log_secrets() if isinstance(s, str) and s)
    return [_redactor(s) for s in sorted(secrets, key=len, reverse=True)]


def _frame_summary(frame: Frame) -> str:
    """``frame``'s opcode and length (a close frame's code too), never its data."""
    if frame.opcode is Opcode.CLOSE:
        try:
            return f"CLOSE {Close.parse(frame.data).code} [{len(frame.data)} bytes]"
        except Exception:
            return f"CLOSE [{len(frame.data)} bytes]"
    return f"{frame.opcode.name} [{len(frame.data)} bytes]"


def _is_secret_header(name: str) -> bool:
    return name.lower() in _SECRET_HEADERS or is_secret_param(name)


class RedactFrames(logging.Filter):
    """Rewrites a record's arguments: frames to :func:`_frame_summary`, the value of a
    credential header to ``[redacted]``, the request target's credential-named query
    values too. Passes every record (it only rewrites)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            new = tuple(_frame_summary(a) if isinstance(a, Frame) else a for a in args)
            if (
                len(new) == 2
                and isinstance(new[0], str)
                and _is_secret_header(new[0])
                and isinstance(record.msg, str)
                and record.msg.endswith("%s: %s")
            ):
                new = (new[0], MARK)
            record.args = new
        try:
            message = record.getMessage()
        except Exception:
            return True
        line = _REQUEST_LINE.match(message)
        if line is not None:
            shown = f"{line.group(1)}{redact_url(line.group(2), MARK)}{line.group(3)}"
            if shown != message:
                record.msg, record.args = shown, None
        return True


_FORMATTER = logging.Formatter()


class RedactSecrets(logging.Filter):
    """Replaces every registered secret (:func:`register_secrets`) in a record's
    message (arguments applied), exception text and stack by ``[redacted]``. A record
    that held one keeps its level and logger; its exception is then carried as
    redacted text (``exc_text``) rather than as the exception. Passes every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redactors = _redactors()
        if not redactors:
            return True

        def redact(text: str) -> str:
            for redactor in redactors:
                text = redactor(text)
            return text

        try:
            message = record.getMessage()
        except Exception:
            message = None
        if message is not None:
            shown = redact(message)
            if shown != message:
                record.msg, record.args = shown, None
        if record.exc_info is not None and record.exc_info[0] is not None:
            text = record.exc_text or _FORMATTER.formatException(record.exc_info)
            shown = redact(text)
            if shown != text:
                record.exc_info, record.exc_text = None, shown
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


WEBSOCKETS_LOGGER = logging.getLogger("leap_sync.testing.websockets")
"""The logger of the embedded servers' websockets protocol objects (redacted)."""
SERVERS_LOGGER = logging.getLogger("leap_sync.testing")
"""The embedded servers' own logger (registered secrets redacted)."""
if not any(isinstance(f, RedactFrames) for f in WEBSOCKETS_LOGGER.filters):
    WEBSOCKETS_LOGGER.addFilter(RedactFrames())
for _logger in (WEBSOCKETS_LOGGER, SERVERS_LOGGER):
    if not any(isinstance(f, RedactSecrets) for f in _logger.filters):
        _logger.addFilter(RedactSecrets())
