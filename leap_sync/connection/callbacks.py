"""Where user code runs: state listeners and the logger, on a thread of their own.

A listener or logger is the application's code: it may raise, block, or call
``close()``. The client's I/O thread therefore never calls it: it queues each call
here (never blocking), and the ``leap-sync-callbacks-<n>`` thread makes the calls one
at a time, in the order they were queued. A callback that raises is reported to the
logger (a logger that raises is ignored: it is where errors would be reported); one
that blocks delays only later callbacks, never the connection, its heartbeats or
``close()``.

While no callbacks thread runs (before ``connect()``, after the client stopped),
calls made on the application's own threads run inline, on that thread; calls from a
library thread are dropped then. The queue holds at most :data:`MAX_PENDING` log
records (state changes are always kept); the excess is dropped and counted in one
warning once the queue drains.
"""

from __future__ import annotations

import collections
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import LeapError
from ..log import Logger
from ..state import StateInfo

__all__ = ["MAX_PENDING", "Callbacks", "StateListener"]

StateListener = Callable[[StateInfo], None]
MAX_PENDING = 10_000
"""Most log records waiting for a slow logger before new ones are dropped."""
_STOP = object()


def _library_thread() -> bool:
    return threading.current_thread().name.startswith("leap-sync-")


class Callbacks:
    """The callbacks thread of one client, and the logger façade library code uses
    (``debug``/``info``/``warn``/``error`` never raise and never block).

    ``redact`` (set by a client that holds a secret) is applied to every metadata value
    and error before the logger sees it (messages are the library's constant text):
    whatever a peer's text carries into a log record, a secret in it becomes
    ``<redacted>``.
    """

    def __init__(self, name: str, logger: Logger) -> None:
        self.name = name
        self.logger = logger
        self.redact: Callable[[str], str] | None = None
        self.listeners: tuple[StateListener, ...] = ()
        self._items: collections.deque[Any] = collections.deque()
        self._logs = 0  # log records queued
        self._dropped = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # None once it took _STOP
        self._stopping = False
        self._last: threading.Thread | None = None
        self._queued = 0  # items ever queued, and run: for flush()
        self._done = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (``connect()``), or keep the one that was asked to stop
        but has not reached the end of its queue yet."""
        with self._cond:
            if self._thread is not None:
                if self._stopping:
                    self._items = collections.deque(item for item in self._items if item is not _STOP)
                    self._stopping = False
                return
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread = self._last = thread
            self._stopping = False
            # Started under the lock, so no join() sees a thread not yet started (start()
            # returns once the thread runs; its loop then waits for this lock).
            thread.start()

    def stop(self) -> None:
        """Let the thread run what is queued, then end (any thread)."""
        with self._cond:
            if self._thread is not None and not self._stopping:
                self._stopping = True
                self._items.append(_STOP)
                self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait for the last thread started to end (not from itself); ``False`` if it
        still runs (a callback that does not return)."""
        thread = self._last
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def flush(self, timeout: float) -> bool:
        """Wait until every call queued so far has run, at most ``timeout`` seconds
        (at once from the callbacks thread itself, or when no thread runs). ``False``
        if a callback is still running at the deadline."""
        if threading.current_thread() is self._thread:
            return True
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target or self._thread is None, timeout)

    # -- queueing ----------------------------------------------------------------------

    def state(self, info: StateInfo) -> None:
        """Queue ``info`` for every state listener registered now."""
        self._queue((self.listeners, info), log=False)

    def debug(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._queue(("debug", message, metadata, None), log=True)

    def info(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._queue(("info", message, metadata, None), log=True)

    def warn(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._queue(("warn", message, metadata, None), log=True)

    def error(self, message: str, err: BaseException | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        self._queue(("error", message, metadata, err), log=True)

    def _queue(self, item: tuple[Any, ...], log: bool) -> None:
        with self._cond:
            if self._thread is not None and not self._stopping:
                if log:
                    if self._logs >= MAX_PENDING:
                        self._dropped += 1
                        return
                    self._logs += 1
                self._items.append(item)
                self._queued += 1
                self._cond.notify_all()
                return
        if not _library_thread():
            self._call(item)

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._items:
                    cond.wait()
                item = self._items.popleft()
                if item is _STOP:
                    self._thread = None
                    self._stopping = False
                    self._done = self._queued
                    cond.notify_all()
                    return
                if len(item) == 4:
                    self._logs -= 1
                dropped = 0
                if not self._items and self._dropped:
                    dropped, self._dropped = self._dropped, 0
            self._call(item)
            if dropped:
                self._call(("warn", "log records dropped: the logger fell behind", {"dropped": dropped}, None))
            with cond:
                self._done += 1
                cond.notify_all()

    def _call(self, item: tuple[Any, ...]) -> None:
        if len(item) == 2:
            listeners, info = item
            for listener in listeners:
                try:
                    listener(info)
                except BaseException as exc:  # the application's code: never kill this thread
                    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                        raise
                    self._call(("error", "state listener raised", {"state": info.connection_state.value}, exc))
            return
        level, message, metadata, err = item
        try:
            if self.redact is not None:
                message, metadata, err = _redacted(self.redact, message, metadata, err)
            if level == "error":
                self.logger.error(message, err, metadata)
            else:
                getattr(self.logger, level)(message, metadata)
        except BaseException as exc:  # a logger that raises is ignored
            if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise


def _redacted(
    redact: Callable[[str], str], message: str, metadata: Mapping[str, Any] | None, err: BaseException | None
) -> tuple[str, Mapping[str, Any] | None, BaseException | None]:
    """A log record with the secret removed from what may quote a peer: each metadata
    value (shown as text if its ``repr`` held the secret) and the error (replaced by
    a :class:`~leap_sync.errors.LeapError` of the redacted text if it held it). The
    message is the library's own constant text, kept as written. A value or error whose
    text cannot be read (its ``__str__``/``__repr__`` raises: the application's own
    exception) is replaced by a placeholder naming its type, since it cannot be checked."""
    if metadata:
        cleaned: dict[str, Any] = {}
        for key, value in metadata.items():
            if isinstance(value, str):
                value = redact(value)
            else:
                text = _text(repr, value)
                if text is None:
                    value = f"<unprintable {type(value).__name__}>"
                elif redact(text) != text:
                    value = redact(text)
            cleaned[key] = value
        metadata = cleaned
    if err is not None:
        text, shown, chain = _text(str, err), _text(repr, err), _text(_chain, err)
        if text is None or shown is None:
            err = LeapError(f"{type(err).__name__}: <unprintable>")
        elif redact(text) != text or redact(shown) != shown or chain is None or redact(chain) != chain:
            # A logger may print the error's whole chain (logging's exc_info): a secret
            # in a cause or context replaces the error too, by one without a chain.
            err = LeapError(f"{type(err).__name__}: {redact(text)}")
    return message, metadata, err


def _chain(err: BaseException) -> str:
    """What a traceback of ``err`` shows: its causes and contexts included."""
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def _text(show: Callable[[Any], str], value: Any) -> str | None:
    """``show(value)``, or ``None`` when that raises or is not text."""
    try:
        text = show(value)
    except Exception:
        return None
    return text if isinstance(text, str) else None
