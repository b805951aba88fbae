"""The logger interface of the Go SDK, in Python, and its three implementations.

A logger is any object with ``debug(message, metadata)``, ``info(message, metadata)``,
``warn(message, metadata)`` and ``error(message, err, metadata)``; ``metadata`` is a
dict or ``None`` and ``err`` an exception or ``None``. Loggers must not raise (leap-sync
guards the calls anyway) and must not block for long: they run on the client's I/O
thread.

- :class:`FmtLogger` prints to stderr at the level ``HOP_LOGGING_LEVEL`` names
  (``debug``, ``info``, ``warn`` or ``error``; default ``info``), like the Go SDK's.
- :class:`NopLogger` drops everything.
- :class:`StdlibLogger` forwards to a :class:`logging.Logger` (or a
  :class:`logging.LoggerAdapter`); with ``logger=None`` a client uses
  ``StdlibLogger(logging.getLogger("leap_sync"))``, silent unless the application
  configures logging. A client also takes a ``logging.Logger`` or ``LoggerAdapter``
  as ``logger=`` directly and wraps it in a :class:`StdlibLogger` (:func:`as_logger`).

leap-sync never passes a token to a logger: Identify is logged with the token redacted.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO, Union, runtime_checkable

__all__ = [
    "EXTRA_KEY",
    "LEVELS",
    "AnyLogger",
    "FmtLogger",
    "Logger",
    "NopLogger",
    "StdlibLogger",
    "as_logger",
    "printable",
]

Metadata = Mapping[str, Any] | None
LEVELS = ("debug", "info", "warn", "error")
EXTRA_KEY = "leap_sync"
"""The one ``extra`` key :class:`StdlibLogger` sets on a ``LogRecord``: the record's
``leap_sync`` attribute is the metadata dict (never a LogRecord attribute's name, so it
cannot collide with one)."""

# A library's logger stays silent until the application configures logging: without a
# handler of its own, warnings would reach stderr through logging's "last resort".
logging.getLogger("leap_sync").addHandler(logging.NullHandler())


@runtime_checkable
class Logger(Protocol):
    """The logging interface leap-sync calls (the Go SDK's, method for method).

    Any object with these four methods will do (a structural protocol: no base class
    needed). The client calls them on its callbacks thread, one at a time, in order;
    ``metadata`` is a mapping of extra fields (``None`` when there are none) and holds
    no token."""

    def debug(self, message: str, metadata: Metadata = None) -> None:
        """The connection's story, step by step: connecting, upgrade, hello, identify
        (the token redacted), init, subscribe."""
        ...

    def info(self, message: str, metadata: Metadata = None) -> None:
        """Events of the connection's life: an attempt that failed, a close and its
        code, a redirect, the delay before reconnecting."""
        ...

    def warn(self, message: str, metadata: Metadata = None) -> None:
        """Something the client handles but you may want to know: a connection
        presumed dead, a close code ignored, a thread that did not stop in time."""
        ...

    def error(self, message: str, err: BaseException | None = None, metadata: Metadata = None) -> None:
        """A failure, with the exception behind it when there is one (``err`` may be
        ``None``): a protocol error from the server, the client giving up."""
        ...


_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` safe for a terminal and any output encoding: control characters
    (escape sequences a server may send) and lone surrogates become backslash escapes."""
    text = text.translate(_CONTROLS)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _format_metadata(metadata: Metadata) -> str:
    if not metadata:
        return ""
    return " " + " ".join(f"{key}={value!r}" for key, value in metadata.items())


class NopLogger:
    """Logs nothing."""

    def debug(self, message: str, metadata: Metadata = None) -> None:
        pass

    def info(self, message: str, metadata: Metadata = None) -> None:
        pass

    def warn(self, message: str, metadata: Metadata = None) -> None:
        pass

    def error(self, message: str, err: BaseException | None = None, metadata: Metadata = None) -> None:
        pass


class FmtLogger:
    """Prints ``<time> <LEVEL> leap: message key=value...`` lines to ``stream``
    (stderr by default) at or above ``level``, which defaults to the
    ``HOP_LOGGING_LEVEL`` environment variable (``info`` when unset or unknown).
    Control characters and lone surrogates in a line (a server's text quoted in an
    error) are written as backslash escapes."""

    def __init__(self, level: str | None = None, stream: TextIO | None = None) -> None:
        if level is None:
            level = os.environ.get("HOP_LOGGING_LEVEL", "info").strip().lower()
        if level == "warning":
            level = "warn"
        if level not in LEVELS:
            level = "info"
        self.level = level
        self._threshold = LEVELS.index(level)
        self._stream = stream
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FmtLogger(level={self.level!r})"

    def _write(self, level: str, message: str, metadata: Metadata, err: BaseException | None = None) -> None:
        if LEVELS.index(level) < self._threshold:
            return
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level.upper():5} leap: {message}"
        if err is not None:
            line += f" error={err}"
        line = printable(line + _format_metadata(metadata))  # a peer's text never drives a terminal
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed stream must not break the client

    def debug(self, message: str, metadata: Metadata = None) -> None:
        self._write("debug", message, metadata)

    def info(self, message: str, metadata: Metadata = None) -> None:
        self._write("info", message, metadata)

    def warn(self, message: str, metadata: Metadata = None) -> None:
        self._write("warn", message, metadata)

    def error(self, message: str, err: BaseException | None = None, metadata: Metadata = None) -> None:
        self._write("error", message, metadata, err)


