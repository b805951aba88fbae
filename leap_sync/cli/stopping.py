"""How a ``leap-sync`` command stops: SIGINT (Ctrl-C) or SIGTERM at any moment after
it started, or the reader of its output going away (a closed pipe).

A signal handler runs on the main thread between two bytecodes, possibly inside the
client's own code with one of its locks held, so it never closes anything itself.
Until a command has something open (no closer registered with :meth:`Stop.on_stop`),
a signal raises ``KeyboardInterrupt`` once (nothing to close: ``main()`` returns 0).
From the first closer on, the handler only wakes the ``leap-sync-cli-stop`` thread,
which sets :attr:`Stop.requested` and calls every closer (``client.close()`` sends a
close frame); the command's main thread, woken by the close, sees
:attr:`Stop.requested` and returns :data:`~leap_sync.cli.common.EXIT_OK` quietly.
Later signals do nothing more.

The same thread watches a pipe on stdout for POLLERR/POLLHUP (its reader closed it:
Linux reports POLLERR on the write end) and stops the command the same way, at once
rather than at its next write. Other outputs (a terminal, a file) are not watched.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Stop", "discard_output", "stopping"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WAKE = b"s"  # stop (signal numbers, from Python's C handler, stop once armed)
_END = b"x"  # the command is over: the watcher ends
JOIN_TIMEOUT = 10.0


def discard_output() -> None:
    """Point stdout at the null device: its reader went away. What is still buffered,
    and whatever is written later (a state line from another thread, the flush at
    exit), goes nowhere instead of raising ``BrokenPipeError`` again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)


class Stop:
    """A command's stop request: what to close when it comes, and whether it came.

    :meth:`on_stop` and :meth:`request` may be called from any thread; closers are
    called once each, outside any lock of this object, and what they raise is
    ignored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closers: list[Callable[[], object]] = []
        self._requested = threading.Event()
        self._raised = False
        self._wake_fd: int | None = None
        self.output_ends = True

    @property
    def requested(self) -> bool:
        """Whether a signal or the output's reader going away asked the command to stop."""
        return self._requested.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (``True``) or ``timeout`` seconds pass."""
        return self._requested.wait(timeout)

    def on_stop(self, closer: Callable[[], object]) -> None:
        """Call ``closer`` when a stop is requested (at once, on this thread, if one
        already was). From the first call on, signals no longer raise
        ``KeyboardInterrupt`` in the main thread: they stop the command through its
        closers."""
        with self._lock:
            if not self._requested.is_set():
                self._closers.append(closer)
                return
        _call(closer)

    def request(self) -> None:
        """Stop: set :attr:`requested`, then call every closer (the first call only)."""
        with self._lock:
            if self._requested.is_set():
                return
            self._requested.set()
            closers = list(self._closers)
        for closer in closers:
            _call(closer)

    def keep_running_without_output(self) -> None:
        """A pipe on stdout whose reader went away no longer stops the command (``serve``:
        its output is two lines, its work is serving)."""
        self.output_ends = False

    def output_gone(self) -> None:
        """The reader of stdout went away: discard the output and stop."""
        discard_output()
        self.request()

    @property
    def armed(self) -> bool:
        """Whether a closer is registered: signals stop the command through them."""
        return bool(self._closers)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # On the main thread, between two bytecodes of whatever it was running.
        if self.armed:  # something is open: the watcher thread closes it
            self._wake()
            return
        if self._raised or self._requested.is_set():
            return
        self._raised = True
        raise KeyboardInterrupt(f"signal {signum}")

    def _wake(self) -> None:
        if self._wake_fd is None:
            return
        with contextlib.suppress(OSError):  # a full pipe already holds a wake-up
            os.write(self._wake_fd, _WAKE)


def _call(closer: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        closer()


def _watched_output() -> int | None:
    """stdout's file descriptor if it is a pipe, else ``None`` (not watched)."""
    try:
        fd = sys.stdout.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


def _watch(stop: Stop, wake_fd: int, output: int | None) -> None:
    """The ``leap-sync-cli-stop`` thread: stop on a signal's byte (written by Python's C
    handler, whichever thread the kernel gave the signal to) once a closer is
    registered, on :data:`_WAKE`, or when the pipe on stdout reports its reader gone;
    end on :data:`_END`. It blocks SIGINT and SIGTERM itself: before anything is
    open, they go to the main thread, whose handler raises there."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    poller = select.poll() if hasattr(select, "poll") else None  # no poll (Windows): signals only
    if poller is not None:
        poller.register(wake_fd, select.POLLIN)
        if output is not None:
            poller.register(output, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
    while True:
        ready = [wake_fd] if poller is None else [fd for fd, _events in poller.poll()]
        for fd in ready:
            if fd != wake_fd:
                assert poller is not None
                poller.unregister(fd)
                if stop.output_ends:
                    stop.output_gone()
                continue
            data = os.read(wake_fd, 64)
            if not data or _END in data:
                return
            if _WAKE in data or (stop.armed and any(byte in _SIGNALS for byte in data)):
                stop.request()


@contextlib.contextmanager
def stopping(watch_output: bool = True) -> Iterator[Stop]:
    """While in the block, SIGINT and SIGTERM stop the command as the module
    docstring describes, and (``watch_output``) so does a pipe on stdout whose reader
    went away. On leaving, the previous handlers are back and the watcher thread is
    joined. Off the main thread (where Python cannot set a handler) only the
    :class:`Stop` is given: nothing is watched."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    wake_read, wake_write = os.pipe()
    with contextlib.suppress(OSError):  # Windows before Python 3.12 cannot
        os.set_blocking(wake_write, False)
    stop._wake_fd = wake_write
    watcher = threading.Thread(
        target=_watch,
        args=(stop, wake_read, _watched_output() if watch_output else None),
        name="leap-sync-cli-stop",
        daemon=True,
    )
    previous: dict[int, Any] = {}
    previous_wakeup: int | None = None
    try:
        watcher.start()
        for signum in _SIGNALS:
            previous[signum] = signal.signal(signum, stop._on_signal)
        # The C handler writes the signal's number there at once, whichever thread the
        # kernel interrupted: the main thread may be blocked where no handler runs.
        with contextlib.suppress(ValueError, OSError):  # Windows takes only a socket there
            previous_wakeup = signal.set_wakeup_fd(wake_write)
        yield stop
    finally:
        if previous_wakeup is not None:
            signal.set_wakeup_fd(previous_wakeup)
        for restored, handler in previous.items():
            signal.signal(restored, signal.SIG_DFL if handler is None else handler)
        stop._wake_fd = None
        if watcher.is_alive():
            with contextlib.suppress(OSError):
                os.write(wake_write, _END)
            watcher.join(JOIN_TIMEOUT)
        if not watcher.is_alive():  # a watcher stuck in a closer keeps its pipe
            os.close(wake_read)
            os.close(wake_write)