class StdlibLogger:
    """Forwards to a standard :class:`logging.Logger` or :class:`logging.LoggerAdapter`.

    The record's message is ``message [error=...] key=value...`` (so any formatter
    shows the metadata and the error on one line); the metadata dict is also the record's ``leap_sync`` attribute
    (``extra={"leap_sync": metadata}``: one key, which no ``LogRecord`` attribute
    has); an ``error()``'s exception is the record's ``exc_info`` (formatters print it
    after the message). A ``LoggerAdapter``'s ``process()`` runs as usual (its own
    ``extra`` is kept, and ``leap_sync`` added to it)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("leap_sync")

    def __repr__(self) -> str:
        return f"StdlibLogger({self.logger.name!r})"

    def _log(self, level: int, message: str, metadata: Metadata, err: BaseException | None = None) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        extra = {EXTRA_KEY: dict(metadata or {})}
        exc_info = (type(err), err, err.__traceback__) if err is not None else None
        text = message
        if err is not None:
            text += f" error={err}"  # one line shows it too (exc_info adds the traceback)
        text += _format_metadata(metadata)
        if isinstance(logger, logging.LoggerAdapter):
            # An adapter's process() replaces extra by its own (before Python 3.13's
            # merge_extra): run it, then add ours back.
            text, kwargs = logger.process(text, {"extra": extra, "exc_info": exc_info})
            kwargs["extra"] = {**(kwargs.get("extra") or {}), **extra}
            logger.logger.log(level, "%s", text, **kwargs)
        else:
            logger.log(level, "%s", text, extra=extra, exc_info=exc_info)

    def debug(self, message: str, metadata: Metadata = None) -> None:
        self._log(logging.DEBUG, message, metadata)

    def info(self, message: str, metadata: Metadata = None) -> None:
        self._log(logging.INFO, message, metadata)

    def warn(self, message: str, metadata: Metadata = None) -> None:
        self._log(logging.WARNING, message, metadata)

    def error(self, message: str, err: BaseException | None = None, metadata: Metadata = None) -> None:
        self._log(logging.ERROR, message, metadata, err)


AnyLogger = Union[Logger, logging.Logger, "logging.LoggerAdapter[Any]"]
"""What a client takes as ``logger=``: a :class:`Logger`, or a standard library
logger or adapter."""


def as_logger(logger: AnyLogger | None) -> Logger:
    """The :class:`Logger` a client uses for ``logger=``: ``None`` is
    ``StdlibLogger()`` (the ``leap_sync`` logger), a ``logging.Logger`` or
    ``logging.LoggerAdapter`` is wrapped in a :class:`StdlibLogger`, anything else is
    taken as a :class:`Logger`."""
    if logger is None:
        return StdlibLogger()
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return StdlibLogger(logger)
    return logger
